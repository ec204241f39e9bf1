//! Events as PostHog receives them, built from the helper's messages, and kept under the size a
//! single event may have.
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

/// The event name of a captured hit.
pub const HIT_EVENT: &str = "$data_breakpoint_hit";
/// A logpoint's message (the helper's LOG_HIT messages): `$message`, no locals, no stack.
pub const LOG_EVENT: &str = "$data_logpoint_hit";
/// The event name of a breakpoint status change.
pub const STATUS_EVENT: &str = "$data_breakpoint_status";
/// Largest encoded event (PostHog drops events over about 1 MB server-side).
pub const MAX_EVENT_BYTES: usize = 900 * 1024;

/// One event, exactly as it goes into a `/batch/` request and into the JSON Lines file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Event name ([`HIT_EVENT`], [`STATUS_EVENT`]).
    pub event: String,
    /// Who the event is about; the agent's configured distinct id.
    pub distinct_id: String,
    /// Unique id (UUID v7: time-ordered). PostHog deduplicates on it, which makes redelivery
    /// after a crash harmless.
    pub uuid: Uuid,
    /// When it happened, RFC 3339 UTC.
    pub timestamp: String,
    /// The event's properties.
    pub properties: Map<String, Value>,
}

/// A `$locals_variables` value decoded for people: the value a JSON string holds (each local's
/// value is its jsonpickle encoding as a string, see `helper/src/posthog.rs`); anything else as
/// it is.
pub fn decode_local(v: &Value) -> Value {
    v.as_str()
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_else(|| v.clone())
}

/// `(file, function, line)` of a `$stack_trace` frame: an object with `file`, `function` and
/// `line` (what the helper sends), or an older `[file, function, line]` array.
pub fn frame_parts(f: &Value) -> Option<(String, String, String)> {
    let s = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_owned);
    match f {
        Value::Object(o) => Some((s(o.get("file")?), s(o.get("function")?), s(o.get("line")?))),
        Value::Array(a) if a.len() == 3 => Some((s(&a[0]), s(&a[1]), s(&a[2]))),
        _ => None,
    }
}

/// Now as RFC 3339 UTC.
pub fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

impl Event {
    /// A new event named `name` with `properties`, a fresh UUID v7, timestamp now, and
    /// `$process_person_profile: false` (no person stands behind these events),
    /// `$geoip_disable: true` (as posthog-python sends by default: otherwise PostHog geolocates
    /// every event to the agent's address) plus `$lib`.
    pub fn new(name: &str, distinct_id: &str, mut properties: Map<String, Value>) -> Self {
        properties.insert("$process_person_profile".into(), Value::Bool(false));
        properties.insert("$geoip_disable".into(), Value::Bool(true));
        properties
            .entry("$lib")
            .or_insert_with(|| Value::String("libdebugger".into()));
        properties
            .entry("$lib_version")
            .or_insert_with(|| Value::String(env!("CARGO_PKG_VERSION").into()));
        Self {
            event: name.into(),
            distinct_id: distinct_id.into(),
            uuid: Uuid::now_v7(),
            timestamp: now_rfc3339(),
            properties,
        }
    }

    /// A `$data_breakpoint_hit` from the `properties` object the helper produced (the eight UI
    /// properties: `$breakpoint_id`, `$file_path`, `$line_number`, `$locals_variables`,
    /// `$stack_trace`, `$timestamp`, `$thread_id`, `$thread_name`) plus the agent's extension
    /// fields (`$pid`, `$hostname`, ...). The helper's properties win over extensions of the same
    /// name, except `$pid`: the agent's is the host's, the helper's that of its pid namespace;
    /// the event's `timestamp` is the helper's `$timestamp` when it has one.
    pub fn hit(
        distinct_id: &str,
        helper_properties: Map<String, Value>,
        extensions: impl IntoIterator<Item = (String, Value)>,
    ) -> Self {
        let mut props: Map<String, Value> = extensions.into_iter().collect();
        // `$pid` stays the agent's (the host's), as in `encode_hit`.
        let host_pid = props.get("$pid").cloned();
        props.extend(helper_properties);
        if let Some(pid) = host_pid {
            props.insert("$pid".into(), pid);
        }
        let ts = props
            .get("$timestamp")
            .and_then(Value::as_str)
            .filter(|t| OffsetDateTime::parse(t, &Rfc3339).is_ok())
            .map(str::to_owned);
        let mut ev = Event::new(HIT_EVENT, distinct_id, props);
        if let Some(ts) = ts {
            ev.timestamp = ts;
        }
        ev
    }

