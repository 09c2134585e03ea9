//! validate stage (placeholder).
