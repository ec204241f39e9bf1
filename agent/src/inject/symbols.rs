//! Addresses the injected calls need in the target (libc's `dlopen` & co.) and the address
//! ranges the safe-point classification needs (the eval loop, the loader, lock waits).
use tracing::warn;

use super::InjectError;
use super::elf::Elf;
use super::maps::{self, Mapping};
use super::safepoint::Ranges;

/// Addresses in the target the injected calls need.
pub(super) struct TargetSymbols {
    pub(super) errno_location: Option<u64>,
    pub(super) memfd_create: Option<u64>,
    /// libc's `syscall()`: the fallback for `memfd_create` on glibc < 2.27.
    pub(super) syscall: Option<u64>,
    pub(super) close: u64,
    pub(super) dlopen: u64,
    /// Extra `dlopen` flags: `__RTLD_DLOPEN` when only glibc's private `__libc_dlopen_mode`
    /// exists (glibc < 2.34 without libdl loaded).
    pub(super) dlopen_extra_flags: u64,
    pub(super) dlerror: Option<u64>,
    pub(super) ranges: Ranges,
}

/// `__RTLD_DLOPEN` (glibc's dlfcn.h): marks a `__libc_dlopen_mode` call as a user `dlopen`.
pub(super) const RTLD_DLOPEN_PRIVATE: u64 = 0x8000_0000;
pub(super) const RTLD_NOW: u64 = 2;
pub(super) const MFD_CLOEXEC: u64 = 1;
pub(super) const SYS_MEMFD_CREATE: u64 = 319;

/// glibc's lock-wait functions; only named in unstripped or debug-info symbol tables.
const LOCK_WAIT_FUNCTIONS: &[&str] = &[
    "__lll_lock_wait",
    "__lll_lock_wait_private",
    "__lll_timedlock_wait",
    "__lll_clocklock_wait",
    "__lll_robust_lock_wait",
    "__pthread_mutex_lock_full",
];

impl TargetSymbols {
    pub(super) fn resolve(pid: i32, maps: &[Mapping]) -> Result<Self, InjectError> {
        let libc_map = maps::find_object(maps, |m| maps::is_libc(m.file_name()))
            .ok_or(InjectError::NoLibc { pid })?;
        let libc = Elf::of_mapping(pid, libc_map)?;
        let bias = libc
            .load_bias(libc_map.start)
            .ok_or_else(|| InjectError::BadElf {
                origin: libc_map.path.clone(),
                reason: "no PT_LOAD segment maps file offset 0".into(),
            })?;
        let found = libc.symbols(&[
            "dlopen",
            "dlerror",
            "__libc_dlopen_mode",
            "__errno_location",
            "memfd_create",
            "syscall",
            "close",
        ]);
        let in_libc = |name: &str| found.get(name).map(|s| bias + s.value);
        let missing = |symbol: &str| InjectError::MissingSymbol {
            object: libc_map.path.clone(),
            symbol: symbol.into(),
        };

        // dlopen: in libc since glibc 2.34 (and always in musl); before that in libdl.so.2,
        // which CPython links; last resort glibc's private __libc_dlopen_mode.
        let (dlopen, dlerror, dlopen_extra_flags) = if let Some(d) = in_libc("dlopen") {
            (d, in_libc("dlerror"), 0)
        } else if let Some((d, e)) =
            maps::find_object(maps, |m| m.file_name().starts_with("libdl.")).and_then(|m| {
                let elf = Elf::of_mapping(pid, m).ok()?;
                let b = elf.load_bias(m.start)?;
                let d = elf.symbol("dlopen")?;
                Some((b + d.value, elf.symbol("dlerror").map(|e| b + e.value)))
            })
        {
            (d, e, 0)
        } else if let Some(d) = in_libc("__libc_dlopen_mode") {
            (d, None, RTLD_DLOPEN_PRIVATE)
        } else {
            return Err(missing("dlopen"));
        };

        let mut ranges = Ranges::default();
        if let Some(ld) = maps::find_object(maps, |m| maps::is_glibc_loader(m.file_name())) {
            ranges.loader = maps::text_ranges(maps, ld);
        }
        for s in libc
            .symbols(LOCK_WAIT_FUNCTIONS)
            .values()
            .filter(|s| s.size > 0)
        {
            ranges
                .lock_wait
                .push((bias + s.value, bias + s.value + s.size));
        }
        ranges.eval = eval_loop_ranges(pid, maps);
        if ranges.eval.is_empty() {
            warn!(
                pid,
                "_PyEval_EvalFrameDefault not found: only threads blocked in a wait can be used"
            );
        }
        Ok(Self {
            errno_location: in_libc("__errno_location"),
            memfd_create: in_libc("memfd_create"),
            syscall: in_libc("syscall"),
            close: in_libc("close").ok_or_else(|| missing("close"))?,
            dlopen,
            dlopen_extra_flags,
            dlerror,
            ranges,
        })
    }
}

/// `[start, end)` of `_PyEval_EvalFrameDefault` in libpython (pyenv's shared builds) or in the
/// executable (static builds such as Debian's `/usr/bin/python3.11`, which exports it in
/// `.dynsym` with its size).
fn eval_loop_ranges(pid: i32, maps: &[Mapping]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned());
    for m in maps.iter().filter(|m| {
        m.offset == 0
            && m.inode != 0
            && (m.file_name().starts_with("libpython3")
                || exe.as_deref().is_some_and(|e| m.path == e))
    }) {
        // One object may have several offset-0 lines only if mapped twice; dedupe by path.
        if out.iter().any(|(p, _)| p == &m.path) {
            continue;
        }
        if let Ok(elf) = Elf::of_mapping(pid, m)
            && let (Some(bias), Some(s)) = (
                elf.load_bias(m.start),
                elf.symbol("_PyEval_EvalFrameDefault"),
            )
            && s.size > 0
        {
            out.push((m.path.clone(), (bias + s.value, bias + s.value + s.size)));
        }
    }
    out.into_iter().map(|(_, r)| r).collect()
}
