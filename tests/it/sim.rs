//! sim tests (placeholder until its issue lands).
