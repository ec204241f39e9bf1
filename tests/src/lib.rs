//! Shared support for the end-to-end tests: finding interpreters, running Python snippets,
//! waiting for readiness with deadlines.
pub mod agent;
pub mod helper;
pub mod local;
pub mod package;
pub mod posthog_e2e;
pub mod posthog_server;
pub mod python;
pub mod skip;
pub mod wait;
