//! The struct offsets the agent and its eBPF programs need, per CPython version, in one place.
//!
//! * 3.13+: read from `_Py_DebugOffsets`, which CPython places at the start of `_PyRuntime`
//!   (section `.PyRuntime`, cookie `"xdebugpy"`). The layout parsed here is the one in CPython
//!   3.13's `Include/internal/pycore_runtime.h` (`typedef struct _Py_DebugOffsets`), checked on
//!   3.13.0 (the same prefix is in `Include/internal/pycore_debug_offsets.h` on main). For 3.14+
//!   the same layout is tried and every value is sanity-checked, so a changed layout is refused
//!   with a clear error instead of producing wrong reads.
//! * 3.11 and 3.12: [`TABLE`], each value checked on the versions named beside it (the unit tests
//!   in `mod.rs` verify them against the running interpreters: they read a known code object).
use super::version::Version;
use serde::Serialize;

/// Offsets inside a `PyCodeObject` and the `str` objects it points to, for reading a code
/// object's names out of the target's memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct CodeLayout {
    /// `co_filename` (a `str`).
    pub filename: u32,
    /// `co_name` (a `str`).
    pub name: u32,
    /// `co_qualname` (a `str`).
    pub qualname: u32,
    /// `co_firstlineno` (a C `int`).
    pub firstlineno: u32,
    /// `PyASCIIObject.length`.
    pub unicode_length: u32,
    /// `PyASCIIObject.state` (a bitfield: kind at bits 2..5, compact bit 5, ascii bit 6).
    pub unicode_state: u32,
    /// `sizeof(PyASCIIObject)`: where a compact ASCII string's characters start.
    pub ascii_data: u32,
    /// `sizeof(PyCompactUnicodeObject)`: where a compact non-ASCII string's characters start.
    pub compact_data: u32,
}

/// Everything version-specific the agent needs about a process's interpreter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Layout {
    /// Offset of the code object pointer in `_PyInterpreterFrame` (`f_code` on 3.11 and 3.12,
    /// `f_executable` on 3.13+).
    pub frame_code: u32,
    /// Low bits to clear from that pointer (3.14 stores a tagged `_PyStackRef`; 0 before).
    pub code_tag_mask: u32,
    pub code: CodeLayout,
    /// Where these values came from.
    pub source: LayoutSource,
}

/// Where a [`Layout`] came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LayoutSource {
    /// Parsed from the interpreter's own `_Py_DebugOffsets`.
    DebugOffsets,
    /// The hard-coded [`TABLE`].
    Table,
}

/// One row of the hard-coded table.
struct Row {
    minor: u8,
    layout: Layout,
}

/// Hard-coded layouts for versions without `_Py_DebugOffsets` (x86_64, default build).
///
/// 3.11 — checked on 3.11.7 (pyenv) and 3.11.2 (Debian): `_PyInterpreterFrame.f_code` is the 5th
/// pointer (after f_func, f_globals, f_builtins, f_locals) = 32; `PyCodeObject`: co_firstlineno
/// 72, co_filename 112, co_name 120, co_qualname 128; `PyASCIIObject` is 48 bytes (it still has
/// `wstr`), `PyCompactUnicodeObject` 72 (utf8_length, utf8, wstr_length).
///
/// 3.12 — checked on 3.12.1 (pyenv): `f_code` moved to offset 0; co_firstlineno 68, co_filename
/// 112, co_name 120, co_qualname 128; `wstr` is gone: `PyASCIIObject` 40, compact 56.
const TABLE: &[Row] = &[
    Row {
        minor: 11,
        layout: Layout {
            frame_code: 32,
            code_tag_mask: 0,
            code: CodeLayout {
                filename: 112,
                name: 120,
                qualname: 128,
                firstlineno: 72,
                unicode_length: 16,
                unicode_state: 32,
                ascii_data: 48,
                compact_data: 72,
            },
            source: LayoutSource::Table,
        },
    },
    Row {
        minor: 12,
        layout: Layout {
            frame_code: 0,
            code_tag_mask: 0,
            code: CodeLayout {
                filename: 112,
                name: 120,
                qualname: 128,
                firstlineno: 68,
                unicode_length: 16,
                unicode_state: 32,
                ascii_data: 40,
                compact_data: 56,
            },
            source: LayoutSource::Table,
        },
    },
];

/// The table row for a version without `_Py_DebugOffsets` (3.11, 3.12).
pub fn from_table(version: Version) -> Option<Layout> {
    if version.major != 3 {
        return None;
    }
    TABLE
        .iter()
        .find(|r| r.minor == version.minor)
        .map(|r| r.layout)
}

/// `_Py_DebugOffsets` cookie.
pub const DEBUG_COOKIE: &[u8; 8] = b"xdebugpy";

