//! Cross-backend tests of the msight pub/sub workspace; see `tests/`.
//! This crate has no code of its own: it links every backend so that one
//! test program can exercise all of them.
