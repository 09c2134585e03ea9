//! sim stage (placeholder).
