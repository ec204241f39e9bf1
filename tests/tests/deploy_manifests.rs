//! `deploy/`: the Kubernetes manifests validate against Kubernetes 1.37's schema (strict: no
//! unknown fields) with `kubernetes-validate` (installed by `cargo xtask test`, found through
//! `LIBDEBUGGER_KUBERNETES_VALIDATE`), and say the same as the systemd unit and the README: the
//! same capabilities, resource requests that cover the B6 figures.
use anyhow::{Context, Result, ensure};
use libdebugger_tests::agent::workspace_root;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn deploy(rel: &str) -> PathBuf {
    workspace_root().join("deploy").join(rel)
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn manifests() -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(deploy("kubernetes"))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    Ok(files)
}

/// `kubernetes-validate --strict -k 1.37.0 FILES`: (success, output).
fn validate(validator: &Path, files: &[PathBuf]) -> Result<(bool, String)> {
    let out = Command::new(validator)
        .args(["--strict", "--kubernetes-version", "1.37.0"])
        .args(files)
        .output()
        .with_context(|| format!("running {}", validator.display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

#[test]
fn the_manifests_validate_and_a_broken_one_does_not() -> Result<()> {
    let Some(validator) = std::env::var_os("LIBDEBUGGER_KUBERNETES_VALIDATE").map(PathBuf::from)
    else {
        eprintln!(
            "skipping: LIBDEBUGGER_KUBERNETES_VALIDATE unset: run through `cargo xtask test`, which installs kubernetes-validate"
        );
        return Ok(());
    };
    let files = manifests()?;
    let kinds = [
        "Namespace",
        "ServiceAccount",
        "ConfigMap",
        "Secret",
        "DaemonSet",
    ];
    let all = files
        .iter()
        .map(|f| read(f))
        .collect::<Result<Vec<_>>>()?
        .concat();
    for kind in kinds {
        ensure!(
            all.contains(&format!("kind: {kind}\n")),
            "no {kind} in deploy/kubernetes/"
        );
    }
    let (ok, out) = validate(&validator, &files)?;
    ensure!(ok, "the manifests do not validate:\n{out}");
    ensure!(
        out.matches(" passed ").count() == files.len(),
        "not every manifest was checked:\n{out}"
    );
    // The validator rejects what is wrong: a misspelt field and a malformed quantity.
    let dir = tempfile::tempdir()?;
    let ds = read(&deploy("kubernetes/daemonset.yaml"))?;
    for (name, broken) in [
        ("typo.yaml", ds.replace("hostPID: true", "hostPid: true")),
        (
            "quantity.yaml",
            ds.replace("memory: 32Mi", "memory: [32Mi]"),
        ),
    ] {
        ensure!(broken != ds, "{name}: the text to break was not found");
        let path = dir.path().join(name);
        std::fs::write(&path, broken)?;
        let (ok, out) = validate(&validator, &[path])?;
        ensure!(!ok, "{name} validated:\n{out}");
    }
    Ok(())
}

/// `CAP_X` names in the unit's `CapabilityBoundingSet=`.
fn unit_capabilities() -> Result<BTreeSet<String>> {
    let unit = read(&deploy("systemd/libdebugger-agent.service"))?;
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .context("no CapabilityBoundingSet= in the unit")?;
    Ok(line.split_whitespace().map(str::to_owned).collect())
}

#[test]
fn the_daemonset_has_the_units_capabilities_and_covers_b6() -> Result<()> {
    let ds = read(&deploy("kubernetes/daemonset.yaml"))?;
    // `add:` then `- NAME  # why` lines.
    let add = ds
        .split_once("add:\n")
        .context("no capabilities add: list")?
        .1;
    let added: BTreeSet<String> = add
        .lines()
        .map_while(|l| l.trim_start().strip_prefix("- "))
        .map(|l| format!("CAP_{}", l.split_whitespace().next().unwrap_or_default()))
        .collect();
    ensure!(
        added == unit_capabilities()?,
        "DaemonSet adds {added:?}, the unit allows {:?}",
        unit_capabilities()?
    );
    ensure!(ds.contains("drop: [\"ALL\"]") && ds.contains("hostPID: true"));
    // README's B6 row: "RSS a / b / c MB" — the memory request covers the largest.
    let readme = read(&workspace_root().join("README.md"))?;
    let b6 = readme
        .lines()
        .find(|l| l.starts_with("| B6 |"))
        .context("no B6 row in the README")?;
    let rss = b6
        .split_once("RSS ")
        .and_then(|(_, r)| r.split_once(" MB"))
        .context("no RSS figures in the B6 row")?
        .0;
    let max_mb = rss
        .split(" / ")
        .map(|n| n.trim().parse::<f64>())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("B6 RSS figures {rss:?}"))?
        .into_iter()
        .fold(0.0, f64::max);
    let request_mi: f64 = ds
        .split_once("requests:")
        .and_then(|(_, r)| r.split_once("memory: "))
        .and_then(|(_, r)| r.split_once("Mi"))
        .context("no memory request")?
        .0
        .trim()
        .parse()?;
    let request_mb = request_mi * 1024.0 * 1024.0 / 1e6;
    ensure!(
        request_mb >= max_mb,
        "memory request {request_mi} Mi is below B6's {max_mb} MB"
    );
    Ok(())
}
