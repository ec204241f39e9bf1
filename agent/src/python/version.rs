//! CPython versions: decoding `PY_VERSION_HEX` and file names like `libpython3.12.so.1.0`.
use serde::Serialize;
use std::fmt;

/// A CPython version. `micro` is `None` when only the file name was available.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Version {
    pub major: u8,
    pub minor: u8,
    pub micro: Option<u8>,
    /// Release level and serial from `PY_VERSION_HEX` (`0xF`, 0 for a final release).
    #[serde(skip)]
    pub level: u8,
    #[serde(skip)]
    pub serial: u8,
}

impl Version {
    /// Decodes `PY_VERSION_HEX` (`0xMMmmuuLS`: major, minor, micro, level, serial).
    pub fn from_hex(hex: u32) -> Option<Self> {
        let v = Self {
            major: (hex >> 24) as u8,
            minor: (hex >> 16) as u8,
            micro: Some((hex >> 8) as u8),
            level: ((hex >> 4) & 0xf) as u8,
            serial: (hex & 0xf) as u8,
        };
        // Plausibility: Python 3.x with a known release level (alpha, beta, rc, final).
        (v.major == 3 && matches!(v.level, 0xa..=0xc | 0xf)).then_some(v)
    }

    /// A version known only as major.minor (from a file name).
    pub fn major_minor(major: u8, minor: u8) -> Self {
        Self {
            major,
            minor,
            micro: None,
            level: 0xf,
            serial: 0,
        }
    }

    /// `(major, minor)`.
    pub fn mm(&self) -> (u8, u8) {
        (self.major, self.minor)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)?;
        if let Some(micro) = self.micro {
            write!(f, ".{micro}")?;
            match self.level {
                0xa => write!(f, "a{}", self.serial)?,
                0xb => write!(f, "b{}", self.serial)?,
                0xc => write!(f, "rc{}", self.serial)?,
                _ => {}
            }
        }
        Ok(())
    }
}

/// What a file name says about the interpreter: `python3.12`, `libpython3.13t.so.1.0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NameInfo {
    pub version: Version,
    /// The `t` ABI flag (free-threaded build), e.g. `python3.13t`.
    pub free_threaded: bool,
}

/// Parses `python3.X[abiflags]` or `libpython3.X[abiflags].so[.N.M]`; `None` for other names
/// (including a bare `python3`, which does not say the minor version).
pub fn parse_name(file_name: &str) -> Option<NameInfo> {
    let rest = file_name
        .strip_prefix("libpython")
        .or_else(|| file_name.strip_prefix("python"))?;
    let rest = rest.split(".so").next()?;
    let (major, rest) = rest.split_once('.')?;
    let major: u8 = major.parse().ok()?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let minor: u8 = rest[..digits].parse().ok()?;
    let flags = &rest[digits..];
    if !flags
        .bytes()
        .all(|b| matches!(b, b'd' | b'm' | b't' | b'u'))
    {
        return None;
    }
    Some(NameInfo {
        version: Version::major_minor(major, minor),
        free_threaded: flags.contains('t'),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_decodes() {
        let v = Version::from_hex(0x030c01f0).expect("3.12.1");
        assert_eq!(v.to_string(), "3.12.1");
        assert_eq!(
            Version::from_hex(0x030e00c1).expect("rc").to_string(),
            "3.14.0rc1"
        );
        assert_eq!(Version::from_hex(0), None);
    }

    #[test]
    fn names_parse() {
        let n = parse_name("libpython3.12.so.1.0").expect("lib");
        assert_eq!((n.version.mm(), n.free_threaded), ((3, 12), false));
        let n = parse_name("python3.13t").expect("exe");
        assert_eq!((n.version.mm(), n.free_threaded), ((3, 13), true));
        assert_eq!(
            parse_name("libpython3.13t.so").map(|n| n.free_threaded),
            Some(true)
        );
        assert_eq!(
            parse_name("python3.10").map(|n| n.version.to_string()),
            Some("3.10".into())
        );
        assert_eq!(parse_name("python3"), None);
        assert_eq!(parse_name("python3.12-config"), None);
        assert_eq!(parse_name("libpython3.so"), None);
    }
}
