//! Request bodies: a size limit, a read deadline, and a server-wide budget
//! for the bytes of bodies in flight.
//!
//! A request announces its body size (`Content-Length`; a body without one
//! is refused with 411): more than `--max-body-bytes` is refused with 413;
//! otherwise that many bytes are reserved from `--body-budget-bytes` for as
//! long as the body exists, or the request is refused with 503 (try later)
//! when the budget is spent. The body must then arrive within
//! `--body-read-timeout-ms`: a stalled body fails the request and hyper
//! closes the connection. A body longer than it announced fails too.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use warp::http::{HeaderMap, StatusCode, header};

/// Budget unit: permits are KiB (a semaphore counts in u32).
const UNIT: u64 = 1024;

/// Why a body was refused before it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyRefusal {
    /// No `Content-Length` on a body.
    #[error("a request body needs a Content-Length")]
    LengthRequired,
    /// Over `--max-body-bytes`.
    #[error("request body larger than {0} bytes")]
    TooLarge(u64),
    /// The server-wide budget is spent.
    #[error("server busy with other uploads, try again")]
    Busy,
}

impl BodyRefusal {
    /// The HTTP status.
    pub fn status(self) -> StatusCode {
        match self {
            BodyRefusal::LengthRequired => StatusCode::LENGTH_REQUIRED,
            BodyRefusal::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            BodyRefusal::Busy => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// The shared bound on request bodies.
#[derive(Debug, Clone)]
pub struct BodyBudget {
    /// Bytes (in [`UNIT`]s) of bodies in flight, server-wide.
    in_flight: Arc<Semaphore>,
    max_body: u64,
    read_timeout: Duration,
}

/// What a request may still send, checked as its body streams in.
#[derive(Debug)]
pub struct Allowance {
    left: u64,
    deadline: Duration,
    _reserved: Option<OwnedSemaphorePermit>,
}

impl BodyBudget {
    /// `budget` bytes in flight in total, `max_body` per request, each body
    /// within `read_timeout`.
    pub fn new(budget: u64, max_body: u64, read_timeout: Duration) -> BodyBudget {
        let units = budget.div_ceil(UNIT).min(Semaphore::MAX_PERMITS as u64) as usize;
        BodyBudget {
            in_flight: Arc::new(Semaphore::new(units)),
            max_body,
            read_timeout,
        }
    }

    /// Reserves what the request with `headers` announces.
    pub fn reserve(&self, headers: &HeaderMap) -> Result<Allowance, BodyRefusal> {
        let length = match headers.get(header::CONTENT_LENGTH) {
            Some(v) => v
                .to_str()
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or(BodyRefusal::LengthRequired)?,
            None if headers.contains_key(header::TRANSFER_ENCODING) => {
                return Err(BodyRefusal::LengthRequired);
            }
            None => 0,
        };
        if length > self.max_body {
            return Err(BodyRefusal::TooLarge(self.max_body));
        }
        let reserved = if length == 0 {
            None
        } else {
            let units = u32::try_from(length.div_ceil(UNIT)).map_err(|_| BodyRefusal::Busy)?;
            Some(
                self.in_flight
                    .clone()
                    .try_acquire_many_owned(units)
                    .map_err(|_| BodyRefusal::Busy)?,
            )
        };
        Ok(Allowance {
            left: length,
            deadline: self.read_timeout,
            _reserved: reserved,
        })
    }
}

/// Why reading a body failed.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Not all of it arrived in time.
    #[error("request body not received within {0:?}")]
    TimedOut(Duration),
    /// More than `Content-Length`.
    #[error("request body longer than its Content-Length")]
    TooLong,
    /// The connection failed.
    #[error(transparent)]
    Read(#[from] hyper::Error),
}

pin_project_lite::pin_project! {
    /// A request body held to its [`Allowance`] and deadline.
    pub struct BoundedBody<B> {
        #[pin]
        inner: B,
        #[pin]
        deadline: Sleep,
        allowance: Allowance,
    }
}

impl<B> BoundedBody<B> {
    /// Wraps `inner`; the deadline starts now.
    pub fn new(inner: B, allowance: Allowance) -> BoundedBody<B> {
        BoundedBody {
            inner,
            deadline: tokio::time::sleep(allowance.deadline),
            allowance,
        }
    }
}

impl<B> Body for BoundedBody<B>
where
    B: Body<Data = Bytes, Error = hyper::Error>,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > this.allowance.left {
                        return Poll::Ready(Some(Err(BodyError::TooLong)));
                    }
                    this.allowance.left -= len;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                ready!(this.deadline.poll(cx));
                Poll::Ready(Some(Err(BodyError::TimedOut(this.allowance.deadline))))
            }
        }
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
    use super::*;
    use warp::http::HeaderValue;

    fn with_length(len: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static(len));
        h
    }

    #[test]
    fn bodies_over_the_limit_or_without_a_length_are_refused() {
        let budget = BodyBudget::new(1 << 20, 1000, Duration::from_secs(1));
        assert_eq!(
            budget.reserve(&with_length("1001")).err(),
            Some(BodyRefusal::TooLarge(1000))
        );
        assert_eq!(
            budget.reserve(&with_length("x")).err(),
            Some(BodyRefusal::LengthRequired)
        );
        let mut chunked = HeaderMap::new();
        chunked.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        assert_eq!(
            budget.reserve(&chunked).err(),
            Some(BodyRefusal::LengthRequired)
        );
        assert!(budget.reserve(&HeaderMap::new()).is_ok());
    }

    #[test]
    fn the_budget_is_shared_and_returned() {
        let budget = BodyBudget::new(10 * 1024, 8 * 1024, Duration::from_secs(1));
        let first = budget.reserve(&with_length("8192")).expect("first fits");
        assert_eq!(
            budget.reserve(&with_length("4096")).err(),
            Some(BodyRefusal::Busy)
        );
        assert!(budget.reserve(&with_length("2048")).is_ok());
        drop(first);
        assert!(budget.reserve(&with_length("8192")).is_ok());
    }
}
