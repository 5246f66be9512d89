//! Every request is in a trace: the caller's `traceparent` (or, behind API Gateway, X-Ray's
//! header), else a new one. Its log lines carry the trace id, the response names it, and a run
//! the request submits keeps it.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use runner_core::domain::TraceContext;
use tracing::Instrument as _;

/// Puts the request in its trace (a `TraceContext` extension) and answers with `traceparent`.
pub async fn in_trace(mut request: Request, next: Next) -> Response {
    let headers = request.headers();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let context = TraceContext::continuing(header("traceparent"), header("x-amzn-trace-id"));
    let span = tracing::info_span!("request", trace_id = %context.trace_id);
    request.extensions_mut().insert(context.clone());
    let mut response = next.run(request).instrument(span).await;
    if let Ok(value) = HeaderValue::from_str(&context.traceparent()) {
        response.headers_mut().insert("traceparent", value);
    }
    response
}
