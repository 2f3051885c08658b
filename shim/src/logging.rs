//! The shim's log: the bundle's `log` fifo, which containerd creates before `start` and copies into its
//! own log. Writes never block and never fail loudly: with nobody reading (containerd restarting) a
//! line is dropped rather than stall the shim.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use tracing_subscriber::fmt::MakeWriter;

/// The lowest descriptor number the log may use.
const LOG_FD_FLOOR: i32 = 10;

#[derive(Clone)]
struct FifoWriter(Option<Arc<File>>);

impl Write for FifoWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(file) = &self.0 {
            let _ = (&**file).write(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for FifoWriter {
    type Writer = FifoWriter;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Sends `tracing` output to `<bundle>/log` (or nowhere when it cannot be opened).
pub fn init(bundle: &Path, debug: bool) {
    // Kept above the low descriptor numbers: `start` hands the daemon its listener as fd 3, which the
    // log would otherwise have taken (and lost to the listener).
    let file = File::options()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(bundle.join("log"))
        .ok()
        .and_then(|file| myshim_runtime::sys::dup_above(file.as_raw_fd(), LOG_FD_FLOOR).ok())
        .map(|fd| Arc::new(File::from(fd)));
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let level = if debug { tracing::Level::DEBUG } else { tracing::Level::INFO };
    // Our own crates at the chosen level; libraries (h2, hyper, tonic) only when they warn.
    let filter = tracing_subscriber::filter::Targets::new()
        .with_default(tracing::Level::WARN)
        .with_target("myshim_shim", level)
        .with_target("containerd_shim_myshim_v1", level)
        .with_target("myshim_runtime", level);
    let format = tracing_subscriber::fmt::layer().with_writer(FifoWriter(file)).with_ansi(false).with_target(false);
    let _ = tracing_subscriber::registry().with(filter).with(format).try_init();
}
