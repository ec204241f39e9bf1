//! `/proc/<pid>/maps`: which objects are mapped where in the target.
use std::path::{Path, PathBuf};

/// One line of `/proc/<pid>/maps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// First address of the mapping.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// `r`, `w`, `x` permissions.
    pub readable: bool,
    pub writable: bool,
    pub executable: bool,
    /// Offset in the mapped file.
    pub offset: u64,
    /// Inode of the mapped file (0 for anonymous mappings).
    pub inode: u64,
    /// The path column, as the kernel prints it (`/usr/lib/x.so`, `/memfd:name (deleted)`,
    /// `[stack]`, or empty).
    pub path: String,
}

impl Mapping {
    /// Whether `addr` lies inside this mapping.
    pub fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }

    /// The last path component (`libc.so.6`), without a ` (deleted)` suffix.
    pub fn file_name(&self) -> &str {
        let p = self.path.strip_suffix(" (deleted)").unwrap_or(&self.path);
        p.rsplit('/').next().unwrap_or(p)
    }

    /// A path the agent can open to read this mapping's file, whatever mount namespace the
    /// target lives in and even if the file was deleted or is a memfd: the kernel's
    /// `/proc/<pid>/map_files/<start>-<end>` link (root only).
    pub fn map_file(&self, pid: i32) -> PathBuf {
        PathBuf::from(format!(
            "/proc/{pid}/map_files/{:x}-{:x}",
            self.start, self.end
        ))
    }
}

/// Parses the text of `/proc/<pid>/maps`; malformed lines are skipped.
pub fn parse(text: &str) -> Vec<Mapping> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Mapping> {
    // "start-end perms offset dev inode   path" (path may contain spaces).
    let mut rest = line;
    let mut field = || {
        let r = rest.trim_start();
        let end = r.find(' ').unwrap_or(r.len());
        let (f, tail) = r.split_at(end);
        rest = tail;
        f
    };
    let range = field();
    let perms = field();
    let offset = field();
    let _dev = field();
    let inode = field();
    let path = rest.trim_start().to_string();
    let (start, end) = range.split_once('-')?;
    let perms = perms.as_bytes();
    if perms.len() < 3 {
        return None;
    }
    Some(Mapping {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        readable: perms[0] == b'r',
        writable: perms[1] == b'w',
        executable: perms[2] == b'x',
        offset: u64::from_str_radix(offset, 16).ok()?,
        inode: inode.parse().ok()?,
        path,
    })
}

/// Reads and parses `/proc/<pid>/maps`.
pub fn read(pid: i32) -> std::io::Result<Vec<Mapping>> {
    Ok(parse(&std::fs::read_to_string(format!(
        "/proc/{pid}/maps"
    ))?))
}

/// The mappings of one file (same path column), in address order.
pub fn of_path<'m>(maps: &'m [Mapping], path: &str) -> Vec<&'m Mapping> {
    maps.iter().filter(|m| m.path == path).collect()
}

/// The first mapping (lowest address, file offset 0) of the first file whose name satisfies
/// `pred`.
pub fn find_object(maps: &[Mapping], pred: impl Fn(&Mapping) -> bool) -> Option<&Mapping> {
    maps.iter()
        .filter(|m| m.inode != 0 && m.offset == 0 && pred(m))
        .min_by_key(|m| m.start)
}

/// Whether `name` (a mapping's file name) is a C library: glibc (`libc.so.6`, `libc-2.31.so`)
/// or musl (`libc.musl-x86_64.so.1`, `ld-musl-x86_64.so.1`).
pub fn is_libc(name: &str) -> bool {
    name.starts_with("libc.so")
        || (name.starts_with("libc-") && name.ends_with(".so"))
        || name.starts_with("libc.musl")
        || name.starts_with("ld-musl")
}

/// Whether `name` is glibc's dynamic loader (`ld-linux-x86-64.so.2`, `ld-2.31.so`).
pub fn is_glibc_loader(name: &str) -> bool {
    name.starts_with("ld-linux") || (name.starts_with("ld-2.") && name.ends_with(".so"))
}

/// The executable ranges of the object whose first mapping is `first`.
pub fn text_ranges(maps: &[Mapping], first: &Mapping) -> Vec<(u64, u64)> {
    of_path(maps, &first.path)
        .into_iter()
        .filter(|m| m.executable)
        .map(|m| (m.start, m.end))
        .collect()
}

/// The canonical form of a helper path on the agent side, for comparing with the maps column.
pub fn canonical(path: &Path) -> String {
    std::fs::canonicalize(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
00400000-00420000 r--p 00000000 08:01 1234                               /usr/bin/python3.11
7f0000000000-7f0000028000 r--p 00000000 08:01 99                         /usr/lib/x86_64-linux-gnu/libc.so.6
7f0000028000-7f000019d000 r-xp 00028000 08:01 99                         /usr/lib/x86_64-linux-gnu/libc.so.6
7f1000000000-7f1000001000 r--p 00000000 00:01 4242                       /memfd:libdebugger-helper (deleted)
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]
7ffd00030000-7ffd00031000 rw-p 00000000 00:00 0 
";

    #[test]
    fn parses_every_column() {
        let m = parse(SAMPLE);
        assert_eq!(m.len(), 6);
        assert_eq!(m[2].start, 0x7f0000028000);
        assert!(m[2].executable && !m[2].writable);
        assert_eq!(m[2].offset, 0x28000);
        assert_eq!(m[3].file_name(), "memfd:libdebugger-helper");
        assert_eq!(m[4].path, "[stack]");
        assert_eq!(m[5].path, "");
        assert_eq!(m[5].inode, 0);
    }

    #[test]
    fn finds_libc_and_its_text() {
        let m = parse(SAMPLE);
        let libc = find_object(&m, |x| is_libc(x.file_name())).expect("libc");
        assert_eq!(libc.start, 0x7f0000000000);
        assert_eq!(
            text_ranges(&m, libc),
            vec![(0x7f0000028000, 0x7f000019d000)]
        );
        assert!(is_libc("libc-2.31.so") && is_libc("ld-musl-x86_64.so.1"));
        assert!(!is_libc("libcrypto.so.3") && !is_libc("libcap.so.2"));
        assert!(is_glibc_loader("ld-linux-x86-64.so.2") && !is_glibc_loader("ld-musl-x86_64.so.1"));
    }
}
