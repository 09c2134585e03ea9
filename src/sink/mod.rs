//! sink stage (placeholder).
