//! Logging: text lines with level, target and fields, to stdout and to a size- and day-rotated
//! `logs/kyc-service.log`. Every line passes through the PII mask before it reaches either.

pub mod logfile;
pub mod mask;

use std::io::{self, Write};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::Settings;

/// Keeps the background log-file writer alive; drop it last to flush.
pub struct LogGuard {
    _file: tracing_appender::non_blocking::WorkerGuard,
}

/// Installs the global subscriber.
///
/// # Errors
/// If a global subscriber is already installed.
pub fn init(settings: &Settings) -> Result<LogGuard, tracing_subscriber::util::TryInitError> {
    let filter = EnvFilter::new(format!(
        "{},sqlx=warn,hyper=warn,h2=warn,tower=warn",
        settings.log_level
    ));
    let file = logfile::RotatingFile::new(&settings.log);
    let (file_writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .finish(file);
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(Masked(io::stdout)),
        )
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(Masked(file_writer)),
        )
        .try_init()?;
    Ok(LogGuard { _file: guard })
}

/// A `MakeWriter` whose writers mask PII in each formatted line before passing it on.
#[derive(Clone)]
pub struct Masked<M>(pub M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Masked<M> {
    type Writer = MaskedLine<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        MaskedLine {
            buf: Vec::with_capacity(256),
            inner: self.0.make_writer(),
        }
    }
}

/// Buffers one event's output and writes it masked when the event is complete.
pub struct MaskedLine<W: Write> {
    buf: Vec<u8>,
    inner: W,
}

impl<W: Write> Write for MaskedLine<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for MaskedLine<W> {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.buf);
        let masked = mask::mask_text(&text);
        // A log line that cannot be written must not take the request down with it.
        let _ = self.inner.write_all(masked.as_bytes());
        let _ = self.inner.flush();
    }
}
