//! `inspect <pid> [--json]`.
//!
//! Exit status: 0 when the process was inspected (supported or not: the answer is in the output,
//! `supported` in JSON), 1 when it could not be inspected (gone, permission denied, unreadable).
use crate::python::{self, InspectError, Linkage, PythonProcess};
use clap::Args;
use serde::Serialize;
use std::io::Write;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// The process to inspect.
    pub pid: i32,
    /// Print JSON instead of text: {pid, supported, python_version, reason (when unsupported),
    /// in_process (when the process has the `libdebugger` Python package loaded: module,
    /// active), and for supported processes `process`: exe, linkage, pie, interpreter,
    /// symbols, layout, build, plan (injection, arming, reason), remote_debug}.
    #[arg(long)]
    pub json: bool,
}

/// The JSON `inspect` prints.
#[derive(Serialize)]
struct Output<'a> {
    pid: i32,
    supported: bool,
    /// e.g. "3.12.1"; "3.10" when only the file name told; null when unknown.
    python_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    /// Everything `inspect` found, for a supported process.
    #[serde(skip_serializing_if = "Option::is_none")]
    process: Option<&'a PythonProcess>,
    /// The `libdebugger` Python package in the process, when it is loaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    in_process: Option<InProcessJson>,
}

/// `in_process` of the JSON output.
#[derive(Serialize)]
struct InProcessJson {
    /// The package's native module as the process maps it.
    module: String,
    /// Whether its `LiveDebuggerManager` runs (the agent then leaves the process alone).
    active: bool,
    /// "in-process debugger active (…)" when active.
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<String>,
}

pub fn run(args: InspectArgs) -> anyhow::Result<ExitCode> {
    let result = python::inspect(args.pid);
    let in_process = crate::inprocess::detect(args.pid);
    let code = match &result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) if e.is_unsupported() => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        let output = match &result {
            Ok(p) => Output {
                pid: args.pid,
                supported: true,
                python_version: Some(p.version.to_string()),
                reason: None,
                process: Some(p),
                in_process: in_process_json(&in_process),
            },
            Err(e) => Output {
                pid: args.pid,
                supported: false,
                python_version: e.version().map(|v| v.to_string()),
                reason: Some(e.to_string()),
                process: None,
                in_process: in_process_json(&in_process),
            },
        };
        serde_json::to_writer_pretty(&mut out, &output)?;
        writeln!(out)?;
    } else {
        match &result {
            Ok(p) => print_text(&mut out, p)?,
            Err(e) => print_error(&mut out, args.pid, e)?,
        }
        match &in_process {
            Some(m) if m.active => writeln!(out, "  {}", m.reason())?,
            Some(m) => writeln!(
                out,
                "  libdebugger package loaded, its debugger not started ({})",
                m.module
            )?,
            None => {}
        }
    }
    Ok(code)
}

fn in_process_json(m: &Option<crate::inprocess::InProcess>) -> Option<InProcessJson> {
    m.as_ref().map(|m| InProcessJson {
        module: m.module.clone(),
        active: m.active,
        status: m.active.then(|| m.reason()),
    })
}

fn print_error(out: &mut impl Write, pid: i32, e: &InspectError) -> std::io::Result<()> {
    let what = if e.is_unsupported() {
        "not supported"
    } else {
        "cannot inspect"
    };
    writeln!(out, "pid {pid}: {what}: {e}")
}

fn print_text(out: &mut impl Write, p: &PythonProcess) -> std::io::Result<()> {
    let i = &p.interpreter;
    match p.opted_out() {
        None => writeln!(out, "pid {}: CPython {} (supported)", p.pid, p.version)?,
        Some(why) => writeln!(
            out,
            "pid {}: CPython {} (supported, not debugged: {why})",
            p.pid, p.version
        )?,
    }
    writeln!(
        out,
        "  build:         {}, {}",
        match p.build {
            python::BuildKind::Release => "release",
            python::BuildKind::Debug => "debug (--with-pydebug)",
        },
        match p.linkage {
            Linkage::StaticExecutable => "static (interpreter in the executable)",
            Linkage::SharedLibrary => "shared libpython",
        }
    )?;
    writeln!(
        out,
        "  attach:        {}{}",
        match p.plan.injection {
            "remote_exec_then_ptrace" => {
                "PEP 768 remote exec while a thread runs Python code, else ptrace at a safe point"
            }
            _ => "ptrace at a safe point",
        },
        match p.remote_debug {
            python::RemoteDebug::Enabled => " (remote debugging enabled)",
            python::RemoteDebug::Disabled => " (remote debugging DISABLED: left alone)",
            python::RemoteDebug::Unknown => " (remote debugging switch unreadable)",
            python::RemoteDebug::NotApplicable => "",
        }
    )?;
    writeln!(
        out,
        "  arm:           {}",
        match p.plan.arming {
            "bytecode_swap" => "instrumented code objects swapped in (no sys.monitoring on 3.11)",
            _ => "sys.monitoring LINE events on the breakpoints' code objects",
        }
    )?;
    writeln!(out, "  why:           {}", p.plan.reason)?;
    writeln!(
        out,
        "  executable:    {} ({})",
        p.exe.display(),
        if p.pie { "PIE" } else { "not PIE" }
    )?;
    writeln!(
        out,
        "  interpreter:   {} ({}), load bias {:#x}",
        i.path.display(),
        match p.linkage {
            Linkage::StaticExecutable => "in the executable",
            Linkage::SharedLibrary => "shared libpython",
        },
        i.load_bias
    )?;
    writeln!(out, "  agent path:    {}", i.host_path.display())?;
    writeln!(out, "  version from:  {:?}", p.version_source)?;
    writeln!(
        out,
        "  offsets from:  {:?}: frame→code +{} (tag mask {:#x}); code: filename +{}, name +{}, \
         qualname +{}, firstlineno +{}",
        p.layout.source,
        p.layout.frame_code,
        p.layout.code_tag_mask,
        p.layout.code.filename,
        p.layout.code.name,
        p.layout.code.qualname,
        p.layout.code.firstlineno
    )?;
    writeln!(
        out,
        "  symbols:       {:<26} {:>12}  {:>18}",
        "", "file offset", "address"
    )?;
    let s = &p.symbols;
    for (name, sym) in [
        ("_PyEval_EvalFrameDefault", s.eval_frame),
        ("  (frame-entry probe at)", s.eval_frame_probe),
        ("Py_AddPendingCall", s.add_pending_call),
        ("PyRun_SimpleString", s.run_simple_string),
        ("PyGILState_Ensure", s.gil_state_ensure),
        ("PyGILState_Release", s.gil_state_release),
        ("PyEval_SaveThread", s.eval_save_thread),
    ] {
        writeln!(
            out,
            "                 {name:<26} {:>#12x}  {:>#18x}",
            sym.file_offset, sym.address
        )?;
    }
    Ok(())
}
