//! Step 3 of a fresh injection: getting the helper mapped into the target and attached.
use std::io::Write;
use std::path::Path;

use tracing::warn;

use super::hijack::Hijack;
use super::symbols::{MFD_CLOEXEC, RTLD_NOW, SYS_MEMFD_CREATE, TargetSymbols};
use super::{InjectError, MEMFD_NAME, pep768, read_maps};
use crate::elf::Elf;
use crate::remote;

/// Step 3 for a fresh load: get the helper mapped (memfd, or a file staged in the target's
/// `/tmp` when that fails), then `ldbg_attach`. Returns the inode of the mapped file (to find
/// its mapping afterwards) and `ldbg_attach`'s result. The thread's errno is put back whatever
/// happens.
pub(super) fn load_and_attach(
    hj: &mut Hijack,
    syms: &TargetSymbols,
    helper: &Elf,
    helper_so: &Path,
    attach_value: u64,
    from: LoadFrom<'_>,
    announce_control: Option<u64>,
) -> Result<(u64, i32), InjectError> {
    let errno = hj.save_errno(syms)?;
    let result = (|| {
        let (inode, bias) = match from {
            LoadFrom::Staged(staged) => load_staged(hj, syms, helper, staged)?,
            LoadFrom::Via(LoadVia::StagedFile) => {
                load_via_staged_file(hj, syms, helper, helper_so)?
            }
            LoadFrom::Via(LoadVia::Memfd) => {
                match load_via_memfd(hj, syms, helper, errno.map(|e| e.0)) {
                    Ok(x) => x,
                    // The thread or process is in trouble: no second attempt.
                    Err(
                        e @ (InjectError::ProcessExited { .. }
                        | InjectError::CallTimedOut { .. }
                        | InjectError::CallCrashed { .. }
                        | InjectError::Ptrace { .. }),
                    ) => return Err(e),
                    Err(e) => {
                        warn!(pid = hj.pid, error = %e, "loading from a memfd failed; trying a file staged in the target's /tmp");
                        load_via_staged_file(hj, syms, helper, helper_so)?
                    }
                }
            }
        };
        if let Some(control_value) = announce_control {
            announce_first_control(hj.pid, bias + control_value);
        }
        let rc = hj.call(bias + attach_value, &[], "ldbg_attach")? as i32;
        Ok((inode, rc))
    })();
    hj.restore_errno(errno);
    result
}

/// What [`load_and_attach`] loads.
pub(super) enum LoadFrom<'a> {
    /// A fresh copy, loaded this way.
    Via(LoadVia),
    /// The files a PEP 768 request staged, whose loader script may still be running in the
    /// target: the same path, so that its `dlopen` and this one yield one copy.
    Staged(&'a pep768::Staged),
}