/// Byte offsets of the `_Py_DebugOffsets` fields used here (3.13 layout, see the module docs:
/// cookie[8], version, free_threaded, runtime_state{3}, interpreter_state{13}, thread_state{9},
/// interpreter_frame{size, previous, executable, ...}, code_object{size, filename, name,
/// qualname, linetable, firstlineno, ...}, pyobject{2}, type_object{4}, tuple_object{3},
/// list_object{3}, dict_object{3}, float_object{2}, long_object{3}, bytes_object{3},
/// unicode_object{size, state, length, asciiobject_size}, gc{2}; every field a uint64_t).
mod field {
    pub const VERSION: usize = 8;
    pub const FREE_THREADED: usize = 16;
    pub const FRAME_SIZE: usize = 224;
    pub const FRAME_EXECUTABLE: usize = 240;
    pub const CODE_SIZE: usize = 272;
    pub const CODE_FILENAME: usize = 280;
    pub const CODE_NAME: usize = 288;
    pub const CODE_QUALNAME: usize = 296;
    pub const CODE_FIRSTLINENO: usize = 312;
    pub const UNICODE_STATE: usize = 544;
    pub const UNICODE_LENGTH: usize = 552;
    pub const UNICODE_ASCII_SIZE: usize = 560;
    /// Bytes read (up to and including `unicode_object`).
    pub const LEN: usize = 568;
}

/// Bytes of `_Py_DebugOffsets` [`parse_debug_offsets`] needs.
pub const DEBUG_OFFSETS_LEN: u64 = field::LEN as u64;

/// What `_Py_DebugOffsets` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DebugOffsets {
    /// `PY_VERSION_HEX`.
    pub version_hex: u32,
    pub free_threaded: bool,
    /// The offsets, `None` if they fail the sanity checks (a layout this parser does not know).
    pub layout: Option<Layout>,
}

/// Parses `_Py_DebugOffsets` from the first [`DEBUG_OFFSETS_LEN`] bytes of `.PyRuntime`.
/// `None` if the cookie is not there (CPython before 3.13).
pub fn parse_debug_offsets(bytes: &[u8]) -> Option<DebugOffsets> {
    if bytes.len() < field::LEN || &bytes[..8] != DEBUG_COOKIE {
        return None;
    }
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(b)
    };
    let version_hex = u32::try_from(u64_at(field::VERSION)).ok()?;
    let free_threaded = u64_at(field::FREE_THREADED) != 0;
    let minor = (version_hex >> 16) as u8;
    let frame_size = u64_at(field::FRAME_SIZE);
    let code_size = u64_at(field::CODE_SIZE);
    let ascii_size = u64_at(field::UNICODE_ASCII_SIZE);
    let small = |v: u64, limit: u64| u32::try_from(v).ok().filter(|&v| u64::from(v) < limit);
    let layout = (|| {
        // Sanity bounds: a frame is < 256 bytes, a code object < 1 KiB, a PyASCIIObject < 128.
        if frame_size == 0 || frame_size > 256 || code_size == 0 || code_size > 1024 {
            return None;
        }
        if !(16..128).contains(&ascii_size) {
            return None;
        }
        let ascii_data = u32::try_from(ascii_size).ok()?;
        Some(Layout {
            frame_code: small(u64_at(field::FRAME_EXECUTABLE), frame_size)?,
            // 3.14 made f_executable a tagged _PyStackRef.
            code_tag_mask: if minor >= 14 { 3 } else { 0 },
            code: CodeLayout {
                filename: small(u64_at(field::CODE_FILENAME), code_size)?,
                name: small(u64_at(field::CODE_NAME), code_size)?,
                qualname: small(u64_at(field::CODE_QUALNAME), code_size)?,
                firstlineno: small(u64_at(field::CODE_FIRSTLINENO), code_size)?,
                unicode_state: small(u64_at(field::UNICODE_STATE), ascii_size)?,
                unicode_length: small(u64_at(field::UNICODE_LENGTH), ascii_size)?,
                ascii_data,
                // PyCompactUnicodeObject = PyASCIIObject + Py_ssize_t utf8_length + char *utf8.
                compact_data: ascii_data + 16,
            },
            source: LayoutSource::DebugOffsets,
        })
    })();
    Some(DebugOffsets {
        version_hex,
        free_threaded,
        layout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_covers_311_and_312_only() {
        assert!(from_table(Version::major_minor(3, 11)).is_some());
        assert!(from_table(Version::major_minor(3, 12)).is_some());
        assert!(from_table(Version::major_minor(3, 13)).is_none());
        assert!(from_table(Version::major_minor(3, 10)).is_none());
    }

    #[test]
    fn debug_offsets_need_the_cookie() {
        assert_eq!(parse_debug_offsets(&[0u8; field::LEN]), None);
        assert_eq!(parse_debug_offsets(b"xdebugpy"), None);
    }

    #[test]
    fn nonsense_values_give_no_layout() {
        let mut b = vec![0xffu8; field::LEN];
        b[..8].copy_from_slice(DEBUG_COOKIE);
        b[8..16].copy_from_slice(&0x030e00f0u64.to_le_bytes());
        let d = parse_debug_offsets(&b).expect("cookie present");
        assert_eq!(d.version_hex, 0x030e00f0);
        assert_eq!(d.layout, None);
    }
}
