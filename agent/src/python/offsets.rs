//! The struct offsets the agent and its eBPF programs need, from the one table of version
//! knowledge, `libdebugger_common::cpython::VERSIONS` (shared with the helper; each row says
//! why it is what it is and which builds it was checked on).
//!
//! * 3.13+: read from the interpreter's own `_Py_DebugOffsets` (cookie `"xdebugpy"` at the start
//!   of `_PyRuntime`), with the row's [`DebugOffsetsLayout`] saying where each group of that
//!   struct starts in that minor version. Every value is sanity-checked: a layout that does not
//!   fit is refused with a clear error instead of producing wrong reads.
//! * 3.11 and 3.12: the row's own offsets.
use libdebugger_common::cpython::{
    self, CodeOffsets, DebugOffsets, DebugOffsetsError, DebugOffsetsLayout, OffsetsSource,
    StaticLayout, VersionRow,
};
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

impl From<CodeOffsets> for CodeLayout {
    fn from(c: CodeOffsets) -> Self {
        Self {
            filename: c.filename,
            name: c.name,
            qualname: c.qualname,
            firstlineno: c.firstlineno,
            unicode_length: c.unicode_length,
            unicode_state: c.unicode_state,
            ascii_data: c.ascii_data,
            compact_data: c.compact_data,
        }
    }
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
    /// The version row's own offsets (3.11, 3.12).
    Table,
}

/// The layout of a version whose row carries its offsets (3.11, 3.12).
pub fn from_static(row: &VersionRow, s: &StaticLayout) -> Layout {
    Layout {
        frame_code: s.frame.executable,
        code_tag_mask: row.code_tag_mask,
        code: s.code.into(),
        source: LayoutSource::Table,
    }
}

/// The layout from a parsed `_Py_DebugOffsets`.
pub fn from_debug_offsets(row: &VersionRow, d: &DebugOffsets) -> Layout {
    Layout {
        frame_code: d.frame.executable,
        code_tag_mask: row.code_tag_mask,
        code: d.code.into(),
        source: LayoutSource::DebugOffsets,
    }
}

/// The row's `_Py_DebugOffsets` layout, when the version has one (3.13+).
pub fn debug_offsets_layout(row: &VersionRow) -> Option<&DebugOffsetsLayout> {
    match &row.offsets {
        OffsetsSource::DebugOffsets(l) => Some(l),
        OffsetsSource::Static(_) => None,
    }
}

/// The table layout of a version without `_Py_DebugOffsets` (3.11, 3.12).
pub fn from_table(version: super::Version) -> Option<Layout> {
    let row = cpython::row(version.major, version.minor)?;
    match &row.offsets {
        OffsetsSource::Static(s) => Some(from_static(row, s)),
        OffsetsSource::DebugOffsets(_) => None,
    }
}

/// Parses `bytes` (from the cookie on) with the layout of `row`.
pub fn parse(row: &VersionRow, bytes: &[u8]) -> Option<Result<DebugOffsets, DebugOffsetsError>> {
    debug_offsets_layout(row).map(|l| cpython::parse_debug_offsets(bytes, l))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::python::Version;

    #[test]
    fn table_covers_311_and_312_only() {
        assert!(from_table(Version::major_minor(3, 11)).is_some());
        assert!(from_table(Version::major_minor(3, 12)).is_some());
        assert!(from_table(Version::major_minor(3, 13)).is_none());
        assert!(from_table(Version::major_minor(3, 14)).is_none());
        assert!(from_table(Version::major_minor(3, 10)).is_none());
    }

    #[test]
    fn debug_offsets_need_the_cookie() {
        let row = cpython::row(3, 14).expect("3.14");
        assert_eq!(
            parse(row, &[0u8; 1024]),
            Some(Err(DebugOffsetsError::NotThere))
        );
        assert_eq!(
            parse(row, b"xdebugpy"),
            Some(Err(DebugOffsetsError::NotThere))
        );
    }

    #[test]
    fn nonsense_values_are_refused() {
        let row = cpython::row(3, 14).expect("3.14");
        let mut b = vec![0xffu8; 1024];
        b[..8].copy_from_slice(cpython::DEBUG_COOKIE);
        b[8..16].copy_from_slice(&0x030e00f0u64.to_le_bytes());
        assert!(matches!(
            parse(row, &b),
            Some(Err(DebugOffsetsError::Implausible { .. }))
        ));
    }
}
