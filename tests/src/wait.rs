//! The one way the tests wait: poll a condition until a deadline, and on timeout say what was
//! awaited and what was last seen.
//!
//! ```ignore
//! let pid = wait::until("a python descendant of the container", Duration::from_secs(30), || {
//!     match descendant(child) {
//!         Some(p) => Ok(p),
//!         None => Err("no descendant yet".to_string()),
//!     }
//! })?;
//! ```
use anyhow::{Result, bail};
use std::fmt::Debug;
use std::time::{Duration, Instant};

/// How often [`until`] polls by default: short enough not to slow a test down, long enough not
/// to load a 2-core machine.
pub const POLL: Duration = Duration::from_millis(20);

/// Polls `probe` every [`POLL`] until it returns `Ok(value)`; each `Err(seen)` is what the
/// condition looked like at that moment. At the deadline, fails naming `what`, the timeout and
/// the last `seen`.
pub fn until<T, S: Debug>(
    what: &str,
    timeout: Duration,
    probe: impl FnMut() -> std::result::Result<T, S>,
) -> Result<T> {
    until_every(what, timeout, POLL, probe)
}

/// [`until`] with an explicit poll interval.
pub fn until_every<T, S: Debug>(
    what: &str,
    timeout: Duration,
    poll: Duration,
    mut probe: impl FnMut() -> std::result::Result<T, S>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        let seen = match probe() {
            Ok(v) => return Ok(v),
            Err(seen) => seen,
        };
        let now = Instant::now();
        if now >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}; last seen: {seen:?}");
        }
        // The poll interval of this wait; the deadline above bounds it.
        std::thread::sleep(poll.min(deadline - now));
    }
}

/// [`until`] for a condition with nothing to show but itself: `probe` returns whether it holds.
pub fn until_true(what: &str, timeout: Duration, mut probe: impl FnMut() -> bool) -> Result<()> {
    until(
        what,
        timeout,
        || if probe() { Ok(()) } else { Err("false") },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_value_once_the_condition_holds() {
        let mut n = 0;
        let v = until("n to reach 3", Duration::from_secs(5), || {
            n += 1;
            if n >= 3 { Ok(n) } else { Err(n) }
        })
        .unwrap();
        assert_eq!(v, 3);
    }

    #[test]
    fn a_timeout_names_what_and_the_last_seen_value() {
        let err = until_every(
            "the impossible",
            Duration::from_millis(30),
            Duration::from_millis(5),
            || Err::<(), _>("still nothing"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("waiting for the impossible"), "{err}");
        assert!(err.contains("still nothing"), "{err}");
    }
}
