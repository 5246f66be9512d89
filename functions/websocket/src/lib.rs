//! The WebSocket function: one handler for the four routes of the WebSocket API (`$connect`,
//! `$disconnect`, `subscribe`, `$default`), dispatched on the route key. One function keeps one
//! warm container for all of them; the routes stay separate in the template.

use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use aws_lambda_events::encodings::Body;
use runner_adapters::Wiring;
use runner_core::domain::ApiKey;
use runner_core::usecases::{Authenticator, Credentials, StreamService};

/// The WebSocket API's use cases, built once per cold start.
pub struct WebSocketHandler {
    pub stream: StreamService,
    auth: Authenticator,
}

/// Builds the handler once per cold start.
pub async fn build(wiring: &Wiring) -> runner_core::Result<WebSocketHandler> {
    let stream = wiring.stream_service().await?;
    Ok(WebSocketHandler { stream, auth: wiring.authenticator(&wiring.settings()?) })
}

fn respond(status: i64, body: &str) -> ApiGatewayProxyResponse {
    let mut response = ApiGatewayProxyResponse::default();
    response.status_code = status;
    response.body = Some(Body::Text(body.to_owned()));
    response
}

pub async fn handle(handler: &WebSocketHandler, event: ApiGatewayWebsocketProxyRequest) -> ApiGatewayProxyResponse {
    let route = event.request_context.route_key.as_deref().unwrap_or("$default").to_owned();
    let connection_id = event.request_context.connection_id.clone().unwrap_or_default();
    let body = event.body.as_deref().unwrap_or_default();
    let result = match route.as_str() {
        "$connect" => match credentials(handler, &event).await {
            Ok(Some(credentials)) => handler.stream.connect(&connection_id, credentials).await,
            Ok(None) => Err(runner_core::Error::Unauthorized),
            Err(err) => Err(err),
        },
        "$disconnect" => handler.stream.disconnect(&connection_id).await,
        "subscribe" => handler.stream.subscribe(&connection_id, body).await,
        _ => handler.stream.unknown_action(&connection_id, body).await,
    };
    match result {
        Ok(()) => respond(200, "ok"),
        Err(runner_core::Error::Unauthorized) => respond(401, "unauthorized"),
        // A refused $connect: API Gateway answers the client's handshake with this status.
        Err(err @ runner_core::Error::Limited { .. }) => respond(429, err.code()),
        Err(err) => {
            tracing::error!(%route, %connection_id, error = %err, "websocket route failed");
            respond(500, "internal error")
        }
    }
}

/// `x-api-key` header, else `?token=`.
async fn credentials(
    handler: &WebSocketHandler,
    event: &ApiGatewayWebsocketProxyRequest,
) -> runner_core::Result<Option<Credentials>> {
    if let Some(presented) = event.headers.get("x-api-key").and_then(|v| v.to_str().ok())
        && ApiKey::from_presented(presented).is_some()
    {
        return Ok(handler.auth.grant_of(presented).await?.map(Credentials::Key));
    }
    Ok(event.query_string_parameters.first("token").map(|t| Credentials::Token(t.to_owned())))
}
