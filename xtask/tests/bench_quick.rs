//! `cargo xtask bench --quick --only B2 --no-build`: runs on the real interpreters (B2's
//! plain-Python reference needs nothing else) and writes a report of the documented shape.
use serde_json::Value;
use std::process::Command;

#[test]
fn quick_b2_writes_a_complete_report() {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let any_python = ["3.11.7", "3.12.1", "3.13.0"]
        .iter()
        .any(|v| std::path::Path::new(&format!("{home}/.pyenv/versions/{v}/bin/python3")).exists());
    if !any_python {
        eprintln!(
            "skipping: no pyenv CPython 3.11.7/3.12.1/3.13.0 under {home}/.pyenv (B2 needs one)"
        );
        return;
    }
    let out = tempfile::tempdir().expect("tempdir");
    let status = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["bench", "--quick", "--no-build", "--only", "b2", "--out"])
        .arg(out.path())
        .status()
        .expect("run xtask bench");
    assert!(status.success(), "xtask bench failed: {status}");

    let text = std::fs::read_to_string(out.path().join("report.json")).expect("report.json");
    let report: Value = serde_json::from_str(&text).expect("report.json is JSON");
    assert_eq!(report["schema"], 1);
    assert_eq!(report["quick"], true);
    for key in ["kernel", "cpu_model", "date", "git_commit"] {
        assert!(
            report["machine"][key]
                .as_str()
                .is_some_and(|s| !s.is_empty()),
            "machine.{key} missing: {}",
            report["machine"]
        );
    }
    assert!(report["machine"]["cores"].as_u64().is_some_and(|n| n > 0));

    let rows = report["rows"].as_array().expect("rows");
    // 3 frame sizes × (snapshot + plain reference) × 3 interpreters.
    assert_eq!(rows.len(), 18, "{rows:#?}");
    assert!(rows.iter().all(|r| r["figure"] == "B2"));
    let mut plain_measured = 0;
    for r in rows {
        let verdict = r["verdict"].as_str().expect("verdict");
        assert!(["PASS", "MISS", "N/A", "INFO"].contains(&verdict), "{r}");
        assert!(r["target"].as_str().is_some_and(|t| !t.is_empty()), "{r}");
        if verdict == "N/A" {
            // Never a number without a measurement, always a reason.
            assert!(r["value"].is_null(), "{r}");
            assert!(r["notes"][0].as_str().is_some_and(|n| !n.is_empty()), "{r}");
            continue;
        }
        let median = r["median"].as_f64().expect("median");
        let p99 = r["p99"].as_f64().expect("p99");
        assert!(median > 0.0 && p99 >= median, "{r}");
        assert_eq!(r["value"].as_f64(), Some(median));
        assert!(r["runs"].as_u64().is_some_and(|n| n >= 1), "{r}");
        if r["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("plain-Python"))
        {
            assert_eq!(r["unit"], "µs");
            assert_eq!(r["raw"]["stack_depth"], 20, "{r}");
            plain_measured += 1;
        }
    }
    assert!(
        plain_measured >= 3,
        "plain-Python reference rows were not measured"
    );
    let md = std::fs::read_to_string(out.path().join("report.md")).expect("report.md");
    assert!(md.contains("| B2"), "{md}");
}
