//! The request-context layer: a request id, a tracing span and the caller for every call.
//!
//! It runs before any handler, on the raw HTTP request, before its body is read. For a Roster
//! method that needs a caller it resolves `authorization: Bearer …` into a [`Caller`] extension
//! (a session looked up, or a service key matched; [`crate::auth::Authenticator`]) and answers
//! UNAUTHENTICATED itself when it cannot, so that no unauthenticated body is ever decoded.
//! Health, reflection, Login, RequestPasswordReset and SetPasswordWithToken pass through without
//! one. The request id comes from `x-request-id` when the client sends a sane one, is generated
//! otherwise, and is echoed in the response headers.
//!
//! It sheds load: past the configured number of Roster calls in flight (all connections
//! together; health and reflection do not count), a call is answered RESOURCE_EXHAUSTED
//! `SERVER_OVERLOADED` at once instead of queueing behind the others.
//!
//! It also bounds each call by the configured request timeout, answering DEADLINE_EXCEEDED with
//! an `ErrorInfo`, and gives the few statuses tonic produces on its own (an unknown method, a
//! request body that does not decode) an `ErrorInfo` too, so that every error carries a reason.

use crate::auth::Authenticator;
use crate::error;
use crate::metrics::Metrics;
use http::{HeaderValue, Request, Response};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::Semaphore;
use tonic::Code;
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
#[derive(Clone)]
pub(crate) struct RequestContextLayer {
    /// The longest a call may take.
    pub(crate) timeout: Duration,
    /// Where each call is counted and timed.
    pub(crate) metrics: Arc<Metrics>,
    /// Who calls.
    pub(crate) auth: Arc<Authenticator>,
    /// A permit per Roster call in flight.
    pub(crate) in_flight: Arc<Semaphore>,
}

impl<S> Layer<S> for RequestContextLayer {
    type Service = RequestContext<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestContext {
            inner,
            timeout: self.timeout,
            metrics: self.metrics.clone(),
            auth: self.auth.clone(),
            in_flight: self.in_flight.clone(),
        }
    }
}

/// See the module documentation.
#[derive(Clone)]
pub(crate) struct RequestContext<S> {
    inner: S,
    timeout: Duration,
    metrics: Arc<Metrics>,
    auth: Arc<Authenticator>,
    in_flight: Arc<Semaphore>,
}

impl<S, B, R> Service<Request<B>> for RequestContext<S>
where
    S: Service<Request<B>, Response = Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    R: Default,
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
        let method = self.metrics.method(request.uri().path());
        let metrics = self.metrics.clone();
        let path = request.uri().path();
        let auth = self.auth.protects(path).map(|method| (self.auth.clone(), method));
        let counted = auth.is_some() || self.auth.is_open(path);
        let permit = counted.then(|| self.in_flight.clone().try_acquire_owned());
        request.extensions_mut().insert(RequestId(request_id.clone()));
        // The clone is ready only after poll_ready on `self.inner`; swap so that the ready one serves.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let limit = self.timeout;
        Box::pin(
            async move {
                let started = std::time::Instant::now();
                let call = async {
                    if let Some(Err(_)) = permit {
                        return Err(error::overloaded("has too many calls in flight"));
                    }
                    if let Some((auth, method)) = auth {
                        let caller = auth.authenticate(credential, request_id.clone(), method).await?;
                        request.extensions_mut().insert(caller);
                    }
                    Ok::<_, tonic::Status>(inner.call(request).await)
                };
                let mut response = match tokio::time::timeout(limit, call).await {
                    Ok(Err(refused)) => refused.into_http(),
                    Ok(Ok(response)) => {
                        let mut response = response?;
                        add_error_info(response.headers_mut());
                        response
                    }
                    Err(_) => {
                        tracing::warn!(timeout_ms = limit.as_millis() as u64, "call timed out");
                        error::status(
                            Code::DeadlineExceeded,
                            "REQUEST_TIMEOUT",
                            format!("the call took longer than the server's limit of {} s", limit.as_secs_f32()),
                        )
                        .into_http()
                    }
                };
                if let Ok(value) = HeaderValue::from_str(&request_id) {
                    response.headers_mut().insert(REQUEST_ID_HEADER, value);
                }
                // An error's status is in the headers (a trailers-only answer); a success's comes
                // in the trailers, after the body, as OK.
                // Only the code is needed: read `grpc-status` rather than decode the whole status.
                let code = response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok()?.parse::<i32>().ok())
                    .map_or(Code::Ok, Code::from);
                metrics.observe_call(method, code, started.elapsed());
                tracing::debug!(elapsed_ms = started.elapsed().as_millis() as u64, "call finished");
                Ok(response)
            }
            .instrument(span),
        )
    }
}

/// Gives an error status without details (one tonic answered on its own, before any handler) an
/// `ErrorInfo`. A request body that does not decode is the caller's mistake: INVALID_ARGUMENT,
/// not the INTERNAL tonic uses. A body over the service's decoding limit is RESOURCE_EXHAUSTED,
/// the gRPC convention, not the OUT_OF_RANGE tonic uses.
fn add_error_info(headers: &mut http::HeaderMap) {
    if headers.contains_key("grpc-status-details-bin") {
        return;
    }
    let Some(status) = tonic::Status::from_header_map(headers) else { return };
    let (code, reason) = match status.code() {
        Code::Ok => return,
        Code::Internal => (Code::InvalidArgument, "MALFORMED_REQUEST"),
        Code::OutOfRange => (Code::ResourceExhausted, "MESSAGE_TOO_LARGE"),
        Code::Unimplemented => (Code::Unimplemented, "METHOD_NOT_FOUND"),
        Code::Cancelled => (Code::Cancelled, "CANCELLED"),
        Code::DeadlineExceeded => (Code::DeadlineExceeded, "DEADLINE_EXCEEDED"),
        Code::ResourceExhausted => (Code::ResourceExhausted, "SERVER_OVERLOADED"),
        other => (other, "TRANSPORT_ERROR"),
    };
    let with_info = error::status(code, reason, status.message().to_owned());
    headers.remove("grpc-status");
    headers.remove("grpc-message");
    if with_info.add_header(headers).is_err() {
        // Cannot happen for statuses built here; the original code is gone, so say INTERNAL.
        headers.insert("grpc-status", HeaderValue::from_static("13"));
    }
}

/// Up to 128 visible ASCII characters: safe to log and to echo.
fn is_sane_request_id(value: &str) -> bool {
    !value.is_empty() && value.len() <= 128 && value.bytes().all(|b| b.is_ascii_graphic())
}
