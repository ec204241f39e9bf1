//! Configuration: flags > environment > file, derived hosts, local mode, and error messages that
//! name the setting.
use libdebugger_agent::posthog::config::{ConfigError, resolve, resolve_with_file};
use libdebugger_agent::posthog::{Mode, PosthogArgs, ProjectId};
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| map.get(k).cloned()
}

const FILE: &str = r#"
[posthog]
host = "https://eu.posthog.com"
api_key = "phc_from_file"
personal_api_key = "phx_from_file"
project_id = 111
poll_interval_secs = 30
distinct_id = "file-host"

[breakpoints]
source_roots = ["/srv/app"]
repository = "acme/shop"

[delivery]
batch_size = 50
flush_interval_ms = 250
spool_max_bytes = 10485760

[capture]
max_depth = 3
max_string = 256

[redaction]
names = ["password", "token"]
"#;

fn posthog(mode: &Mode) -> &libdebugger_agent::posthog::PosthogSettings {
    match mode {
        Mode::PostHog(p) => p,
        Mode::Local => panic!("expected PostHog mode"),
    }
}

#[test]
fn the_file_alone() {
    let s = resolve_with_file(
        &PosthogArgs::default(),
        &env(&[]),
        Some((Path::new("/etc/libdebugger/agent.toml"), FILE)),
    )
    .unwrap();
    let p = posthog(&s.mode);
    assert_eq!(p.api_host, "https://eu.posthog.com");
    assert_eq!(p.ingest_host, "https://eu.i.posthog.com");
    assert_eq!(p.api_key.expose(), "phc_from_file");
    assert_eq!(
        p.breakpoints.as_ref().unwrap().project_id,
        ProjectId::Numeric(111)
    );
    assert_eq!(p.poll_interval, Duration::from_secs(30));
    assert_eq!(s.distinct_id, "file-host");
    assert_eq!(
        s.path_matcher.source_roots,
        vec![Path::new("/srv/app").to_owned()]
    );
    assert_eq!(s.path_matcher.repository.as_deref(), Some("acme/shop"));
    assert_eq!(s.delivery.batch_size, 50);
    assert_eq!(s.delivery.flush_interval, Duration::from_millis(250));
    assert_eq!(s.delivery.spool_max_bytes, 10 * 1024 * 1024);
    assert_eq!(s.capture["max_depth"], 3);
    assert_eq!(s.redaction["names"][1], "token");
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    // Keys never show in Debug output.
    let dbg = format!("{s:?}");
    assert!(
        !dbg.contains("phc_from_file") && !dbg.contains("phx_from_file"),
        "{dbg}"
    );
}

#[test]
fn flags_beat_env_beat_file() {
    let file = Some((Path::new("agent.toml"), FILE));
    let e = env(&[
        ("POSTHOG_HOST", "https://us.i.posthog.com"),
        ("POSTHOG_API_KEY", "phc_from_env"),
        ("POSTHOG_PROJECT_ID", "@current"),
        ("LIBDEBUGGER_POLL_INTERVAL", "5"),
        ("LIBDEBUGGER_DISTINCT_ID", ""),
    ]);
    let s = resolve_with_file(&PosthogArgs::default(), &e, file).unwrap();
    let p = posthog(&s.mode);
    // From the environment.
    assert_eq!(p.api_host, "https://us.posthog.com");
    assert_eq!(p.ingest_host, "https://us.i.posthog.com");
    assert_eq!(p.api_key.expose(), "phc_from_env");
    assert_eq!(
        p.breakpoints.as_ref().unwrap().project_id,
        ProjectId::Current
    );
    assert_eq!(p.poll_interval, Duration::from_secs(5));
    // Not in the environment (an empty value counts as unset): from the file.
    assert_eq!(
        p.breakpoints.as_ref().unwrap().personal_api_key.expose(),
        "phx_from_file"
    );
    assert_eq!(s.distinct_id, "file-host");

    let args = PosthogArgs {
        posthog_host: Some("http://posthog.internal:8000/".into()),
        posthog_api_key: Some("phc_from_flag".into()),
        posthog_project_id: Some("222".into()),
        poll_interval: Some(0.5),
        distinct_id: Some("flag-host".into()),
        source_roots: vec!["/opt/x".into()],
        ..Default::default()
    };
    let s = resolve_with_file(&args, &e, file).unwrap();
    let p = posthog(&s.mode);
    assert_eq!(p.api_host, "http://posthog.internal:8000");
    assert_eq!(
        p.ingest_host, "http://posthog.internal:8000",
        "self-hosted: one host"
    );
    assert_eq!(p.api_key.expose(), "phc_from_flag");
    assert_eq!(
        p.breakpoints.as_ref().unwrap().project_id,
        ProjectId::Numeric(222)
    );
    assert_eq!(p.poll_interval, Duration::from_millis(500));
    assert_eq!(s.distinct_id, "flag-host");
    assert_eq!(
        s.path_matcher.source_roots,
        vec![Path::new("/opt/x").to_owned()]
    );
}

