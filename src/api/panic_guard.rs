//! A request whose handler panics (a defect) is answered 500 `internal_error` instead of having
//! its connection dropped: the panic is caught where the handler's future is polled.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};

/// Polls the inner future and turns a panic into `Err(())`. After a panic the inner future is
/// never polled again.
pub struct PanicGuard<F> {
    inner: Pin<Box<F>>,
}

impl<F: Future> PanicGuard<F> {
    /// Guards `future`.
    pub fn new(future: F) -> Self {
        Self {
            inner: Box::pin(future),
        }
    }
}

impl<F: Future> Future for PanicGuard<F> {
    type Output = Result<F::Output, ()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.inner.as_mut();
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(_) => Poll::Ready(Err(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_becomes_an_error_and_a_value_passes_through() {
        assert_eq!(PanicGuard::new(async { 7 }).await, Ok(7));
        let panicking = async {
            tokio::task::yield_now().await;
            let values: Vec<u32> = Vec::new();
            values.first().copied().expect("a defect")
        };
        assert_eq!(PanicGuard::new(panicking).await, Err(()));
    }
}
