use async_trait::async_trait;
use aws_sdk_apigatewaymanagement::Client;
use aws_sdk_apigatewaymanagement::primitives::Blob;

use super::describe;
use runner_core::ports::{ConnectionGateway, PostOutcome};

/// `PostToConnection` through API Gateway's management API (`WEBSOCKET_MANAGEMENT_URL`: the
/// stage URL, `https://{api}.execute-api.{region}.amazonaws.com/{stage}`).
pub struct ApiGatewayConnections {
    client: Client,
}

impl ApiGatewayConnections {
    pub fn new(sdk: &aws_config::SdkConfig, management_url: &str) -> Self {
        let config = aws_sdk_apigatewaymanagement::config::Builder::from(sdk).endpoint_url(management_url).build();
        Self { client: Client::from_conf(config) }
    }
}

#[async_trait]
impl ConnectionGateway for ApiGatewayConnections {
    async fn post(&self, connection_id: &str, message: &str) -> PostOutcome {
        let result = self
            .client
            .post_to_connection()
            .connection_id(connection_id)
            .data(Blob::new(message.as_bytes()))
            .send()
            .await;
        match result {
            Ok(_) => PostOutcome::Delivered,
            Err(err) => {
                if let Some(service) = err.as_service_error() {
                    if service.is_gone_exception() {
                        return PostOutcome::Gone;
                    }
                    if service.is_limit_exceeded_exception() {
                        return PostOutcome::Throttled;
                    }
                }
                let status = err.raw_response().map(|r| r.status().as_u16());
                match status {
                    Some(410) => PostOutcome::Gone,
                    Some(429) => PostOutcome::Throttled,
                    _ => PostOutcome::Failed(describe(&err)),
                }
            }
        }
    }

    async fn close(&self, connection_id: &str) {
        if let Err(err) = self.client.delete_connection().connection_id(connection_id).send().await
            && !err.as_service_error().is_some_and(|e| e.is_gone_exception())
        {
            tracing::warn!(%connection_id, error = %describe(&err), "closing a connection failed");
        }
    }
}
