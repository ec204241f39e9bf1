//! A minimal PostHog stand-in for B5's "helper → PostHog" leg: serves the active-breakpoints
//! endpoint and counts the events of `POST /batch/` bodies (gzip or not). Counting only — the
//! contract checks live in the tests crate's PostHog test server; this one exists so the
//! benchmark needs neither the tests crate nor tokio, and costs the pipeline as little as
//! possible (it answers 200 at once, keeps connections alive, one thread per connection).
use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Credentials the stand-in accepts (any value works; these are what the bench passes).
pub const PROJECT_KEY: &str = "phc_bench";
pub const PERSONAL_KEY: &str = "phx_bench";
pub const PROJECT_ID: u64 = 1;

/// What the server counted.
#[derive(Default)]
pub struct Counters {
    /// Events of accepted `/batch/` requests whose `$breakpoint_id` is the one counted.
    pub hits: AtomicU64,
    /// Every event of every `/batch/` request.
    pub events: AtomicU64,
    pub batches: AtomicU64,
    /// Requests that could not be parsed (answered 400).
    pub bad_requests: AtomicU64,
}

/// A running stand-in; dropping it stops accepting.
pub struct Stub {
    pub port: u16,
    pub counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
}

impl Stub {
    /// Listens on 127.0.0.1 (a free port), serving `breakpoints` (API objects) and counting
    /// hits of `count_id`.
    pub fn start(breakpoints: Value, count_id: &str) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the PostHog stand-in")?;
        let port = listener.local_addr()?.port();
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let body = Arc::new(
            serde_json::json!({
                "results": breakpoints,
                "count": breakpoints.as_array().map_or(0, Vec::len),
                "has_more": false
            })
            .to_string(),
        );
        let (c, s, id) = (
            counters.clone(),
            stop.clone(),
            Arc::new(count_id.to_owned()),
        );
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (c, body, id) = (c.clone(), body.clone(), id.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &c, &body, &id);
                });
            }
        });
        Ok(Self {
            port,
            counters,
            stop,
        })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn hits(&self) -> u64 {
        self.counters.hits.load(Ordering::Relaxed)
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(conn: TcpStream, c: &Counters, breakpoints: &str, id: &str) -> Result<()> {
    // Answers go out in one write with Nagle off: a reply split over several small writes
    // waits for the client's delayed ACK (40 ms) per request, which capped the events this
    // stand-in took at about 100 requests' worth per 4 s.
    conn.set_nodelay(true)?;
    let mut reader = BufReader::with_capacity(256 * 1024, conn.try_clone()?);
    let mut conn = conn;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let mut len = 0usize;
        let mut gzip = false;
        let mut chunked = false;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 {
                return Ok(());
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let Some((name, value)) = h.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => len = value.parse().unwrap_or(0),
                "content-encoding" => gzip = value.eq_ignore_ascii_case("gzip"),
                "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                _ => {}
            }
        }
        let body = if chunked {
            read_chunked(&mut reader)?
        } else {
            let mut b = vec![0; len];
            reader.read_exact(&mut b)?;
            b
        };
        let path = request_line.split_whitespace().nth(1).unwrap_or("");
        let (status, answer) = if path.starts_with("/batch") {
            match count_batch(&body, gzip, id) {
                Ok((all, hits)) => {
                    c.batches.fetch_add(1, Ordering::Relaxed);
                    c.events.fetch_add(all, Ordering::Relaxed);
                    c.hits.fetch_add(hits, Ordering::Relaxed);
                    ("200 OK", "{\"status\":1}")
                }
                Err(_) => {
                    c.bad_requests.fetch_add(1, Ordering::Relaxed);
                    ("400 Bad Request", "{\"detail\":\"malformed batch\"}")
                }
            }
        } else if path.contains("/live_debugger_breakpoints/active") {
            ("200 OK", breakpoints)
        } else {
            ("404 Not Found", "{\"detail\":\"not found\"}")
        };
        let reply = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        );
        conn.write_all(reply.as_bytes())?;
    }
}

fn read_chunked(reader: &mut impl BufRead) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let mut size = String::new();
        reader.read_line(&mut size)?;
        let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
            .context("bad chunk size")?;
        let mut chunk = vec![0; n + 2]; // data + CRLF
        reader.read_exact(&mut chunk)?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&chunk[..n]);
    }
}

/// What the stand-in reads of a `/batch/` body (the rest is skipped, not built into values:
/// the stand-in runs in the xtask's debug build and must not be the bottleneck it measures).
#[derive(serde::Deserialize)]
struct Batch {
    batch: Option<Vec<BatchEvent>>,
}

#[derive(serde::Deserialize)]
struct BatchEvent {
    event: Option<String>,
    properties: Option<Props>,
}

#[derive(serde::Deserialize)]
struct Props {
    #[serde(rename = "$breakpoint_id")]
    breakpoint_id: Option<String>,
}

/// (events in the batch, events whose `$breakpoint_id` is `id`).
fn count_batch(body: &[u8], gzip: bool, id: &str) -> Result<(u64, u64)> {
    let parsed: Batch = if gzip {
        let mut raw = Vec::with_capacity(body.len() * 8);
        flate2::read::GzDecoder::new(body).read_to_end(&mut raw)?;
        serde_json::from_slice(&raw)?
    } else {
        serde_json::from_slice(body)?
    };
    let Some(batch) = parsed.batch else {
        bail!("no batch array");
    };
    let hits = batch
        .iter()
        .filter(|e| {
            e.event.as_deref() == Some("$data_breakpoint_hit")
                && e.properties
                    .as_ref()
                    .and_then(|p| p.breakpoint_id.as_deref())
                    == Some(id)
        })
        .count();
    Ok((batch.len() as u64, hits as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(port: u16, path: &str, body: &[u8], gzip: bool) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let enc = if gzip {
            "Content-Encoding: gzip\r\n"
        } else {
            ""
        };
        write!(
            s,
            "POST {path} HTTP/1.1\r\nHost: x\r\n{enc}Content-Length: {}\r\n\r\n",
            body.len()
        )
        .expect("write");
        s.write_all(body).expect("body");
        let mut r = BufReader::new(s);
        let mut status = String::new();
        r.read_line(&mut status).expect("status");
        status
    }

    #[test]
    fn counts_plain_and_gzip_batches() {
        let stub = Stub::start(serde_json::json!([]), "b5").expect("start");
        let batch = serde_json::json!({"api_key": PROJECT_KEY, "batch": [
            {"event": "$data_breakpoint_hit", "properties": {"$breakpoint_id": "b5"}},
            {"event": "$data_breakpoint_hit", "properties": {"$breakpoint_id": "other"}},
            {"event": "$data_breakpoint_status", "properties": {"$breakpoint_id": "b5"}}
        ]})
        .to_string();
        assert!(post(stub.port, "/batch/", batch.as_bytes(), false).contains("200"));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(batch.as_bytes()).expect("gzip");
        let gz = gz.finish().expect("gzip");
        assert!(post(stub.port, "/batch/", &gz, true).contains("200"));
        assert!(post(stub.port, "/batch/", b"not json", false).contains("400"));
        assert_eq!(stub.hits(), 2);
        assert_eq!(stub.counters.events.load(Ordering::Relaxed), 6);
        assert_eq!(stub.counters.bad_requests.load(Ordering::Relaxed), 1);
    }
}