    /// [`Event::hit`] from the raw bytes of a helper HIT message (a JSON object).
    pub fn hit_from_json(
        distinct_id: &str,
        message: &[u8],
        extensions: impl IntoIterator<Item = (String, Value)>,
    ) -> Result<Self, HitError> {
        match serde_json::from_slice::<Value>(message) {
            Ok(Value::Object(props)) => Ok(Event::hit(distinct_id, props, extensions)),
            Ok(other) => Err(HitError::NotAnObject {
                kind: match other {
                    Value::Array(_) => "an array",
                    Value::String(_) => "a string",
                    Value::Number(_) => "a number",
                    Value::Bool(_) => "a boolean",
                    _ => "null",
                },
            }),
            Err(source) => Err(HitError::Json { source }),
        }
    }

    /// A `$data_breakpoint_status` event: `$breakpoint_id`, `$status` (e.g. `armed`, `pending`,
    /// `error`, `throttled`) and `$error` (null unless there is one), plus `extensions`.
    pub fn breakpoint_status(
        distinct_id: &str,
        update: &StatusUpdate,
        extensions: impl IntoIterator<Item = (String, Value)>,
    ) -> Self {
        let mut props: Map<String, Value> = extensions.into_iter().collect();
        props.insert(
            "$breakpoint_id".into(),
            Value::String(update.breakpoint_id.clone()),
        );
        props.insert("$status".into(), Value::String(update.status.clone()));
        props.insert(
            "$error".into(),
            update
                .error
                .clone()
                .map(Value::String)
                .unwrap_or(Value::Null),
        );
        Event::new(STATUS_EVENT, distinct_id, props)
    }

    /// The event encoded as JSON.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising a struct of strings and a `serde_json::Map` cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// A `$data_breakpoint_hit` encoded straight from the helper's message (see [`encode_hit`]).
#[derive(Clone, Debug, PartialEq)]
pub struct EncodedHit {
    /// The event's JSON: the event [`Event::hit_from_json`] builds (same fields and values, the
    /// properties in the same sorted order), each helper value copied as the helper wrote it.
    pub json: Vec<u8>,
    /// What the agent's bookkeeping reads from the hit.
    pub summary: HitSummary,
}

/// The helper properties of a hit that the agent's bookkeeping reads: `$breakpoint_id` and the
/// counters (`$hit_count`, `$captured_count`, `$condition_false_count`, `$rate_limited_count`),
/// where present.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HitSummary {
    /// `$breakpoint_id`.
    pub breakpoint_id: Option<String>,
    /// `$hit_count`.
    pub hits: Option<u64>,
    /// `$captured_count`.
    pub captured: Option<u64>,
    /// `$condition_false_count`.
    pub condition_false: Option<u64>,
    /// `$rate_limited_count`.
    pub rate_limited: Option<u64>,
}

/// The top-level properties of a helper message, borrowed from it in the order written: (name,
/// encoded value). Names with escapes are not borrowable; such a message takes the slow path.
struct TopLevel<'a>(Vec<(&'a str, &'a serde_json::value::RawValue)>);

impl<'de> Deserialize<'de> for TopLevel<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = TopLevel<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object of properties")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(m.size_hint().unwrap_or(24));
                while let Some(entry) = m.next_entry()? {
                    out.push(entry);
                }
                Ok(TopLevel(out))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// [`Event::hit_from_json`] then [`Event::to_json`], without building the event: the helper's
