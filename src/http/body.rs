//! A request body with read time limits: a longest pause between two frames and a
//! longest time for the whole body. A stalled or endless (chunked) body then ends in
//! [`BodyTimedOut`], which the input reader answers with 408; the request and its
//! buffered bytes are dropped with it.
//!
//! The timer is armed only when a read has to wait, so a body that is already there
//! (or absent) costs no timer.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use prometheus_client::metrics::counter::Counter;
use tokio::time::{Instant, Sleep};

/// The read limits of a request body.
#[derive(Debug, Clone, Copy)]
pub struct BodyTimeouts {
    /// Longest wait for the next frame.
    pub gap: Duration,
    /// Longest time from the first read to the end of the body.
    pub total: Duration,
}

/// The body's sender was too slow.
#[derive(Debug, thiserror::Error)]
#[error("request body not received in time")]
pub struct BodyTimedOut;

/// `B` with [`BodyTimeouts`].
pub struct TimedBody<B> {
    inner: B,
    limits: BodyTimeouts,
    /// End of the whole-body allowance, set at the first wait.
    total_deadline: Option<Instant>,
    /// The current wait's timer; `armed` is false after a frame arrived.
    timer: Option<Pin<Box<Sleep>>>,
    armed: bool,
    /// Counts bodies cut (`connections_closed_total{reason="body_timeout"}`).
    timeouts: Counter,
}

impl<B> TimedBody<B> {
    /// `inner` read under `limits`; a cut is counted in `timeouts`.
    pub fn new(inner: B, limits: BodyTimeouts, timeouts: Counter) -> Self {
        Self {
            inner,
            limits,
            total_deadline: None,
            timer: None,
            armed: false,
            timeouts,
        }
    }
}

impl<B> Body for TimedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(frame)) => {
                this.armed = false;
                return Poll::Ready(Some(frame.map_err(Into::into)));
            }
            Poll::Ready(None) => {
                this.timer = None;
                return Poll::Ready(None);
            }
            Poll::Pending => {}
        }
        if !this.armed {
            let now = Instant::now();
            let total = *this.total_deadline.get_or_insert(now + this.limits.total);
            let deadline = total.min(now + this.limits.gap);
            match &mut this.timer {
                Some(timer) => timer.as_mut().reset(deadline),
                None => this.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
            this.armed = true;
        }
        if let Some(timer) = &mut this.timer
            && timer.as_mut().poll(cx).is_ready()
        {
            this.timer = None;
            this.armed = false;
            this.timeouts.inc();
            return Poll::Ready(Some(Err(Box::new(BodyTimedOut))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    /// Sends one byte every `every`, forever (or never, when `every` is `None`).
    struct Trickle {
        every: Option<Duration>,
        next: Option<Pin<Box<Sleep>>>,
    }

    impl Body for Trickle {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            let Some(every) = self.every else {
                return Poll::Pending;
            };
            let next = self
                .next
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(every)));
            std::task::ready!(next.as_mut().poll(cx));
            self.next = None;
            Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"x")))))
        }
    }

    fn limits(gap: u64, total: u64) -> BodyTimeouts {
        BodyTimeouts {
            gap: Duration::from_secs(gap),
            total: Duration::from_secs(total),
        }
    }

    async fn cut_after(body: Trickle, limits: BodyTimeouts) -> (Duration, Counter) {
        let counter = Counter::default();
        let started = Instant::now();
        let result = TimedBody::new(body, limits, counter.clone())
            .collect()
            .await;
        let err = result.expect_err("the body is cut");
        assert!(err.is::<BodyTimedOut>(), "{err}");
        (started.elapsed(), counter)
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_is_cut_after_the_gap() {
        let stalled = Trickle {
            every: None,
            next: None,
        };
        let (elapsed, counter) = cut_after(stalled, limits(2, 60)).await;
        assert_eq!(elapsed, Duration::from_secs(2));
        assert_eq!(counter.get(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickling_body_is_cut_at_the_total() {
        let trickle = Trickle {
            every: Some(Duration::from_secs(1)),
            next: None,
        };
        // Each byte comes within the 2 s gap; the 5 s total still ends it.
        let (elapsed, _) = cut_after(trickle, limits(2, 5)).await;
        assert_eq!(elapsed, Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_complete_body_is_untouched() {
        let body = http_body_util::Full::new(Bytes::from_static(b"{}"));
        let collected = TimedBody::new(body, limits(1, 1), Counter::default())
            .collect()
            .await
            .expect("body");
        assert_eq!(collected.to_bytes(), Bytes::from_static(b"{}"));
    }
}
