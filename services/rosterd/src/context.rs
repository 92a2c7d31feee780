//! The request-context layer: a request id, a tracing span and the caller's credential for every call.
//!
//! It runs before any handler, on the raw HTTP request. It does not touch the database: it only
//! lifts `authorization: Bearer …` into a [`Credential`] extension, which handlers resolve through
//! [`crate::auth`]. The request id comes from `x-request-id` when the client sends a sane one, is
//! generated otherwise, and is echoed in the response headers.

use http::{HeaderValue, Request, Response};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tower::{Layer, Service};
use tracing::Instrument;

/// The header that carries the request id both ways.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// What the client presented in `authorization`. `Debug` redacts the secret.
#[derive(Clone)]
pub(crate) enum Credential {
    /// No `authorization` header.
    Missing,
    /// Not `Bearer <token>`.
    Malformed,
    /// A bearer secret: a session token or a service key.
    Bearer(String),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Credential::Missing => "Missing",
            Credential::Malformed => "Malformed",
            Credential::Bearer(_) => "Bearer(<redacted>)",
        })
    }
}

/// The request id of the call.
#[derive(Debug, Clone)]
pub(crate) struct RequestId(pub(crate) String);

/// Adds [`RequestContext`] to a service.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestContextLayer;

impl<S> Layer<S> for RequestContextLayer {
    type Service = RequestContext<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestContext { inner }
    }
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct RequestContext<S> {
    inner: S,
}

impl<S, B, R> Service<Request<B>> for RequestContext<S>
where
    S: Service<Request<B>, Response = Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let request_id = request
            .headers()
            .get(REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| is_sane_request_id(v))
            .map(str::to_owned)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let credential = match request.headers().get(http::header::AUTHORIZATION) {
            None => Credential::Missing,
            Some(value) => match value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")) {
                Some(secret) if !secret.trim().is_empty() => Credential::Bearer(secret.trim().to_owned()),
                _ => Credential::Malformed,
            },
        };
        let span = tracing::info_span!("rpc", method = %request.uri().path(), request_id = %request_id);
        request.extensions_mut().insert(credential);
        request.extensions_mut().insert(RequestId(request_id.clone()));
        // The clone is ready only after poll_ready on `self.inner`; swap so that the ready one serves.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(
            async move {
                let started = std::time::Instant::now();
                let mut response = inner.call(request).await?;
                if let Ok(value) = HeaderValue::from_str(&request_id) {
                    response.headers_mut().insert(REQUEST_ID_HEADER, value);
                }
                tracing::debug!(elapsed_ms = started.elapsed().as_millis() as u64, "call finished");
                Ok(response)
            }
            .instrument(span),
        )
    }
}

/// Up to 128 visible ASCII characters: safe to log and to echo.
fn is_sane_request_id(value: &str) -> bool {
    !value.is_empty() && value.len() <= 128 && value.bytes().all(|b| b.is_ascii_graphic())
}
