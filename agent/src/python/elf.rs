//! Reading the ELF file that holds the interpreter: symbols, bytes at a virtual address, the
//! `.PyRuntime` section. The file is read lazily through [`object::ReadCache`], so a 30 MB
//! `libpython` with debug info costs a few page reads, not a full copy.
use object::elf::{ET_DYN, ET_EXEC, PT_LOAD};
use object::read::elf::{ElfFile64, FileHeader, ProgramHeader};
use object::{Endianness, Object, ObjectSection, ObjectSymbol, ReadCache, ReadRef};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// Errors reading an ELF file.
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    /// The file could not be opened.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The file, as the agent reaches it.
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The file is not a 64-bit little-endian ELF file the `object` crate can parse.
    #[error("{path} is not a 64-bit ELF file: {source}")]
    Parse {
        /// The file, as the agent reaches it.
        path: PathBuf,
        #[source]
        source: object::Error,
    },
    /// The ELF file is neither an executable nor a shared object.
    #[error("{path} is not an executable or a shared object (ELF type {e_type})")]
    Type {
        /// The file, as the agent reaches it.
        path: PathBuf,
        /// `e_type`.
        e_type: u16,
    },
    /// The ELF file is for another machine than x86_64.
    #[error("{path} is built for ELF machine {machine}; libdebugger supports x86_64 only")]
    Machine {
        /// The file, as the agent reaches it.
        path: PathBuf,
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
    /// `st_value`: the link-time virtual address.
    pub vaddr: u64,
    /// `st_size`.
    pub size: u64,
}

/// One parsed ELF file.
pub struct ElfImage {
    path: PathBuf,
    cache: ReadCache<File>,
    kind: ElfKind,
    /// PT_LOAD segments: (p_vaddr, p_offset, p_filesz, p_memsz).
    loads: Vec<(u64, u64, u64, u64)>,
    /// `.PyRuntime` section: (vaddr, size), when the file has section headers naming it.
    py_runtime_section: Option<(u64, u64)>,
    /// Defined dynamic symbols first, then `.symtab` ones (first definition wins).
    symbols: std::collections::HashMap<String, ElfSymbol>,
}

impl std::fmt::Debug for ElfImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ElfImage")
            .field("path", &self.path)
            .field("kind", &self.kind)
            .field("symbols", &self.symbols.len())
            .finish_non_exhaustive()
    }
}

/// The symbols [`ElfImage::open`] keeps (looking up every symbol of a libpython would cost
/// ~10k allocations; the agent needs only these).
pub const WANTED_SYMBOLS: &[&str] = &[
    "_PyEval_EvalFrameDefault",
    "Py_Version",
    "_PyRuntime",
    "Py_AddPendingCall",
    "PyRun_SimpleString",
    "PyGILState_Ensure",
    "PyGILState_Release",
    "PyEval_SaveThread",
];

/// Adds the defined [`WANTED_SYMBOLS`] among `syms` to `out` (the first definition wins).
fn collect_wanted<'data, S: ObjectSymbol<'data>>(
    syms: impl Iterator<Item = S>,
    out: &mut std::collections::HashMap<String, ElfSymbol>,
) {
    for sym in syms {
        if !sym.is_definition() {
            continue;
        }
        let Ok(name) = sym.name() else { continue };
        if WANTED_SYMBOLS.contains(&name) && !out.contains_key(name) {
            out.insert(
                name.to_string(),
                ElfSymbol {
                    vaddr: sym.address(),
                    size: sym.size(),
                },
            );
        }
    }
}

impl ElfImage {
    /// Opens and parses `path` (a path the agent can open, e.g. under `/proc/<pid>/root`).
    pub fn open(path: &Path) -> Result<Self, ElfError> {
        let file = File::open(path).map_err(|source| ElfError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let cache = ReadCache::new(file);
        let parse_err = |source| ElfError::Parse {
            path: path.to_path_buf(),
            source,
        };
        let (kind, loads, py_runtime_section, symbols) = {
            let elf =
                ElfFile64::<Endianness, &ReadCache<File>>::parse(&cache).map_err(parse_err)?;
            let endian = elf.endian();
            let header = elf.elf_header();
            let machine = header.e_machine(endian).0;
            if machine != object::elf::EM_X86_64.0 {
                return Err(ElfError::Machine {
                    path: path.to_path_buf(),
                    machine,
                });
            }
            let kind = match header.e_type(endian) {
                ET_EXEC => ElfKind::Executable,
                ET_DYN => ElfKind::Dynamic,
                e_type => {
                    return Err(ElfError::Type {
                        path: path.to_path_buf(),
                        e_type: e_type.0,
                    });
                }
            };
            let loads = elf
                .elf_program_headers()
                .iter()
                .filter(|ph| ph.p_type(endian) == PT_LOAD)
                .map(|ph| {
                    (
                        ph.p_vaddr(endian),
                        ph.p_offset(endian),
                        ph.p_filesz(endian),
                        ph.p_memsz(endian),
                    )
                })
                .collect::<Vec<_>>();
            let py_runtime_section = elf
                .section_by_name(".PyRuntime")
                .map(|s| (s.address(), s.size()));
            let mut symbols = std::collections::HashMap::new();
            collect_wanted(elf.dynamic_symbols(), &mut symbols);
            // `.symtab` (tens of thousands of entries with debug info) only if `.dynsym` lacks some.
            if symbols.len() < WANTED_SYMBOLS.len() {
                collect_wanted(elf.symbols(), &mut symbols);
            }
            (kind, loads, py_runtime_section, symbols)
        };
        Ok(Self {
            path: path.to_path_buf(),
            cache,
            kind,
            loads,
            py_runtime_section,
            symbols,
        })
    }

    /// The path this image was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `ET_EXEC` or `ET_DYN`.
    pub fn kind(&self) -> ElfKind {
        self.kind
    }

    /// A defined symbol from [`WANTED_SYMBOLS`], from `.dynsym` or `.symtab`.
    pub fn symbol(&self, name: &str) -> Option<ElfSymbol> {
        self.symbols.get(name).copied()
    }

    /// The file offset of a link-time virtual address (through the PT_LOAD segment holding it).
    /// `None` if no segment maps it from the file (e.g. `.bss`).
    pub fn file_offset(&self, vaddr: u64) -> Option<u64> {
        self.loads
            .iter()
            .find_map(|&(p_vaddr, p_offset, p_filesz, _)| {
                (vaddr >= p_vaddr && vaddr < p_vaddr.saturating_add(p_filesz))
                    .then(|| vaddr - p_vaddr + p_offset)
            })
    }

    /// The lowest PT_LOAD virtual address, page-aligned down: what the first file mapping's start
    /// corresponds to. Load bias = (start of the mapping with file offset 0) - this.
    pub fn first_load_vaddr(&self) -> u64 {
        self.loads.iter().map(|&(v, _, _, _)| v).min().unwrap_or(0) & !0xfff
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

    /// `len` bytes at file offset `offset`.
    pub fn read_at_offset(&self, offset: u64, len: u64) -> Option<&[u8]> {
        (&self.cache).read_bytes_at(offset, len).ok()
    }

    /// Start address and size of the `.PyRuntime` data (the `_PyRuntime` symbol, else the
    /// section of that name). On 3.13+ it starts with `_Py_DebugOffsets`.
    pub fn py_runtime(&self) -> Option<(u64, u64)> {
        self.symbol("_PyRuntime")
            .map(|s| (s.vaddr, s.size))
            .or(self.py_runtime_section)
    }
}
