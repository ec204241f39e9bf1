//! The test server itself validates like PostHog: a server that accepted anything would make the
//! delivery tests worthless. Each point cites the PostHog/posthog file that decides it.
use flate2::Compression;
use flate2::write::GzEncoder;
use libdebugger_tests::posthog_server::{self, Fault, PosthogServer};
use serde_json::{Value, json};
use std::io::Write;

fn gzip(v: &Value) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(v.to_string().as_bytes()).unwrap();
    e.finish().unwrap()
}

async fn post(server: &PosthogServer, body: Vec<u8>, gz: bool) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{}/batch/", server.url()))
        .header("Content-Type", "application/json")
        .body(body);
    if gz {
        req = req.header("Content-Encoding", "gzip");
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn ev(event: Option<&str>, distinct: Option<&str>) -> Value {
    let mut e = json!({"uuid": "0190a6c5-0000-7000-8000-000000000001",
        "timestamp": "2026-11-24T07:00:00Z", "properties": {}});
    if let Some(n) = event {
        e["event"] = json!(n);
    }
    if let Some(d) = distinct {
        e["distinct_id"] = json!(d);
    }
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_validation() {
    let server = PosthogServer::start().unwrap();
    let key = posthog_server::PROJECT_KEY;
    let good = json!({"api_key": key, "batch": [ev(Some("$x"), Some("d"))]});
    assert_eq!(post(&server, gzip(&good), true).await.0, 200);
    assert_eq!(
        post(&server, good.to_string().into_bytes(), false).await.0,
        200
    );

    let no_key = json!({"batch": [ev(Some("$x"), Some("d"))]});
    let (s, body) = post(&server, gzip(&no_key), true).await;
    assert_eq!(s, 400);
    assert!(body["detail"].as_str().unwrap().contains("api_key"));
    // rust/capture/src/token.rs: only the key's shape is checked at the edge. A well-formed key
    // nobody knows gets 200 and its events are dropped later; a malformed one gets 401.
    let wrong_key = json!({"api_key": "phc_other", "batch": [ev(Some("$x"), Some("d"))]});
    assert_eq!(post(&server, gzip(&wrong_key), true).await.0, 200);
    assert_eq!(server.dropped_events().len(), 1);
    for malformed in [
        "",
        "  ",
        "phx_personal_by_mistake",
        &"k".repeat(65),
        "ph\u{e9}c",
    ] {
        let b = json!({"api_key": malformed, "batch": [ev(Some("$x"), Some("d"))]});
        assert_eq!(post(&server, gzip(&b), true).await.0, 401, "{malformed:?}");
    }
    let no_event =
        json!({"api_key": key, "batch": [ev(Some("$x"), Some("d")), ev(None, Some("d"))]});
    assert_eq!(post(&server, gzip(&no_event), true).await.0, 400);
    let no_distinct = json!({"api_key": key, "batch": [ev(Some("$x"), None)]});
    assert_eq!(post(&server, gzip(&no_distinct), true).await.0, 400);
    // Gzip claimed but not sent.
    assert_eq!(
        post(&server, good.to_string().into_bytes(), true).await.0,
        400
    );
    // Over 20 MB.
    let huge = json!({"api_key": key, "batch": [ev(Some("$x"), Some("d"))], "pad": "a".repeat(21 * 1024 * 1024)});
    assert_eq!(post(&server, gzip(&huge), true).await.0, 413);

    // Only the two good batches were recorded; a rejected batch records nothing.
    assert_eq!(server.events().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breakpoints_auth_and_faults() {
    let server = PosthogServer::start().unwrap();
    server.set_breakpoints(vec![
        json!({"id": "a", "filename": "x.py", "line_number": 1, "enabled": true, "repository": null, "condition": null}),
        json!({"id": "b", "filename": "y.py", "line_number": 2, "enabled": false, "repository": null, "condition": null}),
    ]);
    let c = reqwest::Client::new();
    let get = |path: String, key: &'static str| {
        let c = c.clone();
        let url = format!("{}{path}", server.url());
        async move {
            let r = c.get(url).bearer_auth(key).send().await.unwrap();
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let base = format!(
        "/api/projects/{}/live_debugger_breakpoints/active/",
        server.project_id()
    );
    let (s, body) = get(base.clone(), posthog_server::PERSONAL_KEY).await;
    assert_eq!(s, 200);
    assert_eq!(
        body["results"].as_array().unwrap().len(),
        1,
        "enabled only by default"
    );
    // products/live_debugger/backend/api.py filters on `enabled` only when it is true:
    // `enabled=false` means all breakpoints, disabled ones included.
    let (s, body) = get(
        format!("{base}?enabled=false"),
        posthog_server::PERSONAL_KEY,
    )
    .await;
    assert_eq!((s, body["count"].as_u64()), (200, Some(2)));
    // The same endpoint takes the project secret key (ProjectSecretAPIKeyAuthentication).
    let (s, body) = get(base.clone(), posthog_server::PROJECT_SECRET_KEY).await;
    assert_eq!((s, body["count"].as_u64()), (200, Some(1)));
    let (s, body) = get(base.clone(), "phx_wrong").await;
    assert_eq!(s, 401);
    assert!(body["detail"].is_string());
    let (s, _) = get(
        "/api/projects/999/live_debugger_breakpoints/active/".into(),
        posthog_server::PERSONAL_KEY,
    )
    .await;
    assert_eq!(s, 403);
    let current = "/api/projects/@current/live_debugger_breakpoints/active/";
    let (s, _) = get(
        format!("{current}?token=phc_wrong"),
        posthog_server::PERSONAL_KEY,
    )
    .await;
    assert_eq!(s, 401);
    let (s, _) = get(
        format!("{current}?token={}", posthog_server::PROJECT_KEY),
        posthog_server::PERSONAL_KEY,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(server.current_without_token(), 0);
    let (s, _) = get(current.into(), posthog_server::PERSONAL_KEY).await;
    assert_eq!(s, 200);
    assert_eq!(server.current_without_token(), 1);

    server.fail_breakpoints(
        Fault::TooManyRequests {
            retry_after_secs: 3,
        },
        1,
    );
    let r = c
        .get(format!("{}{base}", server.url()))
        .bearer_auth(posthog_server::PERSONAL_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert_eq!(r.headers()["retry-after"], "3");
    server.fail_breakpoints(Fault::DropConnection, 1);
    let r = c
        .get(format!("{}{base}", server.url()))
        .bearer_auth(posthog_server::PERSONAL_KEY)
        .send()
        .await;
    assert!(r.is_err(), "the connection is dropped without an answer");
    let (s, _) = get(base, posthog_server::PERSONAL_KEY).await;
    assert_eq!(s, 200, "faults are one-shot");
}

async fn post_json(server: &PosthogServer, path: &str, body: Value) -> u16 {
    reqwest::Client::new()
        .post(format!("{}{path}", server.url()))
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// rust/feature-flags/src/api/errors.rs: the flags endpoint looks the key up and answers 401
/// (`TokenValidationError`) for one it does not know — what the agent verifies keys with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_endpoint_knows_the_project_key() {
    let server = PosthogServer::start().unwrap();
    let ok = json!({"api_key": posthog_server::PROJECT_KEY, "distinct_id": "d"});
    assert_eq!(post_json(&server, "/flags/?v=2", ok).await, 200);
    let unknown = json!({"api_key": "phc_other", "distinct_id": "d"});
    assert_eq!(post_json(&server, "/flags/?v=2", unknown).await, 401);
    assert_eq!(
        post_json(&server, "/flags/?v=2", json!({"distinct_id": "d"})).await,
        401
    );
}

/// A PostHog that retired the Live Debugger (its newest `products/live_debugger/backend/
/// models.py` says so; a migration deletes the breakpoint model): the active endpoint is gone,
/// capture stays. And PostHog's per-key REST limit answers 429 with `Retry-After`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retired_live_debugger_and_the_rate_limit() {
    let server = PosthogServer::start().unwrap();
    let url = format!(
        "{}/api/projects/{}/live_debugger_breakpoints/active/",
        server.url(),
        server.project_id()
    );
    let c = reqwest::Client::new();
    let get = || c.get(&url).bearer_auth(posthog_server::PERSONAL_KEY).send();
    server.set_rate_limit(Some(posthog_server::RateLimit {
        requests: 2,
        window: std::time::Duration::from_secs(60),
    }));
    assert_eq!(get().await.unwrap().status().as_u16(), 200);
    assert_eq!(get().await.unwrap().status().as_u16(), 200);
    let r = get().await.unwrap();
    assert_eq!(r.status().as_u16(), 429);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    server.set_rate_limit(None);
    server.set_retired(true);
    assert_eq!(get().await.unwrap().status().as_u16(), 404);
    let good =
        json!({"api_key": posthog_server::PROJECT_KEY, "batch": [ev(Some("$x"), Some("d"))]});
    assert_eq!(
        post(&server, gzip(&good), true).await.0,
        200,
        "capture stays"
    );
    server.set_retired(false);
    assert_eq!(get().await.unwrap().status().as_u16(), 200);
}

/// The static files `--breakpoints-url` polls: `ETag` / `If-None-Match` and a bearer token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_files_with_etags() {
    let server = PosthogServer::start().unwrap();
    server.set_static("/bps.json", Some(r#"{"results": []}"#), Some("tok"));
    let c = reqwest::Client::new();
    let url = format!("{}/bps.json", server.url());
    assert_eq!(c.get(&url).send().await.unwrap().status().as_u16(), 401);
    let r = c.get(&url).bearer_auth("tok").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    let again = c
        .get(&url)
        .bearer_auth("tok")
        .header("If-None-Match", &etag);
    assert_eq!(again.send().await.unwrap().status().as_u16(), 304);
    server.set_static("/bps.json", Some(r#"{"results": [ ]}"#), Some("tok"));
    let changed = c
        .get(&url)
        .bearer_auth("tok")
        .header("If-None-Match", &etag);
    assert_eq!(changed.send().await.unwrap().status().as_u16(), 200);
}
