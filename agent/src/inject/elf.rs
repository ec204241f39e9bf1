//! ELF symbol lookups for the injector: where a function or variable of a mapped object lives in
//! the target (load bias + symbol value), and how large a function is.
use std::collections::HashMap;

use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol};

use super::InjectError;
use super::maps::Mapping;

/// An ELF file. Files of the target (libc, libpython: up to 30 MB) are memory-mapped, so only
/// the pages of the headers and symbol tables are touched (reading them whole cost 30–70 ms
/// per injection; `object::ReadCache` was no better: one `pread` per symbol name). The helper
/// is held in memory because its bytes are copied into the target.
pub struct Elf {
    /// Where the bytes came from, for error messages.
    pub origin: String,
    backing: Backing,
}

enum Backing {
    Bytes(Vec<u8>),
    Mapped(Mapped),
}

/// A read-only private file mapping.
struct Mapped {
    ptr: std::ptr::NonNull<libc::c_void>,
    len: usize,
}

impl Mapped {
    fn new(f: &std::fs::File) -> std::io::Result<Self> {
        let len = f.metadata()?.len() as usize;
        let nz = std::num::NonZeroUsize::new(len)
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "empty file"))?;
        // SAFETY: a fresh read-only private mapping of a file we hold open; nothing else
        // aliases it. The one hazard of file mappings — SIGBUS if the file is truncated while
        // mapped — does not arise for the shared libraries and executables of a running
        // process: package managers replace such files by rename, never truncate them.
        let ptr = unsafe {
            nix::sys::mman::mmap(
                None,
                nz,
                nix::sys::mman::ProtFlags::PROT_READ,
                nix::sys::mman::MapFlags::MAP_PRIVATE,
                f,
                0,
            )
        }?;
        Ok(Self { ptr, len })
    }

    fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes for the lifetime of `self` (unmapped in Drop).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().cast::<u8>(), self.len) }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly the mapping created in `new`, unmapped once; no
        // slice borrowed from it outlives `self`.
        let _ = unsafe { nix::sys::mman::munmap(self.ptr, self.len) };
    }
}

// SAFETY: the mapping is read-only and owned; sharing or sending it is like sharing a `&[u8]`.
unsafe impl Send for Mapped {}
// SAFETY: as above.
unsafe impl Sync for Mapped {}

