//! resume tests (filled in by issue #5).
