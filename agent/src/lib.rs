//! libdebugger-agent: the root daemon that makes every CPython 3.11+ process on the host
//! debuggable. Where each piece of behaviour lives:
//!
//! | module | owns |
//! |---|---|
//! | [`paths`] | every filesystem path the agent uses, with its mode and why |
//! | [`elf`] | reading the target's ELF files: symbols, sections, segments, load bias (mapped) |
//! | [`remote`] | reading and writing a target's memory (`process_vm_readv`/`writev`) |
//! | [`python`] | CPython introspection of a pid: version ladder, ELF symbols, struct offsets |
//! | [`bpf`] | every aya call: loading the eBPF object, attaching probes, reading maps and rings |
//! | [`trace`] | `trace <pid>`: counts frame entries per code object with the frame-entry probe |
//! | [`doctor`] | `doctor`: can this host run the agent? |
//! | [`inject`] | ptrace injection of the helper at a safe point, and the control block |
//! | [`breakpoints`] | the desired breakpoint set, the local breakpoints file |
//! | [`posthog`] | PostHog configuration and the Live Debugger API poller |
//! | [`delivery`] | events: building, batching, spooling, and the sinks (PostHog, file, terminal) |
//! | [`control`] | the root-only control socket (`break`, `status`, `tail`) |
//! | [`ui`] | the web UI (`run --ui`): HTTP over the control operations, source view, hit stream |
//! | [`cli`] | the command line; `main.rs` only calls [`cli::main`] |
pub mod assembler;
pub mod bpf;
pub mod breakpoints;
pub mod cli;
pub mod control;
pub mod daemon;
pub mod delivery;
pub mod doctor;
pub mod elf;
pub mod inject;
pub mod paths;
pub mod posthog;
pub mod python;
pub mod remote;
pub mod selectors;
pub mod trace;
pub mod ui;
