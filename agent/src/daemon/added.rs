//! The breakpoints added with `break add` or the web UI, kept across restarts of an agent that
//! runs from a breakpoints file ([`crate::paths::added_breakpoints_file`]). A store that cannot be
//! read or written is a warning: the breakpoints stay in force in memory.
use crate::breakpoints::Breakpoint;
use std::collections::BTreeMap;
use std::path::Path;

/// The stored set (empty without a store, or when it does not exist yet).
pub fn load(store: Option<&Path>) -> BTreeMap<String, Breakpoint> {
    let Some(path) = store else {
        return BTreeMap::new();
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return BTreeMap::new(),
        Err(e) => {
            tracing::warn!("cannot read the added breakpoints {}: {e}", path.display());
            return BTreeMap::new();
        }
    };
    match serde_json::from_str::<Vec<Breakpoint>>(&text) {
        Ok(list) => {
            tracing::info!(
                breakpoints = list.len(),
                "breakpoints added from the CLI or the web UI restored from {}",
                path.display()
            );
            list.into_iter().map(|b| (b.id.clone(), b)).collect()
        }
        Err(e) => {
            tracing::warn!(
                "ignoring the malformed added breakpoints {}: {e}",
                path.display()
            );
            BTreeMap::new()
        }
    }
}

/// Replaces the stored set with `set` (written to a temporary file, then renamed).
pub fn save(store: Option<&Path>, set: &BTreeMap<String, Breakpoint>) {
    let Some(path) = store else { return };
    if let Err(e) = write(path, set) {
        tracing::warn!(
            "cannot keep the added breakpoints in {} (they stay in force until the agent stops): {e}",
            path.display()
        );
    }
}

fn write(path: &Path, set: &BTreeMap<String, Breakpoint>) -> std::io::Result<()> {
    let list: Vec<&Breakpoint> = set.values().collect();
    crate::paths::write_private(path, &serde_json::to_vec_pretty(&list)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_saved_set_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/added/x.json");
        assert!(load(Some(&path)).is_empty());
        let b = Breakpoint {
            id: "/srv/cart.py:40".into(),
            file: "/srv/cart.py".into(),
            line: 40,
            condition: Some("subtotal > 50".into()),
            enabled: true,
            repository: None,
            source: "cli".into(),
            invalid: None,
            message: None,
            rate: None,
        };
        // A logpoint added with `log add` keeps its action across a restart too.
        let log = Breakpoint {
            id: "cart-log".into(),
            message: Some("subtotal={subtotal}".into()),
            rate: Some(5),
            ..b.clone()
        };
        let set: BTreeMap<_, _> = [(b.id.clone(), b.clone()), (log.id.clone(), log)].into();
        save(Some(&path), &set);
        assert_eq!(load(Some(&path)), set);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::write(&path, "not json").unwrap();
        assert!(load(Some(&path)).is_empty());
        assert!(load(None).is_empty());
    }
}
