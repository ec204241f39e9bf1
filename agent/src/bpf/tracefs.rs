//! tracefs: where tracepoints are described. Mounted on demand (root) when missing, and the
//! source of kernel-specific tracepoint field offsets.
use super::BpfError;
use std::path::Path;

/// The tracefs mount point the agent uses (aya looks here first).
pub const TRACEFS: &str = "/sys/kernel/tracing";

/// True when tracefs is mounted at [`TRACEFS`] (the directory has entries).
pub fn is_mounted() -> bool {
    std::fs::read_dir(TRACEFS).is_ok_and(|mut d| d.next().is_some())
}

/// Mounts tracefs at [`TRACEFS`] unless it is mounted already.
pub fn ensure_mounted() -> Result<(), BpfError> {
    if is_mounted() {
        return Ok(());
    }
    tracing::info!("tracefs is not mounted; mounting it at {TRACEFS}");
    nix::mount::mount(
        Some("tracefs"),
        TRACEFS,
        Some("tracefs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|source| BpfError::Tracefs { source })
}

/// The byte offset of `field` in the records of tracepoint `group/name`, from its `format` file
/// (lines like `\tfield:pid_t child_pid;\toffset:20;\tsize:4;\tsigned:1;`).
pub fn field_offset(group: &str, name: &str, field: &str) -> Result<u32, BpfError> {
    let path = Path::new(TRACEFS)
        .join("events")
        .join(group)
        .join(name)
        .join("format");
    let text = std::fs::read_to_string(&path).map_err(|source| BpfError::TracepointFormat {
        path: path.clone(),
        detail: source.to_string(),
    })?;
    parse_field_offset(&text, field).ok_or_else(|| BpfError::TracepointFormat {
        path,
        detail: format!("no field `{field}`"),
    })
}

/// Parses a tracepoint `format` text; `None` if `field` is not there.
pub fn parse_field_offset(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let mut parts = line.trim().split(';').map(str::trim);
        let decl = parts.next()?.strip_prefix("field:")?;
        let name = decl.rsplit([' ', '*']).next()?;
        let name = name.split('[').next()?;
        if name != field {
            return None;
        }
        parts
            .find_map(|p| p.strip_prefix("offset:"))
            .and_then(|o| o.parse().ok())
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_fork_format() {
        let text = "name: sched_process_fork\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\tfield:__data_loc char[] parent_comm;\toffset:8;\tsize:4;\tsigned:0;\n\tfield:pid_t parent_pid;\toffset:12;\tsize:4;\tsigned:1;\n\tfield:char child_comm[16];\toffset:16;\tsize:16;\tsigned:0;\n\tfield:pid_t child_pid;\toffset:32;\tsize:4;\tsigned:1;\n";
        assert_eq!(super::parse_field_offset(text, "child_pid"), Some(32));
        assert_eq!(super::parse_field_offset(text, "parent_pid"), Some(12));
        assert_eq!(super::parse_field_offset(text, "child_comm"), Some(16));
        assert_eq!(super::parse_field_offset(text, "nope"), None);
    }
}
