//! `break add|list|rm` and `log add`: talk to the running agent over its control socket.
use crate::control::{self, Request};
use anyhow::{Context, bail};
use clap::Subcommand;
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum BreakCommand {
    /// Add a breakpoint: FILE:LINE, optionally with a condition.
    Add {
        /// FILE:LINE (FILE absolute, or a suffix at a path boundary).
        location: String,
        /// Condition (a Python expression evaluated without side effects).
        #[arg(long = "if", value_name = "EXPR")]
        condition: Option<String>,
        /// Id of the breakpoint (default: derived from FILE:LINE).
        #[arg(long)]
        id: Option<String>,
    },
    /// List breakpoints and their status.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a breakpoint by id.
    Rm {
        /// The breakpoint's id, as `break list` shows it.
        id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum LogCommand {
    /// Add a logpoint: FILE:LINE and a message whose `{expr}` parts are rendered at every hit
    /// (listed and removed with `break list` / `break rm`).
    Add {
        /// FILE:LINE (FILE absolute, or a suffix at a path boundary).
        location: String,
        /// The message, e.g. "total={total} items={len(cart.items)}".
        message: String,
        /// Condition (a Python expression evaluated without side effects).
        #[arg(long = "if", value_name = "EXPR")]
        condition: Option<String>,
        /// Id of the logpoint (default: derived from FILE:LINE).
        #[arg(long)]
        id: Option<String>,
        /// Messages per second at most (default 100).
        #[arg(long)]
        rate: Option<u32>,
    },
}

pub fn run_log(cmd: LogCommand) -> anyhow::Result<ExitCode> {
    let LogCommand::Add {
        location,
        message,
        condition,
        id,
        rate,
    } = cmd;
    let (file, line) = parse_location(&location)?;
    let value = control::call(
        &crate::paths::control_socket(),
        &Request::LogAdd {
            file,
            line,
            message,
            condition,
            id,
            rate,
        },
    )?;
    println!(
        "added logpoint {}",
        value["id"].as_str().unwrap_or("(no id)")
    );
    Ok(ExitCode::SUCCESS)
}

/// Splits `FILE:LINE`; the file part may itself contain ':'.
pub fn parse_location(location: &str) -> anyhow::Result<(String, u32)> {
    let (file, line) = location
        .rsplit_once(':')
        .with_context(|| format!("`{location}` is not FILE:LINE (e.g. shop/cart.py:42)"))?;
    if file.is_empty() {
        bail!("`{location}` has no file before ':' (expected FILE:LINE, e.g. shop/cart.py:42)");
    }
    let line: u32 =
        line.parse().ok().filter(|l| *l > 0).with_context(|| {
            format!("`{line}` in `{location}` is not a line number (1 or more)")
        })?;
    Ok((file.to_string(), line))
}

pub fn run(cmd: BreakCommand) -> anyhow::Result<ExitCode> {
    let sock = crate::paths::control_socket();
    match cmd {
        BreakCommand::Add {
            location,
            condition,
            id,
        } => {
            let (file, line) = parse_location(&location)?;
            let value = control::call(
                &sock,
                &Request::BreakAdd {
                    file,
                    line,
                    condition,
                    id,
                },
            )?;
            println!(
                "added breakpoint {}",
                value["id"].as_str().unwrap_or("(no id)")
            );
        }
        BreakCommand::List { json } => {
            let value = control::call(&sock, &Request::BreakList)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&value)?);
            } else {
                super::status::print_breakpoints(&value);
            }
        }
        BreakCommand::Rm { id } => {
            control::call(&sock, &Request::BreakRm { id: id.clone() })?;
            println!("removed breakpoint {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::parse_location;

    #[test]
    fn locations_parse_and_bad_ones_say_why() {
        assert_eq!(
            parse_location("shop/cart.py:42").unwrap(),
            ("shop/cart.py".to_string(), 42)
        );
        assert_eq!(
            parse_location("C:/x.py:7").unwrap(),
            ("C:/x.py".to_string(), 7)
        );
        assert!(
            parse_location("cart.py")
                .unwrap_err()
                .to_string()
                .contains("not FILE:LINE")
        );
        assert!(
            parse_location("cart.py:0")
                .unwrap_err()
                .to_string()
                .contains("not a line number")
        );
        assert!(
            parse_location(":3")
                .unwrap_err()
                .to_string()
                .contains("no file")
        );
    }
}
