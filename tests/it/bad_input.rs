//! bad_input tests (filled in by issue #5).