/// Runs `$body` with `$file` bound to the parsed `object::File`, whatever the backing.
macro_rules! with_file {
    ($self:expr, $file:ident => $body:expr) => {
        match &$self.backing {
            Backing::Bytes(b) => object::File::parse(&b[..]).ok().and_then(|$file| $body),
            Backing::Mapped(m) => object::File::parse(m.as_slice())
                .ok()
                .and_then(|$file| $body),
        }
    };
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sym {
    pub value: u64,
    pub size: u64,
}

impl Elf {
    /// Reads an ELF file completely (the helper).
    pub fn read(path: &std::path::Path) -> Result<Self, InjectError> {
        let data = std::fs::read(path).map_err(|source| InjectError::ReadElf {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(path.display().to_string(), data)
    }

    /// Opens an ELF file by mapping it.
    pub fn open(path: &std::path::Path, origin: String) -> Result<Self, InjectError> {
        let f = std::fs::File::open(path).map_err(|source| InjectError::ReadElf {
            path: path.to_path_buf(),
            source,
        })?;
        let mapped = Mapped::new(&f).map_err(|source| InjectError::ReadElf {
            path: path.to_path_buf(),
            source,
        })?;
        let elf = Self {
            origin,
            backing: Backing::Mapped(mapped),
        };
        elf.check()?;
        Ok(elf)
    }

    /// Opens the file behind a target mapping through `/proc/<pid>/map_files` (works across
    /// mount namespaces, for deleted files and memfds).
    pub fn of_mapping(pid: i32, m: &Mapping) -> Result<Self, InjectError> {
        match Self::open(&m.map_file(pid), m.path.clone()) {
            Ok(e) => Ok(e),
            // map_files needs CAP_SYS_ADMIN in the initial user namespace; fall back to the
            // target's root directory (a container's files are visible there).
            Err(_) => Self::open(
                &std::path::PathBuf::from(format!(
                    "/proc/{pid}/root{}",
                    m.path.strip_suffix(" (deleted)").unwrap_or(&m.path)
                )),
                m.path.clone(),
            ),
        }
    }

    /// Wraps bytes already read, checking they parse as ELF.
    pub fn from_bytes(origin: String, data: Vec<u8>) -> Result<Self, InjectError> {
        let elf = Self {
            origin,
            backing: Backing::Bytes(data),
        };
        elf.check()?;
        Ok(elf)
    }

    fn check(&self) -> Result<(), InjectError> {
        let r = match &self.backing {
            Backing::Bytes(b) => object::File::parse(&b[..]).map(|_| ()),
            Backing::Mapped(m) => object::File::parse(m.as_slice()).map(|_| ()),
        };
        r.map_err(|e| InjectError::BadElf {
            origin: self.origin.clone(),
            reason: e.to_string(),
        })
    }

    /// The raw bytes.
    pub fn bytes(&self) -> &[u8] {
        match &self.backing {
            Backing::Bytes(b) => b,
            Backing::Mapped(m) => m.as_slice(),
        }
    }

    /// Looks a symbol up, dynamic symbols first, then the static symbol table if the file has
    /// one (unstripped builds). Versioned names (`dlopen@@GLIBC_2.34`) are matched on the part
    /// before `@`.
    pub fn symbol(&self, name: &str) -> Option<Sym> {
        self.symbols(&[name]).remove(name)
    }

    /// Looks several symbols up in one pass over the symbol tables (a libc has ~3,000 dynamic
    /// symbols; one pass per name was the slowest part of an injection).
    pub fn symbols(&self, names: &[&str]) -> HashMap<String, Sym> {
        with_file!(self, file => Some(find_symbols(&file, names))).unwrap_or_default()
    }

    /// The virtual address of a section (e.g. CPython's `.PyRuntime`), relative to the bias.
    pub fn section_address(&self, name: &str) -> Option<u64> {
        with_file!(self, file => file.section_by_name(name).map(|s| s.address()))
    }

    /// The load bias of this object in a process where its first mapping (file offset 0)
    /// starts at `first_map_start`: the address minus the page-aligned virtual address of the
    /// PT_LOAD segment that maps file offset 0 (0 for a shared object, the link address for a
    /// non-PIE executable such as Debian's `/usr/bin/python3.11`, which makes the bias 0).
    pub fn load_bias(&self, first_map_start: u64) -> Option<u64> {
        with_file!(self, file => file
            .segments()
            .find(|s| s.file_range().0 == 0)
            .map(|seg| first_map_start.wrapping_sub(seg.address() & !0xfff)))
    }
}

fn find_symbols<'d, R: object::ReadRef<'d>>(
    file: &object::File<'d, R>,
    names: &[&str],
) -> HashMap<String, Sym> {
    let mut found = HashMap::new();
    let scan = |found: &mut HashMap<String, Sym>,
                symbols: &mut dyn Iterator<Item = object::Symbol<'d, '_, R>>| {
        for s in symbols {
            if found.len() == names.len() {
                return;
            }
            if !s.is_definition() {
                continue;
            }
            let Ok(n) = s.name_bytes() else { continue };
            // Versioned names (`dlopen@@GLIBC_2.34`) match on the part before `@`.
            let n = n.split(|&b| b == b'@').next().unwrap_or(n);
            if let Some(&want) = names.iter().find(|w| w.as_bytes() == n) {
                found.entry(want.to_string()).or_insert(Sym {
                    value: s.address(),
                    size: s.size(),
                });
            }
        }
    };
    scan(&mut found, &mut file.dynamic_symbols());
    if found.len() < names.len() {
        scan(&mut found, &mut file.symbols());
    }
    found
}