#[test]
fn host_overrides() {
    let e = env(&[
        ("POSTHOG_API_KEY", "phc_a"),
        ("POSTHOG_PERSONAL_API_KEY", "phx_b"),
        ("POSTHOG_PROJECT_ID", "1"),
        ("POSTHOG_HOST", "eu.posthog.com"),
        ("POSTHOG_INGEST_HOST", "https://ingest.example.com"),
    ]);
    let s = resolve_with_file(&PosthogArgs::default(), &e, None).unwrap();
    let p = posthog(&s.mode);
    assert_eq!(p.api_host, "https://eu.posthog.com");
    assert_eq!(p.ingest_host, "https://ingest.example.com");
    // No host at all: PostHog Cloud US, as the SDKs default.
    let e = env(&[
        ("POSTHOG_API_KEY", "phc_a"),
        ("POSTHOG_PERSONAL_API_KEY", "phx_b"),
        ("POSTHOG_PROJECT_ID", "1"),
    ]);
    let s = resolve_with_file(&PosthogArgs::default(), &e, None).unwrap();
    assert_eq!(posthog(&s.mode).ingest_host, "https://us.i.posthog.com");
}

#[test]
fn no_credentials_means_local_mode_with_defaults() {
    let s = resolve_with_file(&PosthogArgs::default(), &env(&[]), None).unwrap();
    assert_eq!(s.mode, Mode::Local);
    assert!(
        s.distinct_id.starts_with("libdebugger-"),
        "{}",
        s.distinct_id
    );
    assert_eq!(s.delivery.batch_size, 100);
    assert_eq!(s.delivery.flush_interval, Duration::from_secs(1));
    assert_eq!(s.delivery.spool_max_bytes, 256 * 1024 * 1024);
    assert_eq!(s.delivery.spool_dir, libdebugger_agent::paths::spool_dir());
    assert!(s.capture.as_object().unwrap().is_empty());
}

#[test]
fn the_project_key_alone_sends_to_posthog_and_phs_keys_read_breakpoints() {
    let s = resolve_with_file(
        &PosthogArgs::default(),
        &env(&[("POSTHOG_API_KEY", "phc_a")]),
        None,
    )
    .unwrap();
    let Mode::PostHog(p) = &s.mode else {
        panic!("{s:?}")
    };
    assert_eq!(p.breakpoints, None, "breakpoints come from elsewhere");
    assert_eq!(
        p.poll_interval,
        Duration::from_secs(30),
        "the default interval"
    );
    let s = resolve_with_file(
        &PosthogArgs::default(),
        &env(&[
            ("POSTHOG_API_KEY", "phc_a"),
            ("POSTHOG_PERSONAL_API_KEY", "phs_project_secret"),
            ("POSTHOG_PROJECT_ID", "3"),
        ]),
        None,
    )
    .unwrap();
    let Mode::PostHog(p) = &s.mode else {
        panic!("{s:?}")
    };
    let b = p.breakpoints.as_ref().unwrap();
    assert_eq!(b.personal_api_key.expose(), "phs_project_secret");
    assert!(
        s.warnings.is_empty(),
        "a phs_ key is not unusual: {:?}",
        s.warnings
    );
}