/// properties are split at the top level only and their values copied through as they are
/// (they are valid JSON — the parse checks it), so a hit costs one scan of its bytes instead of
/// a tree of allocations, a serialisation and (for the size check) a second one. The result is
/// the same event: extensions first, the helper's properties over them, then
/// `$process_person_profile: false`, `$geoip_disable: true`, `$lib` and `$lib_version` as
/// [`Event::new`] sets them.
/// `extensions` are (name, encoded JSON value) pairs.
pub fn encode_hit(
    distinct_id: &str,
    message: &[u8],
    extensions: &[(&str, &str)],
) -> Result<EncodedHit, HitError> {
    encode_event(HIT_EVENT, distinct_id, message, extensions)
}

/// [`encode_hit`] for an event named `event` ([`HIT_EVENT`] or [`LOG_EVENT`]): the same
/// properties, timestamp and agent fields.
pub fn encode_event(
    event: &str,
    distinct_id: &str,
    message: &[u8],
    extensions: &[(&str, &str)],
) -> Result<EncodedHit, HitError> {
    let helper = match serde_json::from_slice::<TopLevel<'_>>(message) {
        Ok(m) => m.0,
        // Not an object, not JSON, or a name with escapes (not borrowable): the slow path
        // builds the event, or names what the message is.
        Err(_) => {
            let ext = extensions.iter().map(|(k, v)| {
                (
                    k.to_string(),
                    serde_json::from_str(v).unwrap_or(Value::Null),
                )
            });
            let mut ev = Event::hit_from_json(distinct_id, message, ext)?;
            ev.event = event.to_owned();
            return Ok(EncodedHit {
                json: ev.to_json(),
                summary: summary_of(&ev.properties),
            });
        }
    };
    // The agent's own properties, by name: extensions, then (over them) the helper's, then
    // `$process_person_profile` over everything; `$lib` / `$lib_version` only where nobody set
    // them. Precedence: higher wins.
    const DEFAULT: u8 = 0;
    const EXTENSION: u8 = 1;
    const HELPER: u8 = 2;
    const FORCED: u8 = 3;
    let lib_version = concat!("\"", env!("CARGO_PKG_VERSION"), "\"");
    let mut own: Vec<(&str, &str, u8)> = Vec::with_capacity(extensions.len() + 4);
    // `$pid` is the agent's (the host's): inside a container the helper's own is its pid
    // namespace's, which names another process (or none) on the host.
    own.extend(extensions.iter().map(|(k, v)| {
        let precedence = if *k == "$pid" { FORCED } else { EXTENSION };
        (*k, *v, precedence)
    }));
    own.push(("$process_person_profile", "false", FORCED));
    own.push(("$geoip_disable", "true", FORCED));
    own.push(("$lib", "\"libdebugger\"", DEFAULT));
    own.push(("$lib_version", lib_version, DEFAULT));
    own.sort_by(|a, b| a.0.cmp(b.0).then(a.2.cmp(&b.2)));
    own.dedup_by(|later, earlier| {
        // Same name: keep the higher precedence (sorted last) in `earlier`'s slot.
        let same = later.0 == earlier.0;
        if same {
            *earlier = *later;
        }
        same
    });
    let mut ts = None;
    let mut summary = HitSummary::default();
    let mut mine: Vec<(&str, &str)> = Vec::with_capacity(helper.len());
    for (k, v) in &helper {
        let raw = v.get();
        match *k {
            "$timestamp" => ts = serde_json::from_str::<&str>(raw).ok(),
            "$breakpoint_id" => summary.breakpoint_id = serde_json::from_str::<String>(raw).ok(),
            "$hit_count" => summary.hits = raw.parse().ok(),
            "$captured_count" => summary.captured = raw.parse().ok(),
            "$condition_false_count" => summary.condition_false = raw.parse().ok(),
            "$rate_limited_count" => summary.rate_limited = raw.parse().ok(),
            _ => {}
        }
        mine.push((k, raw));
    }
    // The helper writes its properties sorted; anything else is sorted here, a repeated name
    // keeping its last value (as a JSON object reads).
    if !mine.windows(2).all(|w| w[0].0 < w[1].0) {
        mine.reverse();
        mine.sort_by(|a, b| a.0.cmp(b.0)); // stable: the last value of a name comes first
        mine.dedup_by(|later, earlier| later.0 == earlier.0);
    }
    let ts_owned;
    let ts = match ts.filter(|t| OffsetDateTime::parse(t, &Rfc3339).is_ok()) {
        Some(t) => t,
        None => {
            ts_owned = now_rfc3339();
            &ts_owned
        }
    };
    let mut out = Vec::with_capacity(message.len() + 256);
    out.extend_from_slice(b"{\"event\":");
    write_json_str(&mut out, event);
    out.extend_from_slice(b",\"distinct_id\":");
    write_json_str(&mut out, distinct_id);
    out.extend_from_slice(b",\"uuid\":\"");
    let mut uuid = [0u8; uuid::fmt::Hyphenated::LENGTH];
    out.extend_from_slice(
        Uuid::now_v7()
            .hyphenated()
            .encode_lower(&mut uuid)
            .as_bytes(),
    );
    out.extend_from_slice(b"\",\"timestamp\":");
    write_json_str(&mut out, ts);
    out.extend_from_slice(b",\"properties\":{");
    // Merge the two sorted lists; a name in both takes the higher precedence.
    let (mut a, mut b) = (own.iter().peekable(), mine.iter().peekable());
    let mut first = true;
    loop {
        let (k, v) = match (a.peek(), b.peek()) {
            (None, None) => break,
            (Some(&&(k, v, _)), None) => {
                a.next();
                (k, v)
            }
            (None, Some(&&(k, v))) => {
                b.next();
                (k, v)
            }
            (Some(&&(ka, va, pa)), Some(&&(kb, vb))) => match ka.cmp(kb) {
                std::cmp::Ordering::Less => {
                    a.next();
                    (ka, va)
                }
                std::cmp::Ordering::Greater => {
                    b.next();
                    (kb, vb)
                }
                std::cmp::Ordering::Equal => {
                    a.next();
                    b.next();
                    if pa > HELPER { (ka, va) } else { (kb, vb) }
                }
            },
        };
        if !first {
            out.push(b',');
        }
        first = false;
        write_json_str(&mut out, k);
        out.push(b':');
        out.extend_from_slice(v.as_bytes());
    }
    out.extend_from_slice(b"}}");
    Ok(EncodedHit { json: out, summary })
}

