//! harness tests (placeholder until its issue lands).
