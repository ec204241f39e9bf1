//! Reading the ELF files of a target process (the interpreter, libpython, libc, the helper):
//! symbols, sections, PT_LOAD segments, bytes at a link-time address, load bias.
//!
//! Used by [`crate::python`] (which file holds the interpreter, its version, its symbols) and by
//! [`crate::inject`] (where `dlopen`, `memfd_create` and the helper's entry point live in the
//! target).
//!
//! Files of the target (libc, libpython: up to 30 MB with debug info) are memory-mapped, so only
//! the pages of the headers, symbol tables and the bytes asked for are touched: reading them
//! whole cost 30–70 ms per injection, and `object::ReadCache` was no better (one `pread` per
//! symbol name). The helper is held in memory because its bytes are copied into the target.
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use object::elf::{ET_DYN, ET_EXEC, PT_LOAD};
use object::read::elf::{ElfFile64, FileHeader, ProgramHeader};
use object::{Endianness, Object, ObjectSection, ObjectSymbol};

/// Errors opening or parsing an ELF file.
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    /// The file could not be opened or read.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The file, as the agent reaches it.
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The file could not be memory-mapped (or is empty).
    #[error("cannot map {path} into memory: {source}")]
    Map {
        /// The file, as the agent reaches it.
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The file is not a 64-bit ELF file the `object` crate can parse.
    #[error("{origin} is not a 64-bit ELF file: {source}")]
    Parse {
        /// Where the bytes came from (a path, or a mapping as `/proc/<pid>/maps` names it).
        origin: String,
        #[source]
        source: object::Error,
    },
    /// The ELF file is neither an executable nor a shared object.
    #[error("{origin} is not an executable or a shared object (ELF type {e_type})")]
    Type {
        /// Where the bytes came from.
        origin: String,
        /// `e_type`.
        e_type: u16,
    },
    /// The ELF file is for another machine than x86_64.
    #[error("{origin} is built for ELF machine {machine}; libdebugger supports x86_64 only")]
    Machine {
        /// Where the bytes came from.
        origin: String,
        /// `e_machine`.
        machine: u16,
    },
}

/// What kind of ELF object a file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElfKind {
    /// `ET_EXEC`: a non-PIE executable, loaded at the addresses in the file.
    Executable,
    /// `ET_DYN`: a PIE executable or a shared library, loaded at a random base.
    Dynamic,
}

/// A symbol defined in an ELF file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ElfSymbol {
    /// `st_value`: the link-time virtual address (add the load bias for the runtime address).
    pub vaddr: u64,
    /// `st_size`.
    pub size: u64,
}

/// One PT_LOAD program header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Load {
    /// `p_vaddr`.
    vaddr: u64,
    /// `p_offset`.
    offset: u64,
    /// `p_filesz`.
    filesz: u64,
}

/// One parsed 64-bit x86_64 ELF executable or shared object.
pub struct Elf {
    /// Where the bytes came from, for error messages (a path, or a mapping as
    /// `/proc/<pid>/maps` names it).
    pub origin: String,
    /// The path the file was opened from (for bytes given to [`Elf::from_bytes`]: the origin).
    path: PathBuf,
    backing: Backing,
    kind: ElfKind,
    /// The PT_LOAD segments, in file order.
    loads: Vec<Load>,
}

impl std::fmt::Debug for Elf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Elf")
            .field("origin", &self.origin)
            .field("path", &self.path)
            .field("kind", &self.kind)
            .field("len", &self.bytes().len())
            .finish_non_exhaustive()
    }
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
    fn new(f: &File) -> io::Result<Self> {
        let len = f.metadata()?.len() as usize;
        let nz = std::num::NonZeroUsize::new(len)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "empty file"))?;
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

type Parsed<'a> = ElfFile64<'a, Endianness, &'a [u8]>;

impl Elf {
    /// Opens `path` by mapping it (a path the agent can open, e.g. under `/proc/<pid>/root`).
    pub fn open(path: &Path) -> Result<Self, ElfError> {
        Self::open_as(path, path.display().to_string())
    }

