//! The deadline for receiving a request body. The server wraps every body in
//! a [`DeadlineBody`] that fails once the request's deadline — counted from
//! its arrival, not reset per chunk — has passed, so a client sending one
//! byte a second is cut however steadily it sends. The handler reading the
//! body sees [`RequestTimedOut`] in its error's source chain and answers 408.

use std::{
    error::Error as StdError,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use axum::{extract::Request, middleware::Next, response::Response};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::{ApiError, config::Deadline, config::RequestDeadlines};

/// The body of a request that was not received in time.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the request was not received within {} s ({})", .0.after.as_secs(), .0.setting)]
pub struct RequestTimedOut(pub Deadline);

impl From<&RequestTimedOut> for ApiError {
    fn from(timed_out: &RequestTimedOut) -> Self {
        ApiError::request_timeout(timed_out.to_string())
    }
}

/// The [`RequestTimedOut`] somewhere in `err`'s source chain, if any: body
/// errors reach handlers wrapped in the extractors' own errors (multipart,
/// JSON), several boxes deep.
pub fn timed_out<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a RequestTimedOut> {
    let mut current = Some(err);
    while let Some(err) = current {
        if let Some(found) = err.downcast_ref::<RequestTimedOut>() {
            return Some(found);
        }
        current = err.source();
    }
    None
}

/// One request's deadline, in its extensions: the body polls it, and the
/// layer of an upload route ([`upload_deadline`]) moves it to the upload
/// deadline before the handler reads a byte.
#[derive(Debug, Clone)]
pub struct RequestDeadline {
    arrived: Instant,
    deadlines: RequestDeadlines,
    current: Arc<Mutex<Deadline>>,
}

impl RequestDeadline {
    pub fn new(deadlines: RequestDeadlines) -> Self {
        Self {
            arrived: Instant::now(),
            deadlines,
            current: Arc::new(Mutex::new(deadlines.request)),
        }
    }

    fn current(&self) -> Deadline {
        // A poisoned lock only means another thread panicked mid-assignment
        // of a `Copy` value: the value is still whole.
        *self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn expires_at(&self) -> Instant {
        self.arrived + self.current().after
    }

    /// From now on this request has the upload deadline.
    pub fn use_upload_deadline(&self) {
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = self.deadlines.upload;
    }
}

/// Route layer (`axum::middleware::from_fn(upload_deadline)`) marking a
/// route as an upload: its body gets the upload deadline instead of the
/// request deadline. Without a server-set deadline (a router driven
/// directly, as in tests) it does nothing.
pub async fn upload_deadline(request: Request, next: Next) -> Response {
    if let Some(deadline) = request.extensions().get::<RequestDeadline>() {
        deadline.use_upload_deadline();
    }
    next.run(request).await
}

/// A request body that fails with [`RequestTimedOut`] once its request's
/// deadline has passed.
pub struct DeadlineBody<B> {
    inner: B,
    deadline: RequestDeadline,
    sleep: Pin<Box<Sleep>>,
    expired: bool,
}

impl<B> DeadlineBody<B> {
    pub fn new(inner: B, deadline: RequestDeadline) -> Self {
        let sleep = Box::pin(tokio::time::sleep_until(deadline.expires_at()));
        Self {
            inner,
            deadline,
            sleep,
            expired: false,
        }
    }
}

impl<B> Body for DeadlineBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn StdError + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.expired {
            return Poll::Ready(None);
        }
        // The upload layer may have moved the deadline since the last poll.
        let expires_at = this.deadline.expires_at();
        if this.sleep.deadline() != expires_at {
            this.sleep.as_mut().reset(expires_at);
        }
        // The clock is checked before the data, so a client that always has
        // a byte ready is cut too.
        if this.sleep.as_mut().poll(cx).is_ready() {
            this.expired = true;
            return Poll::Ready(Some(Err(Box::new(RequestTimedOut(
                this.deadline.current(),
            )))));
        }
        Pin::new(&mut this.inner).poll_frame(cx).map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.expired || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http_body_util::{BodyExt, StreamBody};

    use super::*;

    fn deadlines(request: u64, upload: u64) -> RequestDeadlines {
        let deadline = |s| Deadline {
            after: Duration::from_secs(s),
            setting: "REQUEST_TIMEOUT_SECONDS",
        };
        RequestDeadlines {
            request: deadline(request),
            upload: deadline(upload),
        }
    }

    /// A body that yields a byte every second, forever.
    fn trickle() -> impl Body<Data = Bytes, Error = std::io::Error> + Unpin {
        let stream = futures_util::stream::unfold((), |()| async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Some((Ok(Frame::data(Bytes::from_static(b"x"))), ()))
        });
        StreamBody::new(Box::pin(stream))
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickling_body_fails_at_the_deadline_from_arrival() {
        let started = Instant::now();
        let mut body = DeadlineBody::new(trickle(), RequestDeadline::new(deadlines(5, 60)));
        let mut bytes = 0;
        let err = loop {
            match body.frame().await {
                Some(Ok(_)) => bytes += 1,
                Some(Err(e)) => break e,
                None => panic!("the body ended"),
            }
        };
        // Chunks kept arriving; the deadline was not reset by them.
        assert_eq!(bytes, 4);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        let timed_out = timed_out(err.as_ref()).expect("a RequestTimedOut");
        assert_eq!(timed_out.0.after, Duration::from_secs(5));
        assert!(body.frame().await.is_none(), "nothing after the error");
    }

    #[tokio::test(start_paused = true)]
    async fn the_upload_layer_moves_the_deadline() {
        let started = Instant::now();
        let deadline = RequestDeadline::new(deadlines(2, 10));
        let mut body = DeadlineBody::new(trickle(), deadline.clone());
        deadline.use_upload_deadline();
        while let Some(Ok(_)) = body.frame().await {}
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }

    #[test]
    fn found_through_wrapping_errors() {
        let inner: Box<dyn StdError + Send + Sync> = Box::new(RequestTimedOut(Deadline {
            after: Duration::from_secs(3),
            setting: "UPLOAD_TIMEOUT_SECONDS",
        }));
        let wrapped = axum::Error::new(axum::Error::new(inner));
        let found = timed_out(&wrapped).expect("found");
        assert_eq!(
            found.to_string(),
            "the request was not received within 3 s (UPLOAD_TIMEOUT_SECONDS)"
        );
        assert!(timed_out(&std::io::Error::other("x")).is_none());
    }
}
