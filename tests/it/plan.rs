//! plan tests (placeholder until its issue lands).
