//! manifest stage (placeholder).
