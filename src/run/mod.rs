//! run stage (placeholder).
