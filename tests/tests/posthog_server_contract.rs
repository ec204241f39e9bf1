//! The test server itself validates like PostHog: a server that accepted anything would make the
//! delivery tests worthless.
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
    let wrong_key = json!({"api_key": "phc_other", "batch": [ev(Some("$x"), Some("d"))]});
    assert_eq!(post(&server, gzip(&wrong_key), true).await.0, 401);
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
    let (s, body) = get(
        format!("{base}?enabled=false"),
        posthog_server::PERSONAL_KEY,
    )
    .await;
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
