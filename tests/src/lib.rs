//! End-to-end tests with the real binaries live in `tests/tests/` (filled by the edge and fleet issues).
