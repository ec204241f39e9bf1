//! Shared support for the end-to-end tests: finding interpreters, running Python snippets,
//! waiting for readiness with deadlines.
pub mod helper;
pub mod python;
