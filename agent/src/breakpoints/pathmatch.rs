//! Mapping a breakpoint's file to the absolute paths code objects carry.
//!
//! PostHog's filenames are repository-relative (`app/views.py`); a process sees
//! `/srv/app/releases/42/app/views.py` in `co_filename`. A breakpoint matches a path when the path
//! ends with the breakpoint's file **at a path-component boundary** (`app/views.py` matches
//! `/srv/app/views.py` but not `/srv/myapp/views.py`). Two optional settings narrow matching:
//!
//! * `source_roots`: only paths under one of these directories match.
//! * `repository`: the `owner/repo` this host runs; a breakpoint that names a different
//!   repository matches nothing (one that names none matches as usual).
//!
//! Two *different* files matching one breakpoint is an error ([`MatchError::Ambiguous`]), reported
//! as that breakpoint's status, never a guess.
use super::Breakpoint;
use std::path::{Component, Path, PathBuf};

/// Errors of [`PathMatcher::resolve`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MatchError {
    /// More than one distinct file matches the breakpoint's path.
    #[error(
        "breakpoint file {file:?} matches {} different files ({}); set `source_roots` or \
         `repository` in agent.toml, or use a longer path in the breakpoint",
        candidates.len(),
        candidates.join(", ")
    )]
    Ambiguous {
        /// The breakpoint's file as received.
        file: String,
        /// Every distinct absolute path that matched, sorted.
        candidates: Vec<String>,
    },
}

/// Decides whether a breakpoint applies to a source path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PathMatcher {
    /// Only paths under one of these directories match (empty = no restriction).
    pub source_roots: Vec<PathBuf>,
    /// The repository (`owner/repo`) this host runs, if configured.
    pub repository: Option<String>,
}

impl PathMatcher {
    /// A matcher with the given restrictions.
    pub fn new(source_roots: Vec<PathBuf>, repository: Option<String>) -> Self {
        Self {
            source_roots,
            repository,
        }
    }

    /// True when `path` (a code object's `co_filename`) is the file `bp` names.
    pub fn matches(&self, bp: &Breakpoint, path: &str) -> bool {
        if let (Some(mine), Some(theirs)) = (&self.repository, &bp.repository)
            && !mine.eq_ignore_ascii_case(theirs)
        {
            return false;
        }
        let path = Path::new(path);
        if !self.source_roots.is_empty() && !self.source_roots.iter().any(|r| path.starts_with(r)) {
            return false;
        }
        suffix_matches(&bp.file, path)
    }

    /// The single path among `candidates` that `bp` names: `Ok(None)` when none matches,
    /// [`MatchError::Ambiguous`] when two different paths do (the same path twice is one file).
    pub fn resolve<'a>(
        &self,
        bp: &Breakpoint,
        candidates: impl IntoIterator<Item = &'a str>,
    ) -> Result<Option<&'a str>, MatchError> {
        let mut found: Vec<&'a str> = candidates
            .into_iter()
            .filter(|c| self.matches(bp, c))
            .collect();
        found.sort_unstable();
        found.dedup();
        match found.len() {
            0 => Ok(None),
            1 => Ok(Some(found[0])),
            _ => Err(MatchError::Ambiguous {
                file: bp.file.clone(),
                candidates: found.into_iter().map(str::to_owned).collect(),
            }),
        }
    }
}

/// True when `path` ends with `file` at a component boundary. `file` may start with `./` or `/`
/// (an absolute `file` must then equal the path, compared component-wise).
pub fn suffix_matches(file: &str, path: &Path) -> bool {
    let want: Vec<Component<'_>> = Path::new(file)
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect();
    if want.is_empty() {
        return false;
    }
    if matches!(want.first(), Some(Component::RootDir)) {
        let have: Vec<Component<'_>> = path.components().collect();
        return have == want;
    }
    let have: Vec<Component<'_>> = path
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect();
    have.len() >= want.len() && have[have.len() - want.len()..] == want[..]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bp(file: &str, repo: Option<&str>) -> Breakpoint {
        Breakpoint {
            id: "x".into(),
            file: file.into(),
            line: 1,
            condition: None,
            enabled: true,
            repository: repo.map(Into::into),
            ..Default::default()
        }
    }

    #[test]
    fn suffix_at_component_boundary() {
        assert!(suffix_matches(
            "app/views.py",
            Path::new("/srv/app/views.py")
        ));
        assert!(suffix_matches(
            "./app/views.py",
            Path::new("/srv/app/views.py")
        ));
        assert!(!suffix_matches(
            "app/views.py",
            Path::new("/srv/myapp/views.py")
        ));
        assert!(!suffix_matches(
            "views.py",
            Path::new("/srv/app/oldviews.py")
        ));
        assert!(suffix_matches(
            "/srv/app/views.py",
            Path::new("/srv/app/views.py")
        ));
        assert!(!suffix_matches(
            "/app/views.py",
            Path::new("/srv/app/views.py")
        ));
        assert!(!suffix_matches("", Path::new("/srv/app/views.py")));
    }

    #[test]
    fn roots_repository_and_ambiguity() {
        let m = PathMatcher::new(vec!["/srv/a".into()], Some("acme/shop".into()));
        assert!(m.matches(&bp("x.py", None), "/srv/a/x.py"));
        assert!(!m.matches(&bp("x.py", None), "/srv/b/x.py"));
        assert!(m.matches(&bp("x.py", Some("ACME/shop")), "/srv/a/x.py"));
        assert!(!m.matches(&bp("x.py", Some("acme/other")), "/srv/a/x.py"));

        let open = PathMatcher::default();
        let b = bp("pkg/x.py", None);
        assert_eq!(
            open.resolve(&b, ["/a/pkg/x.py", "/a/pkg/x.py", "/a/y.py"]),
            Ok(Some("/a/pkg/x.py"))
        );
        assert_eq!(open.resolve(&b, ["/a/y.py"]), Ok(None));
        let err = open
            .resolve(&b, ["/b/pkg/x.py", "/a/pkg/x.py"])
            .unwrap_err();
        assert_eq!(
            err,
            MatchError::Ambiguous {
                file: "pkg/x.py".into(),
                candidates: vec!["/a/pkg/x.py".into(), "/b/pkg/x.py".into()]
            }
        );
        assert!(err.to_string().contains("source_roots"));
    }
}
