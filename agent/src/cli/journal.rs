//! Log lines for the systemd journal: stderr of a service is a stream to journald, which reads a
//! leading `<N>` on each line as the entry's syslog priority (`SyslogLevelPrefix=`, on by
//! default).
use std::os::fd::AsFd;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, format::Writer};
use tracing_subscriber::registry::LookupSpan;

/// True when stderr is the stream systemd connected to the journal: `$JOURNAL_STREAM` is
/// `<device>:<inode>` of that stream, and stderr still is it (not redirected by a wrapper).
pub fn stderr_is_journal() -> bool {
    let Some(want) = std::env::var("JOURNAL_STREAM").ok() else {
        return false;
    };
    let Ok(st) = nix::sys::stat::fstat(std::io::stderr().as_fd()) else {
        return false;
    };
    want == format!("{}:{}", st.st_dev, st.st_ino)
}

/// The syslog priority journald gives a line with this level.
pub fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// Another event format, with `<priority>` in front of each line.
pub struct Prefixed<F>(pub F);

impl<S, N, F> FormatEvent<S, N> for Prefixed<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        write!(writer, "<{}>", priority(event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}
