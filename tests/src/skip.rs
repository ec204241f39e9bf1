//! The one way a test says it cannot run here: [`skip_if!`] prints `skipping: <reason>` in one
//! line and returns `Ok(())` from the test.
//!
//! With `LIBDEBUGGER_REQUIRE_ROOTFS=1` (set by `.ci/run`, whose machine has everything) a skip is
//! a failure instead, so CI cannot pass by skipping.
//!
//! The standard libtest harness still counts such an early return as passed; see
//! ARCHITECTURE.md ("Where things live": waiting and skipping in tests) for what is left.

/// The environment variable that turns every skip into a failure.
pub const REQUIRE_ENV: &str = "LIBDEBUGGER_REQUIRE_ROOTFS";

/// True when skips must fail (see the module docs).
pub fn skips_fail() -> bool {
    std::env::var(REQUIRE_ENV).as_deref() == Ok("1")
}

/// Reports a skip for `reason`: one line on stderr, or a panic when [`skips_fail`].
pub fn report(reason: &str) {
    if skips_fail() {
        panic!("this test would be skipped ({reason}), but {REQUIRE_ENV}=1 requires it to run");
    }
    eprintln!("skipping: {reason}");
}

/// Why an end-to-end test with the agent and the helper cannot run here, if it cannot.
pub fn agent_env() -> Option<String> {
    if !crate::agent::is_root() {
        return Some("needs root (eBPF, ptrace)".into());
    }
    if let Err(e) = crate::helper::helper_dir() {
        return Some(format!("the helper library cannot be built: {e:#}"));
    }
    if let Err(e) = crate::agent::agent_binary() {
        return Some(format!("the agent cannot be built: {e:#}"));
    }
    None
}

/// Returns `Ok(())` from the enclosing test, saying why in one line, when `$reason` (an
/// `Option<String>`, e.g. [`agent_env`]) is `Some`.
#[macro_export]
macro_rules! skip_if {
    ($reason:expr) => {
        if let Some(reason) = $reason {
            $crate::skip::report(&reason);
            return Ok(());
        }
    };
}
