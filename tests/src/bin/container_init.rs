//! `ldbg-container-init ROOT WD SHARED_DIR... -- PROGRAM ARGS...`: the init process of a test
//! container. The end-to-end tests start it as `unshare --mount --pid --fork --kill-child
//! ldbg-container-init ...` (see `libdebugger_tests::python`), so it runs as pid 1 of a new pid
//! namespace in a private mount namespace. It makes `ROOT` the root filesystem the way container
//! runtimes do (`pivot_root`, not `chroot`: `/proc/<pid>/exe` and `/proc/<pid>/maps` then show
//! paths inside the container, and only `/proc/<pid>/root` leads to its files), with its own
//! `/proc`, a private `/tmp`, and each shared host directory `D` visible at `/mnt/host/D` (a
//! path that differs from the host's), then runs `PROGRAM` in `WD` as pid 2 and exits with its
//! status (a signal's number + 128 when it was killed).
use std::ffi::{CString, OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn main() {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let Some(sep) = args.iter().position(|a| a == "--") else {
        die("usage: ldbg-container-init ROOT WD SHARED_DIR... -- PROGRAM ARGS...");
    };
    let (dirs, program) = (&args[..sep], &args[sep + 1..]);
    if dirs.len() < 2 || program.is_empty() {
        die("usage: ldbg-container-init ROOT WD SHARED_DIR... -- PROGRAM ARGS...");
    }
    let root = Path::new(&dirs[0]);
    let wd = Path::new(&dirs[1]);
    if let Err(e) = enter(root, &dirs[2..]) {
        die(&format!(
            "cannot set up the container at {}: {e}",
            root.display()
        ));
    }
    // SAFETY: fork in a single-threaded process; the child only calls async-signal-safe
    // functions (chdir, execvp, _exit) before exec.
    let child = unsafe { libc::fork() };
    if child < 0 {
        die(&format!("fork: {}", std::io::Error::last_os_error()));
    }
    if child == 0 {
        let argv: Vec<CString> = program.iter().map(|a| cstring(a)).collect();
        let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
        ptrs.push(std::ptr::null());
        let wd = cstring(wd.as_os_str());
        // SAFETY: NUL-terminated strings and a NULL-terminated argv that outlive the calls.
        unsafe {
            if libc::chdir(wd.as_ptr()) != 0 {
                libc::_exit(126);
            }
            libc::execvp(ptrs[0], ptrs.as_ptr());
            libc::_exit(127);
        }
    }
    // As pid 1: reap every orphan, return when the program itself has exited.
    loop {
        let mut status = 0;
        // SAFETY: waitpid with a valid status pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        if pid == child {
            let code = if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                128 + libc::WTERMSIG(status)
            };
            std::process::exit(code);
        }
        if pid < 0 {
            std::process::exit(1);
        }
    }
}

/// Mounts, then `pivot_root` into `root`.
fn enter(root: &Path, shared: &[OsString]) -> std::io::Result<()> {
    let sub = |p: &str| root.join(p);
    // Nothing mounted here propagates back to the host (unshare(1) made the tree private; this
    // makes sure).
    mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )?;
    // pivot_root needs the new root to be a mount point.
    mount(Some(root), root, None, libc::MS_BIND | libc::MS_REC, None)?;
    mount(Some(Path::new("proc")), &sub("proc"), Some("proc"), 0, None)?;
    mount(
        Some(Path::new("ldbg-tmp")),
        &sub("tmp"),
        Some("tmpfs"),
        0,
        Some("mode=1777"),
    )?;
    mount(
        Some(Path::new("ldbg-mnt")),
        &sub("mnt"),
        Some("tmpfs"),
        0,
        Some("mode=0755"),
    )?;
    for dir in shared {
        let rel = Path::new(dir).strip_prefix("/").unwrap_or(Path::new(dir));
        let at = sub("mnt/host").join(rel);
        std::fs::create_dir_all(&at)?;
        mount(
            Some(Path::new(dir)),
            &at,
            None,
            libc::MS_BIND | libc::MS_REC,
            None,
        )?;
    }
    std::env::set_current_dir(root)?;
    // pivot_root(".", ".") stacks the old root on top of the new one; detaching it leaves only
    // the new root (pivot_root(2), "NOTES").
    let dot = cstring(OsStr::new("."));
    // SAFETY: valid NUL-terminated paths.
    if unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: valid NUL-terminated path.
    if unsafe { libc::umount2(dot.as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    std::env::set_current_dir("/")
}

fn mount(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> std::io::Result<()> {
    let source = source.map(|s| cstring(s.as_os_str()));
    let target_c = cstring(target.as_os_str());
    let fstype = fstype.map(|f| cstring(OsStr::new(f)));
    let data = data.map(|d| cstring(OsStr::new(d)));
    let ptr = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: NUL-terminated strings or NULL, as mount(2) accepts.
    let r = unsafe {
        libc::mount(
            ptr(&source),
            target_c.as_ptr(),
            ptr(&fstype),
            flags,
            ptr(&data).cast(),
        )
    };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        return Err(std::io::Error::new(
            e.kind(),
            format!("mount on {}: {e}", target.display()),
        ));
    }
    Ok(())
}

fn cstring(s: &OsStr) -> CString {
    CString::new(s.as_bytes()).unwrap_or_else(|_| die("an argument contains a NUL byte"))
}

fn die(msg: &str) -> ! {
    eprintln!("ldbg-container-init: {msg}");
    std::process::exit(125);
}
