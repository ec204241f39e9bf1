fn main() -> std::process::ExitCode {
    libdebugger_agent::cli::main()
}
