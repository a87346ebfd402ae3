//! Integration, fault and compatibility tests live in `tests/tests/`, one test binary per theme.
