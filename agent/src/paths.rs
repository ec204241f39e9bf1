//! Every filesystem path the agent uses, with its mode and why. Nothing else in the agent names a
//! path under /etc, /run or /var.
use std::path::PathBuf;

/// The configuration file (TOML), read at start if it exists. Root-owned, 0644 or stricter
/// (it may hold API keys, so 0600 is recommended).
pub const CONFIG_FILE: &str = "/etc/libdebugger/agent.toml";

/// Runtime directory: the control socket. Created 0700 root:root, so only root can reach the
/// socket (the socket itself is 0600).
pub fn runtime_dir() -> PathBuf {
    std::env::var_os("LIBDEBUGGER_RUNTIME_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/libdebugger"))
}

/// The local control socket (`break add|list|rm`, `status`, `tail`).
pub fn control_socket() -> PathBuf {
    runtime_dir().join("agent.sock")
}

/// The web UI's URL with its access token (`run --ui`; `libdebugger-agent ui` prints it). 0600
/// in the 0700 runtime directory: the token lets its holder change breakpoints.
pub fn ui_url_file() -> PathBuf {
    runtime_dir().join("ui.url")
}

/// Writes `contents` to `path` as a root-only file (0600; its directory created 0700): to a
/// temporary file first, renamed over `path`, so a reader never sees half of it.
pub fn write_private(path: &std::path::Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(contents)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// State directory: the durable event spool. Created 0700 root:root (events hold captured
/// variable values).
pub fn state_dir() -> PathBuf {
    std::env::var_os("LIBDEBUGGER_STATE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/libdebugger"))
}

/// Where the breakpoints added with `break add` or the web UI are kept across restarts of an
/// agent that runs from the breakpoints file `source` (JSON, one file per source; 0600 in the
/// 0700 state directory).
pub fn added_breakpoints_file(source: &std::path::Path) -> PathBuf {
    let source = std::fs::canonicalize(source).unwrap_or_else(|_| source.to_path_buf());
    let name: String = source
        .to_string_lossy()
        .trim_start_matches('/')
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    state_dir()
        .join("added-breakpoints")
        .join(format!("{name}.json"))
}

/// The durable spool of events not yet delivered.
pub fn spool_dir() -> PathBuf {
    state_dir().join("spool")
}
