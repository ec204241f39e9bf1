//! Reading a source file as the target process sees it (`/proc/<pid>/root`, so a process in a
//! container shows its own file) and highlighting it line by line (syntect, Python grammar).
//! Callers check first that the process has code loaded from the file.
use std::path::PathBuf;
use std::sync::OnceLock;
use syntect::easy::HighlightLines;
use syntect::highlighting::{Theme, ThemeSet};
use syntect::html::{IncludeBackground, styled_line_to_highlighted_html};
use syntect::parsing::SyntaxSet;
use syntect::util::LinesWithEndings;

/// Largest file shown.
const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;
/// Files longer than this are shown without highlighting (it costs ~µs per line).
const MAX_HIGHLIGHTED_LINES: usize = 20_000;

/// Errors reading a source file.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The file cannot be read through the process's root.
    #[error("cannot read {path} as pid {pid} sees it ({shown}): {source}")]
    Read {
        pid: i32,
        path: String,
        shown: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_FILE_BYTES`].
    #[error("{path} is {size} bytes, more than the {MAX_FILE_BYTES} the UI shows")]
    TooLarge { path: String, size: u64 },
}

/// A file, one HTML fragment per line.
pub struct Highlighted {
    pub path: String,
    pub lines: Vec<String>,
}

/// Where `path` (a `co_filename`) is on this host: under the process's root, or for a relative
/// name under its working directory.
fn host_path(pid: i32, path: &str) -> PathBuf {
    if path.starts_with('/') {
        PathBuf::from(format!("/proc/{pid}/root{path}"))
    } else {
        PathBuf::from(format!("/proc/{pid}/cwd")).join(path)
    }
}

pub fn read_highlighted(pid: i32, path: &str) -> Result<Highlighted, SourceError> {
    let shown = host_path(pid, path);
    let read_err = |source| SourceError::Read {
        pid,
        path: path.to_string(),
        shown: shown.clone(),
        source,
    };
    let size = std::fs::metadata(&shown).map_err(read_err)?.len();
    if size > MAX_FILE_BYTES {
        return Err(SourceError::TooLarge {
            path: path.to_string(),
            size,
        });
    }
    let bytes = std::fs::read(&shown).map_err(read_err)?;
    let text = String::from_utf8_lossy(&bytes);
    Ok(Highlighted {
        path: path.to_string(),
        lines: highlight(&text),
    })
}

fn syntax_and_theme() -> &'static (SyntaxSet, Theme) {
    static CELL: OnceLock<(SyntaxSet, Theme)> = OnceLock::new();
    CELL.get_or_init(|| {
        let themes = ThemeSet::load_defaults();
        let theme = themes
            .themes
            .get("InspiredGitHub")
            .or_else(|| themes.themes.values().next())
            .cloned()
            .unwrap_or_default();
        (SyntaxSet::load_defaults_newlines(), theme)
    })
}

/// One HTML fragment per line (escaped; highlighted with inline styles when short enough).
pub fn highlight(text: &str) -> Vec<String> {
    let n = text.lines().count();
    if n > MAX_HIGHLIGHTED_LINES {
        return text.lines().map(escape).collect();
    }
    let (syntaxes, theme) = syntax_and_theme();
    let syntax = syntaxes
        .find_syntax_by_extension("py")
        .unwrap_or_else(|| syntaxes.find_syntax_plain_text());
    let mut h = HighlightLines::new(syntax, theme);
    LinesWithEndings::from(text)
        .map(|line| {
            h.highlight_line(line, syntaxes)
                .ok()
                .and_then(|regions| {
                    styled_line_to_highlighted_html(&regions, IncludeBackground::No).ok()
                })
                // The line's newline ends up inside its last span.
                .map(|html| html.replace(['\n', '\r'], ""))
                .unwrap_or_else(|| escape(line.trim_end_matches(['\n', '\r'])))
        })
        .collect()
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_highlighted_and_escaped() {
        let lines = highlight("def f(x):\n    return x < 3  # <b>\n");
        assert_eq!(lines.len(), 2);
        assert!(lines[0].contains("<span"), "{}", lines[0]);
        assert!(lines[1].contains("&lt;b&gt;"), "{}", lines[1]);
        assert!(!lines[1].contains("<b>"));
        assert_eq!(
            host_path(7, "/srv/a.py"),
            PathBuf::from("/proc/7/root/srv/a.py")
        );
        assert_eq!(host_path(7, "a.py"), PathBuf::from("/proc/7/cwd/a.py"));
    }
}
