//! Several breakpoint sources at once (PostHog, files and directories, URLs): one merged
//! desired set. A breakpoint id that two sources define is an error status for that id (naming
//! both sources); the first source's entry stands for it.
use super::DesiredSet;
use tokio::sync::{mpsc, watch};

/// The merged set of every source, republished whenever one of them changes. Dropping it stops
/// merging (the sources themselves are kept alive by their owners).
pub struct Merged {
    /// The merged desired set.
    pub desired: watch::Receiver<DesiredSet>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Merged {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Merges `sets` in order: an id defined by more than one is marked invalid on the first.
pub fn merge_sets<'a>(sets: impl IntoIterator<Item = &'a DesiredSet>) -> DesiredSet {
    let mut out = DesiredSet::default();
    for set in sets {
        for (id, b) in &set.breakpoints {
            match out.breakpoints.get_mut(id) {
                Some(first) => {
                    first.invalid = Some(format!(
                        "breakpoint id {id:?} is defined by two sources ({} and {}); ids must \
                         be unique",
                        first.source, b.source
                    ));
                }
                None => {
                    out.breakpoints.insert(id.clone(), b.clone());
                }
            }
        }
    }
    out
}

/// Merges the sources' watch channels into one (must be called inside a tokio runtime).
pub fn merge(sources: Vec<watch::Receiver<DesiredSet>>) -> Merged {
    let initial = merge_sets(
        sources
            .iter()
            .map(|r| r.borrow().clone())
            .collect::<Vec<_>>()
            .iter(),
    );
    let (tx, desired) = watch::channel(initial);
    let (poke_tx, mut poke_rx) = mpsc::unbounded_channel::<()>();
    let mut tasks = Vec::with_capacity(sources.len() + 1);
    for mut rx in sources.iter().cloned() {
        let poke = poke_tx.clone();
        tasks.push(tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                if poke.send(()).is_err() {
                    break;
                }
            }
        }));
    }
    drop(poke_tx);
    tasks.push(tokio::spawn(async move {
        while poke_rx.recv().await.is_some() {
            while poke_rx.try_recv().is_ok() {}
            let sets: Vec<DesiredSet> = sources.iter().map(|r| r.borrow().clone()).collect();
            let merged = merge_sets(sets.iter());
            tx.send_if_modified(|cur| {
                let changed = *cur != merged;
                if changed {
                    *cur = merged;
                }
                changed
            });
        }
    }));
    Merged { desired, tasks }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::breakpoints::Breakpoint;

    fn set(source: &str, ids: &[&str]) -> DesiredSet {
        DesiredSet::from_breakpoints(ids.iter().map(|id| Breakpoint {
            id: (*id).into(),
            file: "a.py".into(),
            line: 1,
            enabled: true,
            ..Default::default()
        }))
        .with_source(source)
    }

    #[tokio::test]
    async fn sources_merge_and_a_shared_id_is_an_error() {
        let (a_tx, a) = watch::channel(set("posthog", &["x", "y"]));
        let (b_tx, b) = watch::channel(set("file b.toml", &["z"]));
        let mut m = merge(vec![a, b]);
        assert_eq!(m.desired.borrow().len(), 3);
        b_tx.send(set("file b.toml", &["z", "x"])).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), m.desired.changed())
            .await
            .unwrap()
            .unwrap();
        let merged = m.desired.borrow().clone();
        let x = merged.get("x").unwrap();
        assert_eq!(x.source, "posthog");
        let why = x.invalid.as_deref().unwrap();
        assert!(why.contains("posthog") && why.contains("b.toml"), "{why}");
        assert!(merged.get("z").unwrap().invalid.is_none());
        drop(a_tx);
    }
}
