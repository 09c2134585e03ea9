//! run tests (placeholder until its issue lands).
