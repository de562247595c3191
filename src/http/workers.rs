//! Thread-per-core serving (`runtime.flavor = "thread_per_core"`): one current-thread
//! runtime per worker thread, each owning the client connections handed to it and the
//! upstream connections its requests open (see [`current_lane`]). A request is then
//! served from its first byte to its last on one thread: no task is woken across
//! threads, so at a moderate rate each request costs the two wake-ups it cannot avoid
//! (the client's request, the backend's reply) and no more, while the process still
//! uses every CPU at peak. Connections go to the worker with the fewest open ones.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::sync::watch;

use crate::config::{RuntimeConfig, RuntimeFlavor};

thread_local! {
    static LANE: Cell<usize> = const { Cell::new(0) };
}

/// The worker (lane) the calling thread serves: 0 outside thread-per-core workers.
/// Per-instance upstream state indexed by it is only ever used from one thread.
pub fn current_lane() -> usize {
    LANE.with(Cell::get)
}

/// One worker's runtime and how many connections it holds.
#[derive(Debug)]
struct Worker {
    handle: Handle,
    open: AtomicUsize,
}

/// Where accepted connections are served: the accepting runtime itself (the
/// multi-thread and current-thread flavours), or a set of worker runtimes.
#[derive(Debug, Clone, Default)]
pub struct Workers {
    workers: Arc<[Worker]>,
}

impl Workers {
    /// Serve every connection on the runtime that accepted it.
    pub fn local() -> Self {
        Self::default()
    }

    /// `count` workers: the calling thread's runtime (which must be a current-thread
    /// runtime this thread drives) as lane 0, and `count - 1` threads with a
    /// current-thread runtime each.
    pub fn start(count: NonZeroUsize) -> io::Result<(Self, WorkerThreads)> {
        let here = Handle::try_current().map_err(io::Error::other)?;
        let (stop, _) = watch::channel(false);
        let mut workers = vec![Worker {
            handle: here,
            open: AtomicUsize::new(0),
        }];
        let mut threads = Vec::with_capacity(count.get() - 1);
        for lane in 1..count.get() {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            workers.push(Worker {
                handle: runtime.handle().clone(),
                open: AtomicUsize::new(0),
            });
            let mut stopped = stop.subscribe();
            // Events go where the starting thread's go (the global subscriber, or a
            // test's scoped one).
            let dispatch = tracing::dispatcher::get_default(Clone::clone);
            let thread = std::thread::Builder::new()
                .name(format!("sms-worker-{lane}"))
                .spawn(move || {
                    let _logs = tracing::dispatcher::set_default(&dispatch);
                    LANE.with(|current| current.set(lane));
                    runtime.block_on(async move {
                        let anchor = tokio::spawn(anchor_timers());
                        let _stopped = stopped.wait_for(|stop| *stop).await;
                        anchor.abort();
                    });
                })?;
            threads.push(thread);
        }
        let workers = Self {
            workers: workers.into(),
        };
        Ok((workers, WorkerThreads { stop, threads }))
    }

    /// The workers `runtime` asks for: started ones with `thread_per_core` (the calling
    /// thread's current-thread runtime as the first), else serving on the accepting
    /// runtime.
    pub fn for_runtime(runtime: &RuntimeConfig) -> io::Result<(Self, Option<WorkerThreads>)> {
        if runtime.flavor == RuntimeFlavor::ThreadPerCore {
            let (workers, threads) = Self::start(runtime.workers())?;
            Ok((workers, Some(threads)))
        } else {
            Ok((Self::local(), None))
        }
    }

    /// Open connections per worker (empty without workers).
    pub fn open_connections(&self) -> Vec<usize> {
        self.workers
            .iter()
            .map(|worker| worker.open.load(Ordering::Relaxed))
            .collect()
    }

    /// Runs `serve(tcp)` on the worker with the fewest open connections (the accepting
    /// runtime when there are no workers). The stream moves to that worker's reactor,
    /// so its readiness events wake that worker only.
    pub fn spawn<F, Fut>(&self, tcp: TcpStream, serve: F) -> io::Result<()>
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Some((index, worker)) = self
            .workers
            .iter()
            .enumerate()
            .min_by_key(|(_, worker)| worker.open.load(Ordering::Relaxed))
        else {
            tokio::spawn(serve(tcp));
            return Ok(());
        };
        let std = tcp.into_std()?;
        worker.open.fetch_add(1, Ordering::Relaxed);
        let workers = self.workers.clone();
        worker.handle.spawn(async move {
            let _open = OpenOn { workers, index };
            match TcpStream::from_std(std) {
                Ok(tcp) => serve(tcp).await,
                Err(err) => tracing::debug!(%err, "cannot register a connection with its worker"),
            }
        });
        Ok(())
    }
}

/// Counts a connection against its worker while it lives.
struct OpenOn {
    workers: Arc<[Worker]>,
    index: usize,
}

impl Drop for OpenOn {
    fn drop(&mut self) {
        if let Some(worker) = self.workers.get(self.index) {
            worker.open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The worker threads of [`Workers::start`]; stopping (or dropping) them ends their
/// runtimes, cancelling whatever still runs there.
#[derive(Debug)]
pub struct WorkerThreads {
    stop: watch::Sender<bool>,
    threads: Vec<JoinHandle<()>>,
}

impl WorkerThreads {
    /// Ends the worker threads and waits for them.
    pub fn stop(mut self) {
        self.end();
    }

    fn end(&mut self) {
        let _sent = self.stop.send(true);
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                tracing::error!("a worker thread panicked");
            }
        }
    }
}

impl Drop for WorkerThreads {
    fn drop(&mut self) {
        self.end();
    }
}

/// How far ahead [`anchor_timers`] keeps a timer due.
const TIMER_ANCHOR: Duration = Duration::from_millis(250);

/// Keeps a timer due within [`TIMER_ANCHOR`] at all times, on the runtime it runs on.
/// Tokio's time driver wakes the thread parked on it (an eventfd write, and in the
/// multi-thread runtime a context switch to another worker that then finds nothing to
/// do) whenever a new timer is due before the earliest one it parked for. Without an
/// earlier timer pending, every request's deadline did that; with this one, deadlines
/// of a second or more never do, at the price of four wake-ups a second.
pub(super) async fn anchor_timers() {
    loop {
        tokio::time::sleep(TIMER_ANCHOR).await;
    }
}
