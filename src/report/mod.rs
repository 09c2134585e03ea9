//! report stage (placeholder).
