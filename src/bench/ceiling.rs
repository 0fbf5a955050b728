//! The HTTP ceiling: the fastest any daemon could answer this load generator on this machine.
//!
//! `tally bench --ceiling` serves `POST /v1/events` from a trivial axum endpoint that reads the
//! body and answers `{}` (no parsing, no storage, no durability) on a runtime of its own with
//! as many workers as the daemon has, and drives it with the same clients and the same bodies
//! as the `llm` scenario. Ingest figures divided by this one say how much of the machine
//! Tally's own work takes, independent of how fast the machine is.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use axum::body::Bytes;
use axum::routing::post;
use axum::Router;
use tokio::runtime::Runtime;

use super::deliveries::Outcome;
use super::llm::{Fixtures, Ids};
use super::{drive, Target};
use tokio::sync::oneshot;

/// A server on a thread of its own; stopped when dropped.
pub struct Server {
    /// Its base URL.
    pub base: String,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Not joined: a client's idle keep-alive connection could hold a graceful shutdown
        // open, and the thread ends with the process anyway.
        drop(self.thread.take());
    }
}

/// A multi-thread runtime with one worker per core (as `tally serve` has), so a server does
/// not share the load generator's runtime.
pub fn runtime() -> anyhow::Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("bench-server")
        .build()
        .context("cannot start the server's runtime")
}

/// Serves `router` on 127.0.0.1 from `runtime`, on a thread of its own.
pub fn serve(runtime: Runtime, router: Router) -> anyhow::Result<Server> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        runtime.block_on(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                return;
            };
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        runtime.shutdown_background();
    });
    Ok(Server {
        base,
        stop: Some(stop),
        thread: Some(thread),
    })
}

/// The trivial endpoint.
pub fn start() -> anyhow::Result<Server> {
    serve(runtime()?, Router::new().route("/v1/events", post(accept)))
}

/// Drives the endpoint with the `llm` scenario's single-event bodies.
pub(super) async fn run(
    server: &Server,
    fixtures: &Fixtures,
    clients: usize,
    duration: Duration,
) -> Outcome {
    let target = Target::remote(&server.base, "ceiling");
    let make = fixtures.requests(1, Ids::Ordered);
    let answered = Arc::new(AtomicU64::new(0));
    let (latencies, errors, elapsed) = drive(&target, clients, duration, make, answered).await;
    Outcome {
        verified: errors == 0,
        check: "the same bodies, read and answered {} with no work".into(),
        latencies,
        errors,
        elapsed,
    }
}

async fn accept(body: Bytes) -> ([(&'static str, &'static str); 1], &'static str) {
    std::hint::black_box(body);
    ([("content-type", "application/json")], "{}")
}
