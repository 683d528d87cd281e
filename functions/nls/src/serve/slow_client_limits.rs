//! The accept loop of `nls serve`, with time limits for slow clients.
//!
//! `axum::serve` sets no header read timeout, so a client that sends its headers a byte at a
//! time (slowloris) holds a connection, a task and a file descriptor for as long as it likes;
//! enough of them and the process runs out of descriptors. Here hyper closes a connection whose
//! request headers take longer than `header_read`, and [`with_body_deadline`] fails a body that
//! is still arriving `body_read` after the request started (the handler answers 400).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request};
use http_body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::time::Sleep;

#[derive(Debug, Clone, Copy)]
pub struct SlowClientLimits {
    /// From the first byte of a request to the end of its headers.
    pub header_read: Duration,
    /// From the start of a request to the end of its body.
    pub body_read: Duration,
}

/// How long shutdown waits for in-flight requests.
const DRAIN_FOR: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `shutdown` resolves, then drains in-flight connections.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: SlowClientLimits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let body_read = limits.body_read;
    let app = app.layer(axum::middleware::map_request(move |req: Request| async move {
        with_body_deadline(req, body_read)
    }));
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors or the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Answers are one write each: don't let Nagle hold one back for a delayed ACK.
        let _ = stream.set_nodelay(true);
        let with_peer = tower::util::MapRequest::new(app.clone(), move |mut req: Request<_>| {
            req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
            req
        });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(with_peer))
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // Errors here are clients going away or timing out: nothing to act on.
            let _ = connection.await;
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_FOR, graceful.shutdown()).await.is_err() {
        tracing::warn!("in-flight connections still open after {DRAIN_FOR:?}; stopping anyway");
    }
    Ok(())
}

/// Replaces the body with one that fails once `limit` has passed since now.
fn with_body_deadline(req: Request, limit: Duration) -> Request {
    req.map(|body| Body::new(DeadlineBody { inner: body, deadline: Box::pin(tokio::time::sleep(limit)) }))
}

struct DeadlineBody {
    inner: Body,
    deadline: Pin<Box<Sleep>>,
}

#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
struct BodyTooSlow;

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(axum::Error::new(BodyTooSlow)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
