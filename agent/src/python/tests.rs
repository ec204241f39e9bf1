//! Unit tests against the real interpreters on this machine (no privileges needed: the
//! processes are our own children).
use super::*;
use crate::python::memory::read_code;
use crate::remote::{ProcessMemory, RemoteMemory};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};

/// A Python child that printed one line and waits on stdin; killed on drop.
struct PyChild {
    child: Child,
    stdin: Option<ChildStdin>,
    line: String,
}

impl Drop for PyChild {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const SCRIPT: &str = r#"
import sys
def probe_me(x):
    return x
print(id(probe_me.__code__), flush=True)
sys.stdin.readline()
"#;

/// Starts `python -c SCRIPT` and waits (with a deadline) for its first line.
fn start(python: &Path) -> Option<PyChild> {
    if !python.exists() {
        eprintln!(
            "skipping {}: not installed on this machine",
            python.display()
        );
        return None;
    }
    let mut child = Command::new(python)
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start python");
    let stdin = child.stdin.take();
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("python printed its ready line within 20 s");
    Some(PyChild {
        child,
        stdin,
        line: line.trim().to_string(),
    })
}

fn pyenv(v: &str) -> PathBuf {
    let home = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pyenv")))
        .unwrap_or_else(|| PathBuf::from("/root/.pyenv"));
    home.join("versions").join(v).join("bin/python3")
}

/// Inspects a supported interpreter and checks everything a test can check from outside.
fn check_supported(
    python: &Path,
    version: &str,
    linkage: Linkage,
    pie: bool,
    frame_code: u32,
    source: offsets::LayoutSource,
) {
    let Some(mut child) = start(python) else {
        return;
    };
    let pid = child.child.id() as i32;
    let p = inspect(pid).unwrap_or_else(|e| panic!("inspect {}: {e}", python.display()));
    assert_eq!(p.pid, pid);
    assert_eq!(p.version.to_string(), version);
    assert_eq!(p.version_source, VersionSource::PyVersionSymbol);
    assert_eq!(p.linkage, linkage);
    assert_eq!(p.pie, pie);
    assert_eq!(p.layout.frame_code, frame_code);
    assert_eq!(p.layout.source, source);
    assert!(
        p.interpreter
            .host_path
            .starts_with(format!("/proc/{pid}/root"))
    );
    assert!(p.interpreter.host_path.exists());
    // None of these interpreters is built with CET.
    assert_eq!(p.symbols.eval_frame_probe, p.symbols.eval_frame);
    if linkage == Linkage::StaticExecutable && !pie {
        assert_eq!(p.interpreter.load_bias, 0);
        assert_eq!(
            p.symbols.eval_frame.address, 0x52b0f0,
            "Debian 3.11.2 _PyEval_EvalFrameDefault"
        );
    } else {
        assert_ne!(p.interpreter.load_bias, 0);
    }
    // The runtime address really holds the function: compare the target's bytes with the file's.
    let mem = RemoteMemory::new(pid);
    for sym in [
        p.symbols.eval_frame,
        p.symbols.add_pending_call,
        p.symbols.run_simple_string,
        p.symbols.gil_state_ensure,
        p.symbols.gil_state_release,
        p.symbols.eval_save_thread,
    ] {
        let mut in_memory = [0u8; 16];
        mem.read(sym.address, &mut in_memory)
            .expect("read code bytes");
        let image = ElfImage::open(&p.interpreter.host_path).expect("open image");
        let in_file = image
            .read_at_offset(sym.file_offset, 16)
            .expect("file bytes");
        assert_eq!(&in_memory[..], in_file, "{sym:?}");
    }
    // The code-object offsets are right: read the code object the script printed.
    let code: u64 = child.line.parse().expect("id(code) printed");
    let info = read_code(&mem, &p.layout.code, code).expect("read code object");
    assert_eq!(info.name, "probe_me");
    assert_eq!(info.qualname, "probe_me");
    assert_eq!(info.filename, "<string>");
    assert_eq!(info.firstlineno, 3);
    if let Some(stdin) = child.stdin.as_mut() {
        let _ = stdin.write_all(b"\n");
    }
}

#[test]
fn pyenv_311_shared() {
    check_supported(
        &pyenv("3.11.7"),
        "3.11.7",
        Linkage::SharedLibrary,
        true,
        32,
        offsets::LayoutSource::Table,
    );
}

#[test]
fn pyenv_312_shared() {
    check_supported(
        &pyenv("3.12.1"),
        "3.12.1",
        Linkage::SharedLibrary,
        true,
        0,
        offsets::LayoutSource::Table,
    );
}

#[test]
fn pyenv_313_shared_debug_offsets() {
    check_supported(
        &pyenv("3.13.0"),
        "3.13.0",
        Linkage::SharedLibrary,
        true,
        0,
        offsets::LayoutSource::DebugOffsets,
    );
}

#[test]
fn debian_311_static_non_pie() {
    check_supported(
        Path::new("/usr/bin/python3.11"),
        "3.11.2",
        Linkage::StaticExecutable,
        false,
        32,
        offsets::LayoutSource::Table,
    );
}

#[test]
fn debug_offsets_of_313_match_the_header_layout() {
    let lib = pyenv("3.13.0").with_file_name("../lib/libpython3.13.so.1.0");
    if !lib.exists() {
        eprintln!("skipping: {} is not installed", lib.display());
        return;
    }
    let image = ElfImage::open(&lib).expect("open libpython3.13");
    let (vaddr, _) = image.py_runtime().expect("_PyRuntime");
    let row = libdebugger_common::cpython::row(3, 13).expect("3.13 row");
    let layout = offsets::debug_offsets_layout(row).expect("3.13 reads _Py_DebugOffsets");
    let len = libdebugger_common::cpython::debug_offsets_len(layout) as u64;
    let bytes = image.read_at_vaddr(vaddr, len).expect("bytes");
    let d = offsets::parse(row, bytes)
        .expect("a layout")
        .expect("parsed");
    assert_eq!(d.version_hex, 0x030d00f0);
    assert!(!d.free_threaded);
    let l = offsets::from_debug_offsets(row, &d);
    // The values CPython 3.13's headers give (and the architecture table).
    assert_eq!(
        (
            l.frame_code,
            l.code.filename,
            l.code.name,
            l.code.qualname,
            l.code.firstlineno
        ),
        (0, 112, 120, 128, 68)
    );
    assert_eq!(
        (
            l.code.ascii_data,
            l.code.unicode_state,
            l.code.unicode_length
        ),
        (40, 32, 16)
    );
}

#[test]
fn python_310_is_refused_with_its_reason() {
    let Some(child) = start(&pyenv("3.10.13")) else {
        return;
    };
    let pid = child.child.id() as i32;
    let err = inspect(pid).expect_err("3.10 is unsupported");
    assert!(
        matches!(err, InspectError::UnsupportedVersion { .. }),
        "{err:?}"
    );
    assert!(err.is_unsupported() && err.is_python());
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("CPython 3.10 is not supported (pid {pid}, ")),
        "{msg}"
    );
    assert!(msg.ends_with("libdebugger needs 3.11+"), "{msg}");
}

#[test]
fn not_python_and_gone() {
    let mut sleep = Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("start sleep");
    let pid = sleep.id() as i32;
    let err = inspect(pid).expect_err("sleep is not python");
    assert!(matches!(err, InspectError::NotPython { .. }), "{err:?}");
    let _ = sleep.kill();
    let _ = sleep.wait();
    let err = inspect(pid).expect_err("gone");
    assert!(matches!(err, InspectError::ProcessGone { .. }), "{err:?}");
}
