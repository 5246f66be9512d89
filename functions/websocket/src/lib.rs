//! The WebSocket function: one handler for the four routes of the WebSocket API (`$connect`,
//! `$disconnect`, `subscribe`, `$default`), dispatched on the route key. One function keeps one
//! warm container for all of them; the routes stay separate in the template.

use std::sync::Arc;

use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use aws_lambda_events::encodings::Body;
use shared::adapters::{
    ApiGatewayConnections, DynamoApiKeyStore, DynamoConnectionStore, DynamoRunStore, PgFrameStore, aws, postgres,
};
use shared::config::{Settings, StreamSettings};
use shared::domain::{ApiKey, StreamTokens};
use shared::ports::ApiKeyStore;
use shared::usecases::{Credentials, StreamService};

pub struct WebSocketHandler {
    pub stream: StreamService,
    keys: Arc<dyn ApiKeyStore>,
}

pub async fn build(
    sdk: &aws_config::SdkConfig,
    settings: &Settings,
    stream: &StreamSettings,
) -> shared::Result<WebSocketHandler> {
    let dynamodb = aws::dynamodb(sdk);
    let pool = postgres::connect(&stream.database_url, 1).await?;
    let service = StreamService::new(
        Arc::new(DynamoRunStore::new(dynamodb.clone(), &settings.runs_table, &settings.idempotency_table)),
        Arc::new(DynamoConnectionStore::new(dynamodb.clone(), &stream.connections_table)),
        Arc::new(ApiGatewayConnections::new(sdk, &stream.management_url)),
        Arc::new(PgFrameStore::new(pool)),
        StreamTokens::new(stream.token_secret.as_bytes().to_vec()),
    );
    Ok(WebSocketHandler { stream: service, keys: Arc::new(DynamoApiKeyStore::new(dynamodb, &settings.api_keys_table)) })
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
            Ok(None) => Err(shared::Error::Unauthorized),
            Err(err) => Err(err),
        },
        "$disconnect" => handler.stream.disconnect(&connection_id).await,
        "subscribe" => handler.stream.subscribe(&connection_id, body).await,
        _ => handler.stream.unknown_action(&connection_id, body).await,
    };
    match result {
        Ok(()) => respond(200, "ok"),
        Err(shared::Error::Unauthorized) => respond(401, "unauthorized"),
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
) -> shared::Result<Option<Credentials>> {
    if let Some(key) = event.headers.get("x-api-key").and_then(|v| v.to_str().ok()).and_then(ApiKey::from_presented) {
        return Ok(handler.keys.owner_of(&key.hash()).await?.map(Credentials::Owner));
    }
    Ok(event.query_string_parameters.first("token").map(|t| Credentials::Token(t.to_owned())))
}
