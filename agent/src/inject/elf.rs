//! ELF symbol lookups for the injector: where a function or variable of a mapped object lives in
//! the target (load bias + symbol value), and how large a function is.
use object::{Object, ObjectSegment, ObjectSymbol};

use super::InjectError;
use super::maps::Mapping;

/// A parsed ELF file (the bytes are kept so symbols can be looked up repeatedly).
pub struct Elf {
    /// Where the bytes came from, for error messages.
    pub origin: String,
    data: Vec<u8>,
}

/// A symbol's address relative to the object's load bias, and its size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sym {
    pub value: u64,
    pub size: u64,
}

impl Elf {
    /// Reads an ELF file.
    pub fn read(path: &std::path::Path) -> Result<Self, InjectError> {
        let data = std::fs::read(path).map_err(|source| InjectError::ReadElf {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(path.display().to_string(), data)
    }

    /// Reads the file behind a target mapping through `/proc/<pid>/map_files` (works across
    /// mount namespaces, for deleted files and memfds).
    pub fn of_mapping(pid: i32, m: &Mapping) -> Result<Self, InjectError> {
        let via = m.map_file(pid);
        match std::fs::read(&via) {
            Ok(data) => Self::from_bytes(m.path.clone(), data),
            // map_files needs CAP_SYS_ADMIN in the initial user namespace; fall back to the
            // target's root directory (a container's files are visible there).
            Err(_) => Self::read(&std::path::PathBuf::from(format!(
                "/proc/{pid}/root{}",
                m.path.strip_suffix(" (deleted)").unwrap_or(&m.path)
            ))),
        }
    }

    /// Wraps bytes already read, checking they parse as ELF.
    pub fn from_bytes(origin: String, data: Vec<u8>) -> Result<Self, InjectError> {
        if let Err(e) = object::File::parse(&*data) {
            return Err(InjectError::BadElf {
                origin,
                reason: e.to_string(),
            });
        }
        Ok(Self { origin, data })
    }

    /// The raw bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }

    fn file(&self) -> Option<object::File<'_>> {
        object::File::parse(&*self.data).ok()
    }

    /// Looks a symbol up, dynamic symbols first, then the static symbol table if the file has
    /// one (unstripped builds). Versioned names (`dlopen@@GLIBC_2.34`) are matched on the part
    /// before `@`.
    pub fn symbol(&self, name: &str) -> Option<Sym> {
        let file = self.file()?;
        let matches = |s: &object::Symbol<'_, '_>| {
            s.is_definition()
                && s.name()
                    .map(|n| n.split('@').next() == Some(name))
                    .unwrap_or(false)
        };
        file.dynamic_symbols()
            .find(|s| matches(s))
            .or_else(|| file.symbols().find(|s| matches(s)))
            .map(|s| Sym {
                value: s.address(),
                size: s.size(),
            })
    }

    /// The load bias of this object in a process where its first mapping (file offset 0)
    /// starts at `first_map_start`: the address minus the page-aligned virtual address of the
    /// PT_LOAD segment that maps file offset 0 (0 for a shared object, the link address for a
    /// non-PIE executable such as Debian's `/usr/bin/python3.11`, which makes the bias 0).
    pub fn load_bias(&self, first_map_start: u64) -> Option<u64> {
        let file = self.file()?;
        let seg = file.segments().find(|s| s.file_range().0 == 0)?;
        Some(first_map_start.wrapping_sub(seg.address() & !0xfff))
    }

    /// The GNU build id, if the file has one.
    pub fn build_id(&self) -> Option<Vec<u8>> {
        self.file()?.build_id().ok().flatten().map(<[u8]>::to_vec)
    }
}
