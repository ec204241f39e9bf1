//! eBPF-side logs (`aya-log-ebpf`) forwarded into `tracing`, target `libdebugger::ebpf`.
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

/// A `log::Log` that re-emits every record as a `tracing` event.
#[derive(Clone, Copy, Debug, Default)]
pub struct TracingLog;

impl log::Log for TracingLog {
    fn enabled(&self, _metadata: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let msg = record.args();
        match record.level() {
            log::Level::Error => tracing::error!(target: "libdebugger::ebpf", "{msg}"),
            log::Level::Warn => tracing::warn!(target: "libdebugger::ebpf", "{msg}"),
            log::Level::Info => tracing::info!(target: "libdebugger::ebpf", "{msg}"),
            log::Level::Debug => tracing::debug!(target: "libdebugger::ebpf", "{msg}"),
            log::Level::Trace => tracing::trace!(target: "libdebugger::ebpf", "{msg}"),
        }
    }

    fn flush(&self) {}
}

/// The eBPF log ring buffer. It must stay alive as long as the programs are loaded (dropping it
/// closes the log map and later program loads fail with "fd N is not pointing to valid
/// bpf_map"), and be drained: call [`LogPump::flush`] periodically or run [`LogPump::run`].
pub struct LogPump {
    logger: aya_log::EbpfLogger<TracingLog>,
}

impl std::fmt::Debug for LogPump {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogPump").finish_non_exhaustive()
    }
}

impl LogPump {
    pub(super) fn new(logger: aya_log::EbpfLogger<TracingLog>) -> Self {
        Self { logger }
    }

    /// Forwards every pending record.
    pub fn flush(&mut self) {
        self.logger.flush();
    }

    /// Forwards records as they arrive, until the task is dropped.
    pub async fn run(self) -> std::io::Result<()> {
        // SAFETY: the fd is the log ring buffer's map fd, owned by `self.logger`, which the
        // AsyncFd owns for its whole life; `as_raw_fd` always returns that same fd.
        let mut fd = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(self, tokio::io::Interest::READABLE)
        }?;
        loop {
            let mut guard = fd.readable_mut().await?;
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    }
}

impl AsFd for LogPump {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.logger.as_fd()
    }
}

impl AsRawFd for LogPump {
    fn as_raw_fd(&self) -> RawFd {
        self.logger.as_raw_fd()
    }
}