    /// Opens `path` by mapping it; `origin` names it in error messages (e.g. the target's own
    /// path of a file reached through `/proc/<pid>/map_files`).
    pub fn open_as(path: &Path, origin: String) -> Result<Self, ElfError> {
        let f = File::open(path).map_err(|source| ElfError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let mapped = Mapped::new(&f).map_err(|source| ElfError::Map {
            path: path.to_path_buf(),
            source,
        })?;
        Self::new(origin, path.to_path_buf(), Backing::Mapped(mapped))
    }

    /// Reads an ELF file completely into memory (the helper, whose bytes are copied into the
    /// target).
    pub fn read(path: &Path) -> Result<Self, ElfError> {
        let data = std::fs::read(path).map_err(|source| ElfError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Self::new(
            path.display().to_string(),
            path.to_path_buf(),
            Backing::Bytes(data),
        )
    }

    /// Wraps bytes already read, checking they parse as an x86_64 executable or shared object.
    pub fn from_bytes(origin: String, data: Vec<u8>) -> Result<Self, ElfError> {
        Self::new(origin.clone(), PathBuf::from(origin), Backing::Bytes(data))
    }

    fn new(origin: String, path: PathBuf, backing: Backing) -> Result<Self, ElfError> {
        let bytes = match &backing {
            Backing::Bytes(b) => &b[..],
            Backing::Mapped(m) => m.as_slice(),
        };
        let elf = Parsed::parse(bytes).map_err(|source| ElfError::Parse {
            origin: origin.clone(),
            source,
        })?;
        let endian = elf.endian();
        let header = elf.elf_header();
        let machine = header.e_machine(endian).0;
        if machine != object::elf::EM_X86_64.0 {
            return Err(ElfError::Machine { origin, machine });
        }
        let kind = match header.e_type(endian) {
            ET_EXEC => ElfKind::Executable,
            ET_DYN => ElfKind::Dynamic,
            e_type => {
                return Err(ElfError::Type {
                    origin,
                    e_type: e_type.0,
                });
            }
        };
        let loads = elf
            .elf_program_headers()
            .iter()
            .filter(|ph| ph.p_type(endian) == PT_LOAD)
            .map(|ph| Load {
                vaddr: ph.p_vaddr(endian),
                offset: ph.p_offset(endian),
                filesz: ph.p_filesz(endian),
            })
            .collect();
        Ok(Self {
            origin,
            path,
            backing,
            kind,
            loads,
        })
    }

    /// The file parsed again (cheap: headers only; it parsed when `self` was made).
    fn parsed(&self) -> Option<Parsed<'_>> {
        Parsed::parse(self.bytes()).ok()
    }

    /// The path this file was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The raw bytes.
    pub fn bytes(&self) -> &[u8] {
        match &self.backing {
            Backing::Bytes(b) => b,
            Backing::Mapped(m) => m.as_slice(),
        }
    }

    /// `ET_EXEC` or `ET_DYN`.
    pub fn kind(&self) -> ElfKind {
        self.kind
    }

    /// Looks a symbol up, dynamic symbols first, then the static symbol table if the file has
    /// one (unstripped builds). Versioned names (`dlopen@@GLIBC_2.34`) are matched on the part
    /// before `@`.
    pub fn symbol(&self, name: &str) -> Option<ElfSymbol> {
        self.symbols(&[name]).remove(name)
    }

    /// Looks several symbols up in one pass over the symbol tables (a libc has ~3,000 dynamic
    /// symbols and a libpython with debug info tens of thousands of static ones; one pass per
    /// name was the slowest part of an injection). `.symtab` is scanned only if `.dynsym` lacks
    /// some of `names`; the first definition wins.
    pub fn symbols(&self, names: &[&str]) -> HashMap<String, ElfSymbol> {
        let mut found = HashMap::new();
        if let Some(file) = self.parsed() {
            scan_symbols(file.dynamic_symbols(), names, &mut found);
            if found.len() < names.len() {
                scan_symbols(file.symbols(), names, &mut found);
            }
        }
        found
    }

    /// The virtual address and size of a section (e.g. CPython's `.PyRuntime`), when the file
    /// has section headers naming it.
    pub fn section(&self, name: &str) -> Option<(u64, u64)> {
        let file = self.parsed()?;
        file.section_by_name(name).map(|s| (s.address(), s.size()))
    }

    /// The virtual address of a section (e.g. CPython's `.PyRuntime`), relative to the bias.
    pub fn section_address(&self, name: &str) -> Option<u64> {
        self.section(name).map(|(address, _)| address)
    }

    /// The load bias of this object in a process where its first mapping (file offset 0)
    /// starts at `first_map_start`: the address minus the page-aligned virtual address of the
    /// PT_LOAD segment that maps file offset 0 (0 for a shared object, the link address for a
    /// non-PIE executable such as Debian's `/usr/bin/python3.11`, which makes the bias 0).
    pub fn load_bias(&self, first_map_start: u64) -> Option<u64> {
        self.loads
            .iter()
            .find(|l| l.offset == 0)
            .map(|l| first_map_start.wrapping_sub(l.vaddr & !0xfff))
    }

    /// The lowest PT_LOAD virtual address, page-aligned down: what the first file mapping's start
    /// corresponds to. Load bias = (start of the mapping with file offset 0) - this.
    pub fn first_load_vaddr(&self) -> u64 {
        self.loads.iter().map(|l| l.vaddr).min().unwrap_or(0) & !0xfff
    }

    /// The file offset of a link-time virtual address (through the PT_LOAD segment holding it).
    /// `None` if no segment maps it from the file (e.g. `.bss`).
    pub fn file_offset(&self, vaddr: u64) -> Option<u64> {
        self.loads.iter().find_map(|l| {
            (vaddr >= l.vaddr && vaddr < l.vaddr.saturating_add(l.filesz))
                .then(|| vaddr - l.vaddr + l.offset)
        })
    }

    /// `len` bytes of the file at link-time address `vaddr`, if the file holds all of them.
    pub fn read_at_vaddr(&self, vaddr: u64, len: u64) -> Option<&[u8]> {
        let offset = self.file_offset(vaddr)?;
        // All `len` bytes must lie in the same segment's file part.
        let end = self.file_offset(vaddr.checked_add(len)?.checked_sub(1)?)?;
        if end.checked_sub(offset)? != len - 1 {
            return None;
        }
        self.read_at_offset(offset, len)
    }

    /// `len` bytes at file offset `offset`, if the file holds all of them.
    pub fn read_at_offset(&self, offset: u64, len: u64) -> Option<&[u8]> {
        let start = usize::try_from(offset).ok()?;
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        self.bytes().get(start..end)
    }
}

/// Adds the definitions among `syms` of the names in `names` to `found` (the first definition
/// wins); stops once all are found.
fn scan_symbols<'data, S: ObjectSymbol<'data>>(
    syms: impl Iterator<Item = S>,
    names: &[&str],
    found: &mut HashMap<String, ElfSymbol>,
) {
    for s in syms {
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
            found.entry(want.to_string()).or_insert(ElfSymbol {
                vaddr: s.address(),
                size: s.size(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_itself_parses_and_has_consistent_segments() {
        let exe = std::env::current_exe().expect("current_exe");
        let mapped = Elf::open(&exe).expect("map the test binary");
        let read = Elf::read(&exe).expect("read the test binary");
        assert_eq!(mapped.bytes(), read.bytes());
        assert_eq!(mapped.kind(), read.kind());
        // The first PT_LOAD maps file offset 0: its address maps back to offset 0.
        let first = mapped.first_load_vaddr();
        assert_eq!(mapped.file_offset(first), Some(0));
        assert_eq!(mapped.load_bias(first + 0x1000), Some(0x1000));
        assert_eq!(mapped.read_at_vaddr(first, 4), Some(&b"\x7fELF"[..]));
        assert_eq!(mapped.read_at_offset(mapped.bytes().len() as u64, 1), None);
    }

    #[test]
    fn refuses_what_is_not_elf() {
        assert!(matches!(
            Elf::from_bytes("junk".into(), b"not an ELF file".to_vec()),
            Err(ElfError::Parse { .. })
        ));
        let empty = tempfile::NamedTempFile::new().expect("temp file");
        assert!(matches!(Elf::open(empty.path()), Err(ElfError::Map { .. })));
        assert!(matches!(
            Elf::open(Path::new("/nonexistent/libdebugger")),
            Err(ElfError::Open { .. })
        ));
    }
}