fn err_of(pairs: &[(&str, &str)]) -> String {
    match resolve_with_file(&PosthogArgs::default(), &env(pairs), None) {
        Ok(s) => panic!("expected an error, got {s:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn partial_or_inconsistent_settings_name_the_setting() {
    let e = err_of(&[
        ("POSTHOG_PERSONAL_API_KEY", "phx_a"),
        ("POSTHOG_API_KEY", "phc_b"),
    ]);
    assert!(e.starts_with("POSTHOG_PROJECT_ID is not set"), "{e}");
    assert!(
        e.contains("--posthog-project-id") && e.contains("posthog.project_id"),
        "{e}"
    );

    let e = err_of(&[
        ("POSTHOG_PERSONAL_API_KEY", "phx_a"),
        ("POSTHOG_PROJECT_ID", "3"),
    ]);
    assert!(e.starts_with("POSTHOG_API_KEY is not set"), "{e}");

    let e = err_of(&[("POSTHOG_API_KEY", "phc_a"), ("POSTHOG_PROJECT_ID", "3")]);
    assert!(
        e.starts_with("POSTHOG_PERSONAL_API_KEY is not set") && e.contains("live_debugger:read"),
        "{e}"
    );
    // A phc_ key where the personal key goes, and a project secret key as the project key.
    let e = err_of(&[
        ("POSTHOG_API_KEY", "phc_a"),
        ("POSTHOG_PERSONAL_API_KEY", "phc_b"),
        ("POSTHOG_PROJECT_ID", "3"),
    ]);
    assert!(
        e.contains("POSTHOG_PERSONAL_API_KEY") && e.contains("phs_"),
        "{e}"
    );
    let e = err_of(&[("POSTHOG_API_KEY", "phs_secret")]);
    assert!(
        e.contains("project secret key") && !e.contains("secret_"),
        "{e}"
    );

    let e = err_of(&[
        ("POSTHOG_API_KEY", "phx_swapped"),
        ("POSTHOG_PERSONAL_API_KEY", "phx_a"),
        ("POSTHOG_PROJECT_ID", "3"),
    ]);
    assert!(
        e.contains("POSTHOG_API_KEY") && e.contains("personal API key"),
        "{e}"
    );
    assert!(!e.contains("swapped"), "the key itself is not echoed: {e}");

    let e = err_of(&[
        ("POSTHOG_API_KEY", "phc_a"),
        ("POSTHOG_PERSONAL_API_KEY", "phx_a"),
        ("POSTHOG_PROJECT_ID", "my-project"),
    ]);
    assert!(
        e.contains("POSTHOG_PROJECT_ID") && e.contains("@current"),
        "{e}"
    );

    let e = err_of(&[
        ("POSTHOG_API_KEY", "phc_a"),
        ("POSTHOG_PERSONAL_API_KEY", "phx_a"),
        ("POSTHOG_PROJECT_ID", "3"),
        ("POSTHOG_HOST", "ftp://x"),
    ]);
    assert!(e.contains("POSTHOG_HOST"), "{e}");

    let e = err_of(&[("LIBDEBUGGER_POLL_INTERVAL", "often")]);
    assert!(e.contains("LIBDEBUGGER_POLL_INTERVAL"), "{e}");
}

#[test]
fn unknown_keys_are_warnings_naming_the_key() {
    let text = "[posthog]\nhots = \"x\"\n[delivery]\nbatch_size = 10\nspool_max = 5\n[weird]\na = 1\n[capture]\nanything = 1\n";
    let s = resolve_with_file(
        &PosthogArgs::default(),
        &env(&[]),
        Some((Path::new("a.toml"), text)),
    )
    .unwrap();
    let w = s.warnings.join("\n");
    assert!(w.contains("`posthog.hots`"), "{w}");
    assert!(w.contains("`delivery.spool_max`"), "{w}");
    assert!(w.contains("`weird`"), "{w}");
    assert!(!w.contains("anything"), "capture is passed through: {w}");
    assert_eq!(s.warnings.len(), 3);
    assert_eq!(s.delivery.batch_size, 10);
}

#[test]
fn file_errors() {
    let bad = resolve_with_file(
        &PosthogArgs::default(),
        &env(&[]),
        Some((
            Path::new("/etc/libdebugger/agent.toml"),
            "[delivery]\nbatch_size = \"many\"\n",
        )),
    )
    .unwrap_err();
    assert!(matches!(bad, ConfigError::ParseFile { .. }));
    assert!(
        bad.to_string().contains("/etc/libdebugger/agent.toml"),
        "{bad}"
    );

    // An explicitly named file must exist; the default one may be absent.
    let args = PosthogArgs {
        config_file: Some(Path::new("/nonexistent/agent.toml").into()),
        ..Default::default()
    };
    let e = resolve(&args, &env(&[])).unwrap_err();
    assert!(matches!(e, ConfigError::ReadFile { .. }), "{e}");
    assert!(e.to_string().contains("/nonexistent/agent.toml"));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, FILE).unwrap();
    let e = env(&[("LIBDEBUGGER_CONFIG", path.to_str().unwrap())]);
    let s = resolve(&PosthogArgs::default(), &e).unwrap();
    assert_eq!(s.config_file.as_deref(), Some(path.as_path()));
    assert_eq!(
        posthog(&s.mode).breakpoints.as_ref().unwrap().project_id,
        ProjectId::Numeric(111)
    );
}
