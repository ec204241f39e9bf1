//! The example `/etc/libdebugger/agent.toml` the package installs (`deploy/agent.toml`): as
//! shipped (every key commented out) it means local mode with the defaults; with its examples
//! uncommented every key it documents is one the agent knows.
use libdebugger_agent::posthog::PosthogArgs;
use libdebugger_agent::posthog::config::{Mode, resolve_with_file};
use std::path::Path;

const EXAMPLE: &str = include_str!("../../deploy/agent.toml");

fn resolve(text: &str) -> libdebugger_agent::posthog::config::AgentSettings {
    let no_env = |_: &str| None;
    resolve_with_file(
        &PosthogArgs::default(),
        &no_env,
        Some((Path::new("/etc/libdebugger/agent.toml"), text)),
    )
    .unwrap_or_else(|e| panic!("the example config does not load: {e}\n{text}"))
}

#[test]
fn the_example_config_as_shipped_is_local_mode_without_warnings() {
    let s = resolve(EXAMPLE);
    assert!(matches!(s.mode, Mode::Local), "{:?}", s.mode);
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
}

#[test]
fn every_key_the_example_documents_is_known_to_the_agent() {
    // `# [section]` and `# key = value  # comment` lines become TOML; prose stays a comment.
    let uncommented: String = EXAMPLE
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest)
                if rest.starts_with('[')
                    || rest.split_once(" = ").is_some_and(|(k, _)| {
                        k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                    }) =>
            {
                rest.to_string()
            }
            _ => l.to_string(),
        })
        .map(|l| l + "\n")
        .collect();
    assert!(
        uncommented.matches("\n[").count() >= 4,
        "sections not found:\n{uncommented}"
    );
    let s = resolve(&uncommented);
    assert!(s.warnings.is_empty(), "unknown keys: {:?}", s.warnings);
    assert!(matches!(s.mode, Mode::PostHog(_)), "{:?}", s.mode);
    assert_eq!(s.nice, -5);
}
