//! Processes that debug themselves with the `libdebugger` Python package (`pip install
//! libdebugger`): its native module exports the `LDBG_INPROCESS` marker
//! (`libdebugger_common::inprocess`), which is active while a `LiveDebuggerManager` runs.
//!
//! The agent leaves such a process alone for the rest of its life: it does not inject its
//! helper (checked before every injection), and if it had injected one earlier it withdraws its
//! breakpoints from it (attached processes are checked at every rescan, 2–10 s). `status` and
//! `inspect` show the process as "in-process debugger active".
use crate::inject::maps::{self, Mapping};
use crate::remote;
use libdebugger_common::inprocess::{MAGIC, MODULE_PREFIX, PACKAGE_DIR, SYMBOL, offsets};

/// What the marker of a process says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InProcess {
    /// The package's native module as the target maps it.
    pub module: String,
    /// Whether a `LiveDebuggerManager` runs (the agent then leaves the process alone).
    pub active: bool,
    /// The pid that last started or stopped it, as the process sees itself.
    pub pid: u32,
}

impl InProcess {
    /// The line `status` and `inspect` show for an active marker.
    pub fn reason(&self) -> String {
        format!(
            "in-process debugger active (the libdebugger Python package, {}); the agent leaves \
             this process alone",
            self.module
        )
    }
}

/// Whether a mapping is the first page of the package's native module:
/// `…/libdebugger/_native.<tag>.so`.
fn is_package_module(m: &Mapping) -> bool {
    if m.offset != 0 || m.inode == 0 {
        return false;
    }
    let name = m.file_name();
    let path = m.path.strip_suffix(" (deleted)").unwrap_or(&m.path);
    let dir = path
        .rsplit('/')
        .nth(1)
        .map(str::to_owned)
        .unwrap_or_default();
    name.starts_with(MODULE_PREFIX) && name.ends_with(".so") && dir == PACKAGE_DIR
}

/// The package's marker in `pid`, if the process has the package's native module loaded.
/// `None` when it has not (or the process is gone, or the module has no marker).
pub fn detect(pid: i32) -> Option<InProcess> {
    let maps = maps::read(pid).ok()?;
    detect_in(pid, &maps)
}

/// [`detect`] over already read maps.
pub fn detect_in(pid: i32, maps: &[Mapping]) -> Option<InProcess> {
    let m = maps
        .iter()
        .filter(|m| is_package_module(m))
        .min_by_key(|m| m.start)?;
    let elf = m.open_elf(pid).ok()?;
    let bias = elf.load_bias(m.start)?;
    let addr = bias + elf.symbol(SYMBOL)?.vaddr;
    let magic = remote::read_u64(pid, addr + offsets::MAGIC as u64).ok()?;
    if magic != MAGIC {
        return None;
    }
    let active = remote::read_u32(pid, addr + offsets::ACTIVE as u64).ok()? != 0;
    let marker_pid = remote::read_u32(pid, addr + offsets::PID as u64).ok()?;
    Some(InProcess {
        module: m.path.clone(),
        active,
        pid: marker_pid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(path: &str, offset: u64) -> Mapping {
        Mapping {
            start: 0x1000,
            end: 0x2000,
            readable: true,
            writable: false,
            executable: false,
            offset,
            inode: 7,
            path: path.into(),
        }
    }

    #[test]
    fn recognises_the_package_module_only() {
        let site = "/srv/venv/lib/python3.12/site-packages";
        assert!(is_package_module(&mapping(
            &format!("{site}/libdebugger/_native.abi3.so"),
            0
        )));
        assert!(is_package_module(&mapping(
            &format!("{site}/libdebugger/_native.abi3.so (deleted)"),
            0
        )));
        // Not the first page, another package's _native, the agent's own helper.
        assert!(!is_package_module(&mapping(
            &format!("{site}/libdebugger/_native.abi3.so"),
            0x3000
        )));
        assert!(!is_package_module(&mapping(
            &format!("{site}/other/_native.abi3.so"),
            0
        )));
        assert!(!is_package_module(&mapping("/memfd:libdebugger-helper", 0)));
    }
}
