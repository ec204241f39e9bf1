//! The agent as the end-to-end tests run it: the same `cli::main` as `libdebugger-agent`'s
//! three-line `main.rs`, built by `cargo test` itself (with the test build's features), so the
//! tests never run a nested `cargo build` that could rebuild the agent with other features.
fn main() -> std::process::ExitCode {
    libdebugger_agent::cli::main()
}
