//! `doctor [--json]`. Exit status 1 when the host cannot run the agent.
use crate::doctor::{Report, Status, run as run_checks};
use clap::Args;
use std::io::Write;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// Print JSON instead of text: {checks: [{name, status, detail, fix}], python_processes:
    /// [{pid, exe, python_version, supported, reason}], can_run}.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let report = run_checks();
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        print_text(&mut out, &report)?;
    }
    Ok(if report.can_run {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_text(out: &mut impl Write, report: &Report) -> std::io::Result<()> {
    for c in &report.checks {
        let tag = match c.status {
            Status::Ok => " ok ",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        };
        writeln!(out, "[{tag}] {:<22} {}", c.name, c.detail)?;
        if let Some(fix) = &c.fix {
            writeln!(out, "       {:<22} → {fix}", "")?;
        }
    }
    writeln!(out)?;
    if report.python_processes.is_empty() {
        writeln!(out, "No Python processes found.")?;
    } else {
        writeln!(out, "Python processes:")?;
        for p in &report.python_processes {
            let status = if p.supported {
                "supported".to_string()
            } else {
                format!(
                    "not supported: {}",
                    p.reason.as_deref().unwrap_or("unknown reason")
                )
            };
            writeln!(
                out,
                "  {:>7}  {:<8} {:<50} {status}",
                p.pid,
                p.python_version.as_deref().unwrap_or("?"),
                p.exe.as_deref().unwrap_or("?"),
            )?;
        }
    }
    writeln!(out)?;
    if report.can_run {
        writeln!(out, "This host can run libdebugger-agent.")?;
    } else {
        writeln!(
            out,
            "This host cannot run libdebugger-agent as it is: fix the FAIL lines above."
        )?;
    }
    Ok(())
}