/// Where the injector loads the helper from.
/// Marks the fresh helper's control block "being written" (generation 1, odd) before
/// `ldbg_attach` runs: the helper then waits for the agent's first block and applies it at
/// once, in the same GIL hold as its start-up when it can, instead of at its next poll. The
/// agent publishes it (generation 2) once its `ldbg_emit` probe is attached, so the status the
/// helper sends on applying it is not lost. A failure here only costs that speed.
fn announce_first_control(pid: i32, control_addr: u64) {
    use libdebugger_common::helper_abi::control_offsets;
    let at = control_addr + control_offsets::GENERATION as u64;
    // A freshly loaded helper's block is at generation 0 (nothing published yet).
    match remote::read_u64(pid, at) {
        Ok(0) => {
            if let Err(e) = remote::write(pid, at, &1u64.to_le_bytes()) {
                warn!(pid, error = %e, "cannot announce the first control block");
            }
        }
        Ok(_) => {}
        Err(e) => warn!(pid, error = %e, "cannot read the helper's control block"),
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LoadVia {
    /// A memfd created in the target (`/proc/self/fd/<n>`); falls back to [`LoadVia::StagedFile`]
    /// when that fails (no `memfd_create`, a seccomp filter, no `/proc` in the container).
    #[default]
    Memfd,
    /// A copy under the target's own `/tmp` (through `/proc/<pid>/root`), removed once mapped.
    StagedFile,
}

/// `dlopen(path)` in the target; on failure, the `dlerror()` message.
fn dlopen_in_target(hj: &mut Hijack, syms: &TargetSymbols, path: &str) -> Result<(), InjectError> {
    let pid = hj.pid;
    let addr = hj.push_c_string(path)?;
    let handle = hj.call(
        syms.dlopen,
        &[addr, RTLD_NOW | syms.dlopen_extra_flags],
        "dlopen",
    )?;
    if handle != 0 {
        return Ok(());
    }
    let message = match syms.dlerror {
        Some(dlerror) => match hj.call(dlerror, &[], "dlerror")? {
            0 => "(no dlerror message)".to_string(),
            msg => remote::read_c_string(pid, msg, 4096)
                .unwrap_or_else(|e| format!("(dlerror unreadable: {e})")),
        },
        None => "(no dlerror in this libc)".to_string(),
    };
    Err(InjectError::Dlopen { pid, message })
}

/// The helper's load bias: the first mapping (file offset 0) of the file with this inode.
fn bias_of_inode(pid: i32, helper: &Elf, inode: u64) -> Result<u64, InjectError> {
    let maps = read_maps(pid)?;
    let m = maps
        .iter()
        .filter(|m| m.inode == inode && m.offset == 0)
        .min_by_key(|m| m.start)
        .ok_or(InjectError::HelperNotMapped { pid })?;
    helper
        .load_bias(m.start)
        .ok_or(InjectError::HelperNotMapped { pid })
}

/// memfd_create in the target, the agent copies the helper in through `/proc/<pid>/fd/<n>`,
/// dlopen(`/proc/self/fd/<n>`), close. Returns (inode, load bias).
fn load_via_memfd(
    hj: &mut Hijack,
    syms: &TargetSymbols,
    helper: &Elf,
    errno_addr: Option<u64>,
) -> Result<(u64, u64), InjectError> {
    let pid = hj.pid;
    let name = hj.push_c_string(MEMFD_NAME)?;
    let fd = match (syms.memfd_create, syms.syscall) {
        (Some(f), _) => hj.call(f, &[name, MFD_CLOEXEC], "memfd_create")?,
        (None, Some(s)) => hj.call(
            s,
            &[SYS_MEMFD_CREATE, name, MFD_CLOEXEC],
            "syscall(memfd_create)",
        )?,
        (None, None) => {
            return Err(InjectError::MissingSymbol {
                object: "libc".into(),
                symbol: "memfd_create".into(),
            });
        }
    } as i32;
    if fd < 0 {
        let errno = errno_addr
            .and_then(|a| remote::read_u32(pid, a).ok())
            .unwrap_or(0) as i32;
        return Err(InjectError::MemfdCreate { pid, errno });
    }
    let result: Result<(u64, u64), InjectError> = (|| {
        // The agent fills the memfd through the target's fd table (root: ptrace access mode).
        let write_err = |source| InjectError::WriteMemfd { pid, fd, source };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/proc/{pid}/fd/{fd}"))
            .map_err(write_err)?;
        f.write_all(helper.bytes()).map_err(write_err)?;
        let inode = std::os::unix::fs::MetadataExt::ino(&f.metadata().map_err(write_err)?);
        drop(f);
        dlopen_in_target(hj, syms, &format!("/proc/self/fd/{fd}"))?;
        Ok((inode, bias_of_inode(pid, helper, inode)?))
    })();
    // The mapping keeps the memfd alive; the descriptor itself must not leak into the app.
    let closed = hj.call(syms.close, &[fd as u64], "close");
    let loaded = result?;
    closed?;
    Ok(loaded)
}

/// Copies the helper under the target's `/tmp` (see [`pep768::stage`]) and dlopens it there;
/// the files are removed afterwards (the mapping keeps the inode). Returns (inode, load bias).
fn load_via_staged_file(
    hj: &mut Hijack,
    syms: &TargetSymbols,
    helper: &Elf,
    helper_so: &Path,
) -> Result<(u64, u64), InjectError> {
    let staged = pep768::stage(hj.pid, helper_so)?;
    load_staged(hj, syms, helper, &staged)
}

/// `dlopen` of a helper staged by [`pep768::stage`].
fn load_staged(
    hj: &mut Hijack,
    syms: &TargetSymbols,
    helper: &Elf,
    staged: &pep768::Staged,
) -> Result<(u64, u64), InjectError> {
    let pid = hj.pid;
    let inode = std::fs::metadata(staged.helper_on_host())
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .map_err(|source| InjectError::ReadFile {
            path: staged.helper_on_host(),
            source,
        })?;
    dlopen_in_target(hj, syms, &staged.helper_in_target)?;
    Ok((inode, bias_of_inode(pid, helper, inode)?))
}
