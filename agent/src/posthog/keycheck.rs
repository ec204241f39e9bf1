//! Is the project API key one PostHog knows? Capture does not say: it accepts any well-formed
//! key (`rust/capture/src/token.rs` in PostHog/posthog checks only its shape: not empty, ASCII,
//! at most 64 characters, not a `phx_` personal key) and drops the events of an unknown one
//! later, so a wrong or other-region key would fail silently. The feature-flag endpoint does
//! look the key up: `POST /flags/?v=2` answers 401 for a key it does not know
//! (`rust/feature-flags/src/api/errors.rs`: `FlagError::TokenValidationError` → 401) and 200
//! for a known one. The personal key is verified by the active-breakpoints endpoint itself
//! (its 401/403, [`super::poller`]).
use super::config::Secret;
use crate::delivery::sinks::{error_chain, http_client};
use std::time::Duration;

/// What the check found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum KeyStatus {
    /// Not checked yet.
    #[default]
    Pending,
    /// PostHog knows the key.
    Valid,
    /// PostHog does not know the key: the message names the setting to fix.
    Invalid(String),
    /// The check could not tell (network, an unexpected answer); the agent sends anyway.
    Unverified(String),
}

impl KeyStatus {
    /// `ok`, `invalid`, `unverified` or `pending`, and the message.
    pub fn parts(&self) -> (&'static str, Option<&str>) {
        match self {
            KeyStatus::Pending => ("pending", None),
            KeyStatus::Valid => ("ok", None),
            KeyStatus::Invalid(m) => ("invalid", Some(m)),
            KeyStatus::Unverified(m) => ("unverified", Some(m)),
        }
    }
}

/// The `distinct_id` of the check's flags request (no event is captured by it).
const CHECK_DISTINCT_ID: &str = "libdebugger-key-check";

/// Asks `{ingest_host}/flags/?v=2` whether it knows `api_key`.
pub async fn check_project_key(ingest_host: &str, api_key: &Secret) -> KeyStatus {
    let url = format!("{}/flags/?v=2", ingest_host.trim_end_matches('/'));
    let client = match http_client(Duration::from_secs(10)) {
        Ok(c) => c,
        Err(e) => return KeyStatus::Unverified(format!("cannot create an HTTP client: {e}")),
    };
    let body = serde_json::json!({"api_key": api_key.expose(), "distinct_id": CHECK_DISTINCT_ID});
    let resp = match client.post(&url).json(&body).send().await {
        Ok(r) => r,
        Err(e) => {
            return KeyStatus::Unverified(format!(
                "could not verify POSTHOG_API_KEY: POST {url}: {}",
                error_chain(&e.without_url())
            ));
        }
    };
    let code = resp.status().as_u16();
    match code {
        200..=299 => KeyStatus::Valid,
        401 | 403 => KeyStatus::Invalid(format!(
            "PostHog does not know the project API key (HTTP {code} from POST {url}): fix \
             POSTHOG_API_KEY (the project key phc_… from Project settings) or POSTHOG_HOST (a \
             key of one region is unknown in the other); PostHog accepts events sent with this \
             key and then drops them"
        )),
        _ => KeyStatus::Unverified(format!(
            "could not verify POSTHOG_API_KEY: POST {url} answered HTTP {code}"
        )),
    }
}
