//! Log lines leave through a bounded queue to one writer thread, so a slow stdout (a
//! container log driver, a full pipe) never stalls a request: when the queue is full the
//! line is dropped and counted (`sms_gateway_log_lines_dropped_total`) instead.

use std::io::{self, Write};
use std::sync::LazyLock;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use tracing_subscriber::fmt::MakeWriter;

/// Lines dropped because the queue was full, for the whole process (stdout is one).
static DROPPED: LazyLock<Counter> = LazyLock::new(Counter::default);

/// The process-wide count of dropped log lines (registered by [`super::Metrics`]).
pub fn dropped_lines() -> Counter {
    DROPPED.clone()
}

enum Message {
    Line(Vec<u8>),
    /// Everything queued before it is written; then the sender is answered.
    Flush(SyncSender<()>),
}

/// A `MakeWriter` whose writers hand each formatted line to the queue.
#[derive(Clone)]
pub struct NonBlocking {
    queue: SyncSender<Message>,
    dropped: Counter,
}

/// Flushes what is queued when dropped (at exit), waiting at most a second.
#[must_use = "dropping the guard flushes the log queue"]
pub struct FlushGuard {
    queue: SyncSender<Message>,
    _thread: JoinHandle<()>,
}

/// A non-blocking writer to `out` holding at most `capacity` lines, and the guard that
/// flushes it. `out` is written from a thread of its own, several lines per write.
pub fn non_blocking<W: Write + Send + 'static>(
    out: W,
    capacity: usize,
    dropped: Counter,
) -> io::Result<(NonBlocking, FlushGuard)> {
    let (queue, lines) = mpsc::sync_channel(capacity);
    let thread = std::thread::Builder::new()
        .name("log-writer".to_owned())
        .spawn(move || write_lines(out, &lines))?;
    Ok((
        NonBlocking {
            queue: queue.clone(),
            dropped,
        },
        FlushGuard {
            queue,
            _thread: thread,
        },
    ))
}

/// How long the writer thread lets lines gather after the first one before writing.
/// At a moderate rate a thread woken per line cost a futex wake-up, a context switch
/// and a `write` for every request; this way it is one of each per window (20 a second
/// at most), while the default queue of 8192 lines absorbs a window of up to 160 000
/// lines a second. Lines reach stdout at most this much later.
const GATHER: Duration = Duration::from_millis(50);
/// Bytes written at most per `write`.
const BATCH_BYTES: usize = 64 * 1024;

/// The writer thread: sleeps until a line comes (no wake-ups while idle), lets the
/// others of the next [`GATHER`] join it, and writes them with one call.
fn write_lines<W: Write>(mut out: W, lines: &Receiver<Message>) {
    let mut batch = Vec::with_capacity(BATCH_BYTES);
    let mut answers = Vec::new();
    while let Ok(first) = lines.recv() {
        // A flush (at exit) is answered without waiting for more lines.
        if matches!(first, Message::Line(_)) {
            std::thread::sleep(GATHER);
        }
        let mut next = Some(first);
        while let Some(message) = next {
            match message {
                Message::Line(line) => batch.extend_from_slice(&line),
                Message::Flush(answer) => answers.push(answer),
            }
            if batch.len() >= BATCH_BYTES {
                write_batch(&mut out, &mut batch);
            }
            next = lines.try_recv().ok();
        }
        write_batch(&mut out, &mut batch);
        for answer in answers.drain(..) {
            let _gone = answer.send(());
        }
    }
}

fn write_batch<W: Write>(out: &mut W, batch: &mut Vec<u8>) {
    if batch.is_empty() {
        return;
    }
    // A failing stdout loses these lines; there is nowhere to report it.
    let _lost = out.write_all(batch).and_then(|()| out.flush());
    batch.clear();
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        let (answer, done) = mpsc::sync_channel(1);
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut flush = Message::Flush(answer);
        // The queue may be full of lines for a stuck stdout: retry until the deadline.
        loop {
            match self.queue.try_send(flush) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) if Instant::now() < deadline => {
                    flush = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return,
            }
        }
        let wait = deadline.saturating_duration_since(Instant::now());
        if let Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) =
            done.recv_timeout(wait)
        {
            // Exiting anyway: a stuck stdout must not hold the process.
        }
    }
}

/// One formatted event, sent as a whole when the formatter is done with it.
pub struct Line<'a> {
    owner: &'a NonBlocking,
    buffer: Vec<u8>,
}

impl Write for Line<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Line<'_> {
    fn drop(&mut self) {
        if self.buffer.is_empty() {
            return;
        }
        let line = std::mem::take(&mut self.buffer);
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.owner.queue.try_send(Message::Line(line))
        {
            self.owner.dropped.inc();
        }
    }
}

impl<'a> MakeWriter<'a> for NonBlocking {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        Line {
            owner: self,
            buffer: Vec::with_capacity(512),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// An output that blocks every write until the test opens the gate, and says when
    /// a write began.
    #[derive(Clone)]
    struct Gated {
        gate: Arc<Mutex<()>>,
        written: Arc<Mutex<Vec<u8>>>,
        entered: SyncSender<()>,
    }

    fn gated() -> (Gated, Receiver<()>) {
        let (entered, writes) = mpsc::sync_channel(1024);
        let out = Gated {
            gate: Arc::default(),
            written: Arc::default(),
            entered,
        };
        (out, writes)
    }

    impl Write for Gated {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            let _told = self.entered.try_send(());
            let _open = self.gate.lock().map_err(|_| io::Error::other("poisoned"))?;
            self.written
                .lock()
                .map_err(|_| io::Error::other("poisoned"))?
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn line(writer: &NonBlocking, text: &str) {
        writer
            .make_writer()
            .write_all(text.as_bytes())
            .expect("buffered");
    }

    fn written(out: &Gated) -> String {
        String::from_utf8(out.written.lock().expect("out").clone()).expect("utf8")
    }

    #[test]
    fn a_stuck_output_drops_and_counts_lines_instead_of_blocking() {
        let (out, writes) = gated();
        let dropped = Counter::default();
        let closed = out.gate.lock().expect("gate");
        let (writer, guard) = non_blocking(out.clone(), 4, dropped.clone()).expect("thread");
        line(&writer, "first\n");
        // The writer thread now holds "first" and waits for the gate: the queue takes 4
        // of the next 100 lines, the other 96 are dropped at once.
        writes.recv().expect("the writer thread writes");
        for n in 0..100 {
            line(&writer, &format!("line {n}\n"));
        }
        assert_eq!(dropped.get(), 96);
        drop(closed);
        drop(guard);
        assert_eq!(written(&out), "first\nline 0\nline 1\nline 2\nline 3\n");
    }

    #[test]
    fn every_line_arrives_whole_and_in_order_when_the_output_keeps_up() {
        let (out, _writes) = gated();
        let (writer, guard) = non_blocking(out.clone(), 1024, Counter::default()).expect("thread");
        for n in 0..500 {
            let mut w = writer.make_writer();
            // A formatter may write one line in pieces.
            w.write_all(format!("line {n}").as_bytes()).expect("piece");
            w.write_all(b"\n").expect("end");
        }
        drop(guard);
        let expected: Vec<String> = (0..500).map(|n| format!("line {n}")).collect();
        assert_eq!(written(&out).lines().collect::<Vec<_>>(), expected);
    }
}
