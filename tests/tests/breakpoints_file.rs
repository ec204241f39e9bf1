//! The local breakpoints file: both formats, change detection, and "the last good set stays in
//! force" when the file turns malformed.
use libdebugger_agent::breakpoints::DesiredSet;
use libdebugger_agent::breakpoints::file::{FileError, FileStatus, load_file, watch_file};
use libdebugger_agent::breakpoints::problem;
use std::path::Path;
use std::time::Duration;
use tokio::sync::watch;

const TOML_V1: &str = r#"
[[breakpoint]]
file = "app/views.py"
line = 42

[[breakpoint]]
id = "checkout"
file = "app/checkout.py"
line = 7
condition = "total > 100"
"#;

async fn wait_set(
    rx: &mut watch::Receiver<DesiredSet>,
    what: &str,
    pred: impl FnMut(&DesiredSet) -> bool,
) -> DesiredSet {
    let res = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(pred))
        .await
        .map(|r| r.map(|s| s.clone()));
    match res {
        Ok(Ok(s)) => s,
        _ => panic!("timed out waiting for {what}; set is {:?}", *rx.borrow()),
    }
}

async fn wait_status(
    rx: &mut watch::Receiver<FileStatus>,
    what: &str,
    pred: impl FnMut(&FileStatus) -> bool,
) -> FileStatus {
    let res = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(pred))
        .await
        .map(|r| r.map(|s| s.clone()));
    match res {
        Ok(Ok(s)) => s,
        _ => panic!("timed out waiting for {what}; status is {:?}", *rx.borrow()),
    }
}

/// Replaces the file the way editors and config managers do: write a temp file, rename it over.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn toml_file_changes_are_picked_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("breakpoints.toml");
    std::fs::write(&path, TOML_V1).unwrap();
    let mut w = watch_file(&path).unwrap();
    {
        let set = w.desired.borrow();
        assert_eq!(set.len(), 2);
        let derived = set.get("app/views.py:42").unwrap();
        assert!(derived.enabled && derived.condition.is_none());
        assert_eq!(
            set.get("checkout").unwrap().condition.as_deref(),
            Some("total > 100")
        );
    }

    // Condition-only edit, in place.
    std::fs::write(&path, TOML_V1.replace("total > 100", "total > 500")).unwrap();
    wait_set(&mut w.desired, "the new condition", |s| {
        s.get("checkout").and_then(|b| b.condition.as_deref()) == Some("total > 500")
    })
    .await;

    // Disable one, by atomic replace.
    let disabled = TOML_V1.replace("line = 7\n", "line = 7\nenabled = false\n");
    replace(&path, &disabled);
    wait_set(&mut w.desired, "checkout disabled", |s| {
        s.get("checkout").is_some_and(|b| !b.enabled)
    })
    .await;

    // Malformed: reported, the last good set stays.
    let good = w.desired.borrow().clone();
    replace(&path, "[[breakpoint]]\nfile = \"x.py\"\nline = \"seven\"\n");
    let st = wait_status(&mut w.status, "the error", |s| s.last_error.is_some()).await;
    let err = st.last_error.unwrap();
    assert!(
        err.contains("breakpoints.toml") && err.contains("line"),
        "{err}"
    );
    assert_eq!(*w.desired.borrow(), good);

    // Delete one and fix the file: the error clears and the set follows.
    replace(
        &path,
        "[[breakpoint]]\nfile = \"app/views.py\"\nline = 42\n",
    );
    wait_set(&mut w.desired, "only views.py", |s| s.len() == 1).await;
    wait_status(&mut w.status, "the error cleared", |s| {
        s.last_error.is_none()
    })
    .await;
}

#[tokio::test]
async fn json_file_in_posthog_shape() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("active.json");
    std::fs::write(
        &path,
        r#"{"results": [{"id": "0190a6c5-1", "repository": "acme/shop", "filename": "app/x.py",
            "line_number": 3, "enabled": true, "condition": null}], "count": 1, "has_more": false}"#,
    )
    .unwrap();
    let mut w = watch_file(&path).unwrap();
    assert_eq!(w.desired.borrow().get("0190a6c5-1").unwrap().line, 3);
    std::fs::write(
        &path,
        r#"{"breakpoints": [{"id": "0190a6c5-1", "repository": "acme/shop", "filename": "app/x.py",
            "line_number": 3, "enabled": true, "condition": "a is None"}]}"#,
    )
    .unwrap();
    wait_set(&mut w.desired, "the condition", |s| {
        s.get("0190a6c5-1").and_then(|b| b.condition.as_deref()) == Some("a is None")
    })
    .await;
    std::fs::write(&path, r#"{"results": "#).unwrap();
    let st = wait_status(&mut w.status, "the error", |s| s.last_error.is_some()).await;
    assert!(st.last_error.unwrap().contains("active.json"));
    assert_eq!(w.desired.borrow().len(), 1);
}

#[test]
fn errors_name_the_file_and_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let err = load_file(&missing).unwrap_err();
    assert!(matches!(err, FileError::Read { .. }));
    assert!(err.to_string().contains("nope.toml"));

    let dup = dir.path().join("dup.toml");
    std::fs::write(
        &dup,
        "[[breakpoint]]\nfile=\"a.py\"\nline=1\n[[breakpoint]]\nfile=\"a.py\"\nline=1\n",
    )
    .unwrap();
    // An id defined twice is that breakpoint's error, not the file's.
    let set = load_file(&dup).unwrap();
    let err = set.get("a.py:1").unwrap().invalid.clone().unwrap();
    assert!(err.contains("a.py:1") && err.contains("twice"), "{err}");

    // Line 0 parses (PostHog accepts it) and is reported for that breakpoint.
    let zero = dir.path().join("zero.toml");
    std::fs::write(&zero, "[[breakpoint]]\nfile=\"a.py\"\nline=0\n").unwrap();
    let set = load_file(&zero).unwrap();
    let b = set.get("a.py:0").unwrap();
    assert!(problem(b, &[]).unwrap().contains("line 0"));
    assert!(b.source.ends_with("zero.toml"), "{b:?}");

    // No extension: JSON recognised by content.
    let bare = dir.path().join("bps");
    std::fs::write(&bare, r#"{"results": []}"#).unwrap();
    assert!(load_file(&bare).unwrap().is_empty());
}