/// [`HitSummary`] of an event's properties (the slow path).
fn summary_of(props: &Map<String, Value>) -> HitSummary {
    let n = |k: &str| props.get(k).and_then(Value::as_u64);
    HitSummary {
        breakpoint_id: props
            .get("$breakpoint_id")
            .and_then(Value::as_str)
            .map(str::to_owned),
        hits: n("$hit_count"),
        captured: n("$captured_count"),
        condition_false: n("$condition_false_count"),
        rate_limited: n("$rate_limited_count"),
    }
}

/// Appends `s` as a JSON string.
fn write_json_str(out: &mut Vec<u8>, s: &str) {
    // Serialising a `str` into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// A helper HIT message that cannot become an event.
#[derive(Debug, thiserror::Error)]
pub enum HitError {
    /// Not valid JSON.
    #[error("the helper's hit message is not valid JSON: {source}")]
    Json {
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// Valid JSON, but not an object of properties.
    #[error("the helper's hit message is {kind}, not a JSON object of properties")]
    NotAnObject {
        /// What it is instead.
        kind: &'static str,
    },
}

/// The event is too large even after cutting its captured values.
#[derive(Debug, thiserror::Error)]
#[error("event {uuid} is {bytes} bytes even after truncating its captured values (limit {limit})")]
pub struct TooLarge {
    /// The event's uuid.
    pub uuid: Uuid,
    /// Its encoded size after truncation.
    pub bytes: usize,
    /// The limit.
    pub limit: usize,
}

fn encoded_len(v: &Value) -> usize {
    serde_json::to_vec(v).map(|v| v.len()).unwrap_or(0)
}

/// Makes `event` encode to at most `limit` bytes and returns its encoding. The largest
/// `$locals_variables` values are replaced first by `"<truncated: N bytes>"` (as a JSON string
/// holding that string, like every local's value); then the
/// stack is cut to its 20 innermost frames. When anything was cut, `$truncated: true` and
/// `$truncated_variables: [names]` mark it.
pub fn fit_event(event: &mut Event, limit: usize) -> Result<Vec<u8>, TooLarge> {
    let mut encoded = event.to_json();
    if encoded.len() <= limit {
        return Ok(encoded);
    }
    let mut over = encoded.len() - limit;
    let mut cut_names = Vec::new();
    if let Some(Value::Object(locals)) = event.properties.get_mut("$locals_variables") {
        let mut sizes: Vec<(String, usize)> = locals
            .iter()
            .map(|(k, v)| (k.clone(), encoded_len(v)))
            .collect();
        sizes.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        for (name, size) in sizes {
            let marker = Value::String(format!("\"<truncated: {size} bytes>\""));
            let saved = size.saturating_sub(encoded_len(&marker));
            if saved == 0 {
                continue;
            }
            locals.insert(name.clone(), marker);
            cut_names.push(Value::String(name));
            if saved >= over {
                over = 0;
                break;
            }
            over -= saved;
        }
    }
    if over > 0
        && let Some(Value::Array(frames)) = event.properties.get_mut("$stack_trace")
        && frames.len() > 20
    {
        frames.truncate(20);
        event
            .properties
            .insert("$stack_truncated".into(), Value::Bool(true));
    }
    event
        .properties
        .insert("$truncated".into(), Value::Bool(true));
    if !cut_names.is_empty() {
        event
            .properties
            .insert("$truncated_variables".into(), Value::Array(cut_names));
    }
    encoded = event.to_json();
    if encoded.len() <= limit {
        Ok(encoded)
    } else {
        Err(TooLarge {
            uuid: event.uuid,
            bytes: encoded.len(),
            limit,
        })
    }
}

/// A breakpoint status to report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusUpdate {
    /// The breakpoint's id as received.
    pub breakpoint_id: String,
    /// `armed`, `pending`, `error`, `throttled`, ...
    pub status: String,
    /// The reason, for `error` (and anything else that has one).
    pub error: Option<String>,
}

/// Rate limit of `$data_breakpoint_status` events: per breakpoint, a status is sent only when it
/// differs from the last one sent, and at most once per `min_interval`. A change arriving sooner
/// is held back and [`StatusLimiter::due`] releases the latest held status once its time comes
/// (so the final state always reaches PostHog, intermediate flapping does not).
#[derive(Debug)]
pub struct StatusLimiter {
    min_interval: Duration,
    sent: HashMap<String, (StatusUpdate, Instant)>,
    held: HashMap<String, StatusUpdate>,
}

impl StatusLimiter {
    /// A limiter allowing one status event per breakpoint per `min_interval`.
    pub fn new(min_interval: Duration) -> Self {
        Self {
            min_interval,
            sent: HashMap::new(),
            held: HashMap::new(),
        }
    }

    /// Offers a status seen at `now`; returns it when it should be sent now.
    pub fn offer(&mut self, update: StatusUpdate, now: Instant) -> Option<StatusUpdate> {
        match self.sent.get(&update.breakpoint_id) {
            Some((last, _)) if *last == update => {
                self.held.remove(&update.breakpoint_id);
                None
            }
            Some((_, at)) if now.duration_since(*at) < self.min_interval => {
                self.held.insert(update.breakpoint_id.clone(), update);
                None
            }
            _ => {
                self.held.remove(&update.breakpoint_id);
                self.sent
                    .insert(update.breakpoint_id.clone(), (update.clone(), now));
                Some(update)
            }
        }
    }

    /// Held statuses whose interval has passed at `now`; they count as sent.
    pub fn due(&mut self, now: Instant) -> Vec<StatusUpdate> {
        let ready: Vec<String> = self
            .held
            .keys()
            .filter(|id| {
                self.sent
                    .get(*id)
                    .is_none_or(|(_, at)| now.duration_since(*at) >= self.min_interval)
            })
            .cloned()
            .collect();
        let mut out = Vec::new();
        for id in ready {
            if let Some(u) = self.held.remove(&id) {
                self.sent.insert(id, (u.clone(), now));
                out.push(u);
            }
        }
        out
    }

    /// Forgets a breakpoint (after it was deleted).
    pub fn forget(&mut self, breakpoint_id: &str) {
        self.sent.remove(breakpoint_id);
        self.held.remove(breakpoint_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hit_keeps_helper_properties_and_timestamp() {
        let props = json!({"$breakpoint_id": "b", "$file_path": "a.py", "$line_number": 3,
            "$timestamp": "2026-01-02T03:04:05.123Z", "$pid": 9});
        let Value::Object(props) = props else {
            unreachable!()
        };
        let ev = Event::hit(
            "d",
            props,
            [("$pid".to_string(), json!(1)), ("$host".into(), json!("h"))],
        );
        assert_eq!(ev.event, HIT_EVENT);
        assert_eq!(ev.timestamp, "2026-01-02T03:04:05.123Z");
        // The agent's (host) pid wins over the helper's (its pid namespace's).
        assert_eq!(ev.properties["$pid"], json!(1));
        assert_eq!(ev.properties["$host"], json!("h"));
        assert_eq!(ev.properties["$process_person_profile"], json!(false));
        assert_eq!(ev.properties["$geoip_disable"], json!(true));
        assert_eq!(ev.uuid.get_version_num(), 7);
    }

    #[test]
    fn hit_from_raw_message() {
        let ev = Event::hit_from_json("d", br#"{"$breakpoint_id": "b"}"#, []).unwrap();
        assert_eq!(ev.properties["$breakpoint_id"], json!("b"));
        assert!(matches!(
            Event::hit_from_json("d", b"[1]", []),
            Err(HitError::NotAnObject { kind: "an array" })
        ));
        assert!(matches!(
            Event::hit_from_json("d", b"{", []),
            Err(HitError::Json { .. })
        ));
    }

    #[test]
    fn encoded_hit_is_the_event_the_slow_path_builds() {
        let msg = br#"{"$breakpoint_id":"b\"1","$file_path":"a.py","$line_number":3,"$locals_variables":{"s":"\u00e9\n","l":[1,2.5,null]},"$timestamp":"2026-01-02T03:04:05.123Z","$pid":9,"$hit_count":4,"$captured_count":3,"$lib":"mine"}"#;
        let ext = [
            ("$pid", json!(1)),
            ("$hostname", json!("h\"x")),
            ("$process_person_profile", json!(true)),
        ];
        let ext_json: Vec<(&str, String)> = ext.iter().map(|(k, v)| (*k, v.to_string())).collect();
        let ext_json: Vec<(&str, &str)> = ext_json.iter().map(|(k, v)| (*k, v.as_str())).collect();
        // Encodes `msg` and checks it is the event the slow path builds; returns both.
        let fast_and_slow = |msg: &[u8]| {
            let hit = encode_hit("d", msg, &ext_json).unwrap();
            let fast: Event = serde_json::from_slice(&hit.json).unwrap();
            let ext_owned = ext.iter().map(|(k, v)| (k.to_string(), v.clone()));
            let mut slow = Event::hit_from_json("d", msg, ext_owned).unwrap();
            slow.uuid = fast.uuid;
            assert_eq!(fast, slow);
            (hit, fast, slow)
        };
        let (hit, fast, slow) = fast_and_slow(msg);
        // The properties in the order serde writes them (values as the helper wrote them).
        let keys = |j: &[u8]| -> Vec<String> {
            let v: Value = serde_json::from_slice(j).unwrap();
            v["properties"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect()
        };
        let text = String::from_utf8(hit.json.clone()).unwrap();
        let mut last = 0;
        for k in keys(&slow.to_json()) {
            let at = text[last..].find(&format!("\"{k}\":")).map(|i| i + last);
            assert!(at.is_some(), "{k} out of order in {text}");
            last = at.unwrap_or(last);
        }
        assert_eq!(fast.uuid.get_version_num(), 7);
        assert_eq!(hit.summary.breakpoint_id.as_deref(), Some("b\"1"));
        assert_eq!(hit.summary.hits, Some(4));
        assert_eq!(hit.summary.captured, Some(3));
        assert_eq!(hit.summary.rate_limited, None);
        // A property name with an escape (not borrowable): the slow path, the same event.
        let odd = br#"{"$breakpoint_id":"b","we\"ird":1,"$hit_count":2,"$timestamp":"2026-01-02T03:04:05Z"}"#;
        let (hit, _, _) = fast_and_slow(odd);
        assert_eq!(hit.summary.hits, Some(2));
        // Duplicate names in the helper's message: the last one, as a JSON object reads.
        let hit = encode_hit("d", br#"{"a":1,"a":2}"#, &[]).unwrap();
        let ev: Event = serde_json::from_slice(&hit.json).unwrap();
        assert_eq!(ev.properties["a"], json!(2));
        // No usable `$timestamp`: now, as on the slow path.
        let hit = encode_hit("d", br#"{"$timestamp":"yesterday"}"#, &[]).unwrap();
        let ev: Event = serde_json::from_slice(&hit.json).unwrap();
        assert!(OffsetDateTime::parse(&ev.timestamp, &Rfc3339).is_ok());
        assert!(matches!(
            encode_hit("d", b"[1]", &[]),
            Err(HitError::NotAnObject { kind: "an array" })
        ));
        assert!(matches!(
            encode_hit("d", b"{", &[]),
            Err(HitError::Json { .. })
        ));
    }

    #[test]
    fn fit_cuts_largest_locals_first() {
        let big = "x".repeat(5000);
        let mid = "y".repeat(2000);
        let Value::Object(props) = json!({"$locals_variables": {"big": big, "mid": mid, "n": 1}})
        else {
            unreachable!()
        };
        let mut ev = Event::new(HIT_EVENT, "d", props);
        let full = ev.to_json().len();
        let out = fit_event(&mut ev, full - 1000).unwrap();
        assert!(out.len() <= full - 1000);
        let locals = &ev.properties["$locals_variables"];
        assert_eq!(locals["big"], json!("\"<truncated: 5002 bytes>\""));
        assert_eq!(locals["mid"], json!(mid));
        assert_eq!(ev.properties["$truncated"], json!(true));
        assert_eq!(ev.properties["$truncated_variables"], json!(["big"]));
        assert!(fit_event(&mut ev, 100).is_err());
    }

    #[test]
    fn status_limiter_dedups_and_holds() {
        let t0 = Instant::now();
        let mut l = StatusLimiter::new(Duration::from_secs(10));
        let s = |st: &str| StatusUpdate {
            breakpoint_id: "b".into(),
            status: st.into(),
            error: None,
        };
        assert!(l.offer(s("pending"), t0).is_some());
        assert!(l.offer(s("pending"), t0).is_none());
        assert!(l.offer(s("armed"), t0 + Duration::from_secs(1)).is_none());
        assert!(l.offer(s("error"), t0 + Duration::from_secs(2)).is_none());
        assert!(l.due(t0 + Duration::from_secs(5)).is_empty());
        assert_eq!(l.due(t0 + Duration::from_secs(10)), vec![s("error")]);
        assert!(l.offer(s("armed"), t0 + Duration::from_secs(21)).is_some());
    }
}
