//! Running under a service manager: systemd's `Type=notify` readiness protocol (`READY=1` once
//! the agent serves its control socket and has its eBPF programs loaded, `STATUS=` lines that
//! `systemctl status` shows, `STOPPING=1` on SIGTERM), through the `sd-notify` crate. Every call
//! is a no-op when `$NOTIFY_SOCKET` is unset (the agent started by hand, in a container).
use sd_notify::NotifyState;
use serde_json::Value;

/// Tells the service manager the agent is ready, with its first status line.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Tells the service manager the agent is stopping (removing breakpoints, flushing events).
pub fn stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

/// Sends `status` as the service's status line if it differs from the last one sent.
pub fn status(last: &mut String, status: String) {
    if *last != status {
        send(&[NotifyState::Status(&status)]);
        *last = status;
    }
}

fn send(states: &[NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("cannot notify the service manager ($NOTIFY_SOCKET): {e}");
    }
}

/// One line for `systemctl status`, from the snapshot `libdebugger-agent status` shows: mode,
/// processes attached, breakpoints, events delivered and queued, and what is wrong if anything.
pub fn summary(status: &Value) -> String {
    let processes = status["processes"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    let attached = processes
        .iter()
        .filter(|p| p["attach_state"] == "attached")
        .count();
    let failed = processes
        .iter()
        .filter(|p| matches!(p["attach_state"].as_str(), Some("failed" | "incompatible")))
        .count();
    let breakpoints = status["breakpoints"].as_array().map_or(0, Vec::len);
    let (mut delivered, mut queued) = (0, 0);
    if let Some(sinks) = status["delivery"]["sinks"].as_object() {
        for s in sinks.values() {
            delivered += s["delivered"].as_u64().unwrap_or(0);
            queued += s["queued"].as_u64().unwrap_or(0);
        }
    }
    let mode = status["mode"].as_str().unwrap_or("?");
    let mut line = format!(
        "{mode} mode: {breakpoints} breakpoint{}, {attached} of {} Python process{} attached, {delivered} events delivered, {queued} queued",
        plural(breakpoints, "s"),
        processes.len(),
        plural(processes.len(), "es"),
    );
    if failed > 0 {
        line.push_str(&format!(
            "; {failed} process{} not attached (see `libdebugger-agent status`)",
            plural(failed, "es")
        ));
    }
    if let Some(e) = status["ebpf"].as_str().filter(|e| *e != "ok") {
        line.push_str(&format!("; eBPF unavailable: {e}"));
    }
    if let Some(e) = status["posthog"]["last_error"]
        .as_str()
        .filter(|_| status["posthog"]["consecutive_failures"].as_u64() > Some(0))
    {
        line.push_str(&format!("; PostHog: {e}"));
    }
    line
}

fn plural(n: usize, suffix: &'static str) -> &'static str {
    if n == 1 { "" } else { suffix }
}

#[cfg(test)]
mod tests {
    use super::summary;
    use serde_json::json;

    #[test]
    fn the_summary_counts_processes_breakpoints_and_events_and_names_problems() {
        let st = json!({
            "mode": "posthog",
            "ebpf": "ok",
            "processes": [
                {"pid": 1, "attach_state": "attached"},
                {"pid": 2, "attach_state": "idle"},
                {"pid": 3, "attach_state": "incompatible"},
            ],
            "breakpoints": [{"id": "a"}],
            "delivery": {"sinks": {"posthog": {"delivered": 7, "queued": 2}}},
            "posthog": {"consecutive_failures": 3, "last_error": "HTTP 503"},
        });
        assert_eq!(
            summary(&st),
            "posthog mode: 1 breakpoint, 1 of 3 Python processes attached, 7 events delivered, \
             2 queued; 1 process not attached (see `libdebugger-agent status`); PostHog: HTTP 503"
        );
        let idle = json!({"mode": "local", "ebpf": "no BTF", "processes": [], "breakpoints": []});
        assert_eq!(
            summary(&idle),
            "local mode: 0 breakpoints, 0 of 0 Python processes attached, 0 events delivered, 0 \
             queued; eBPF unavailable: no BTF"
        );
    }
}
