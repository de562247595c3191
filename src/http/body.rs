//! A request body with read time limits: a longest pause between two frames and a
//! longest time for the whole body. A stalled or endless (chunked) body then ends in
//! [`BodyTimedOut`], which the input reader answers with 408; the request and its
//! buffered bytes are dropped with it.
//!
//! The timer is armed only when a read has to wait, so a body that is already there
//! (or absent) costs no timer.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use super::server::ConnShared;

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
    conn: Arc<ConnShared>,
}

impl<B> TimedBody<B> {
    pub(crate) fn new(inner: B, limits: BodyTimeouts, conn: Arc<ConnShared>) -> Self {
        Self {
            inner,
            limits,
            total_deadline: None,
            timer: None,
            armed: false,
            conn,
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
            let total = *this
                .total_deadline
                .get_or_insert(now + this.limits.total);
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
            this.conn.body_timed_out();
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
