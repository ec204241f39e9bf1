//! `--breakpoints-url`: a URL serving the JSON of PostHog's active endpoint, polled with
//! `ETag` / `If-None-Match` and an optional bearer token (the PostHog test server's static
//! files stand in for an object store).
use libdebugger_agent::breakpoints::url::{UrlConfig, start};
use libdebugger_agent::posthog::config::Secret;
use libdebugger_tests::posthog_server::PosthogServer;
use std::time::Duration;

const BODY: &str = r#"{"results": [{"id": "a", "filename": "app/x.py", "line_number": 3},
    {"id": "b", "filename": "app/y.py", "line_number": "x"}]}"#;

#[tokio::test]
async fn polls_with_etag_and_token_and_says_what_is_wrong() {
    let server = PosthogServer::start().unwrap();
    server.set_static("/bps.json", Some(BODY), Some("tok"));
    let url = format!("{}/bps.json?sig=secret-signature", server.url());

    // Without the token: an error naming the setting; the query never shows.
    let src = start(UrlConfig::new(&url, None, Duration::from_millis(50)).unwrap()).unwrap();
    let mut st = src.status.clone();
    let s = tokio::time::timeout(Duration::from_secs(10), st.wait_for(|s| s.failures > 0))
        .await
        .unwrap()
        .unwrap()
        .clone();
    let err = s.last_error.unwrap();
    assert!(
        err.contains("HTTP 401") && err.contains("LIBDEBUGGER_BREAKPOINTS_TOKEN"),
        "{err}"
    );
    assert!(!err.contains("secret-signature"), "{err}");
    assert!(src.desired.borrow().is_empty());
    drop(src);

    let cfg = UrlConfig::new(&url, Some(Secret::new("tok")), Duration::from_millis(50)).unwrap();
    let mut src = start(cfg).unwrap();
    let set = tokio::time::timeout(
        Duration::from_secs(10),
        src.desired.wait_for(|s| s.len() == 2),
    )
    .await
    .unwrap()
    .unwrap()
    .clone();
    let a = set.get("a").unwrap();
    assert_eq!(a.source, format!("url {}/bps.json", server.url()));
    assert!(a.invalid.is_none());
    assert!(
        set.get("b")
            .unwrap()
            .invalid
            .as_deref()
            .unwrap()
            .contains("line_number")
    );
    // Unchanged content: 304s.
    let mut st = src.status.clone();
    tokio::time::timeout(
        Duration::from_secs(10),
        st.wait_for(|s| s.not_modified >= 2),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(
        server
            .requests_to("/bps.json")
            .iter()
            .any(|r| r.status == 304)
    );
    // A change arrives.
    server.set_static(
        "/bps.json",
        Some(r#"{"results": [{"id": "c", "filename": "app/z.py", "line_number": 1}]}"#),
        Some("tok"),
    );
    tokio::time::timeout(
        Duration::from_secs(10),
        src.desired
            .wait_for(|s| s.get("c").is_some() && s.len() == 1),
    )
    .await
    .unwrap()
    .unwrap();
    // A server that stops answering keeps the set in force.
    server.set_static("/bps.json", None, None);
    let before = src.status.borrow().failures;
    tokio::time::timeout(
        Duration::from_secs(10),
        st.wait_for(|s| s.failures > before),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(src.desired.borrow().get("c").is_some());
}

#[test]
fn a_url_that_is_not_http_is_refused_with_the_flag_named() {
    let e = UrlConfig::new("ftp://x/y.json", None, Duration::from_secs(1)).unwrap_err();
    assert!(e.contains("--breakpoints-url"), "{e}");
    let e = UrlConfig::new("not a url", None, Duration::from_secs(1)).unwrap_err();
    assert!(e.contains("--breakpoints-url"), "{e}");
}
