//! Contains a panic inside a future, so a bug hit by one request or one license becomes an
//! error for that request or license instead of a dropped connection or a dead job.
//!
//! The HTTP guard answers a caught panic with the standard 500 body, the renewals job records
//! it as that license's failure, and `nls serve`'s scheduler keeps running. No I/O and no
//! runtime: it builds for wasm32, where a panic aborts the instance anyway (nothing to catch).

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

/// A future panicked; the payload's message, when it had one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("panicked: {0}")]
pub struct Panicked(pub String);

impl Panicked {
    fn from_payload(payload: Box<dyn Any + Send>) -> Self {
        let message = match payload.downcast::<String>() {
            Ok(text) => *text,
            Err(payload) => payload.downcast_ref::<&str>().map_or("(no message)", |s| s).to_owned(),
        };
        Self(message)
    }
}

/// [`catch_panic`]'s future.
pub struct CatchPanic<F> {
    inner: Pin<Box<F>>,
}

/// Runs `future`, turning a panic while it is polled into `Err(Panicked)`. The future is
/// dropped after a panic and never polled again. Callers use this only where what the future
/// shares survives a panic (the core's locks all recover from poisoning).
pub fn catch_panic<F: Future>(future: F) -> CatchPanic<F> {
    CatchPanic { inner: Box::pin(future) }
}

impl<F: Future> Future for CatchPanic<F> {
    type Output = Result<F::Output, Panicked>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.inner.as_mut();
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(value)) => Poll::Ready(Ok(value)),
            Err(payload) => Poll::Ready(Err(Panicked::from_payload(payload))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: Future>(future: F) -> F::Output {
        let mut future = Box::pin(future);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        loop {
            if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
                return out;
            }
        }
    }

    #[test]
    fn a_panic_becomes_an_error_with_its_message() {
        let number = 7;
        let caught = block_on(catch_panic(async move { panic!("bad license {number}") }));
        assert_eq!(caught, Err::<(), _>(Panicked("bad license 7".to_owned())));
        let literal = block_on(catch_panic(async { panic!("literal") }));
        assert_eq!(literal, Err::<(), _>(Panicked("literal".to_owned())));
    }

    #[test]
    fn a_future_that_completes_passes_through() {
        assert_eq!(block_on(catch_panic(async { 41 + 1 })), Ok(42));
    }
}
