use async_trait::async_trait;
use aws_sdk_sfn::Client;
use aws_sdk_sfn::error::ProvideErrorMetadata;

use super::describe;
use runner_core::ports::{EpicEngine, TaskAnswer};
use runner_core::{Error, Result};

/// The epic state machine on AWS Step Functions (Standard): executions and task callbacks.
pub struct StepFunctionsEngine {
    client: Client,
    state_machine_arn: Option<String>,
}

impl StepFunctionsEngine {
    /// `state_machine_arn` is needed to start executions; callbacks (the executor) need none.
    pub fn new(client: Client, state_machine_arn: Option<String>) -> Self {
        Self { client, state_machine_arn }
    }
}

/// A callback whose task no longer waits: answered before, timed out, or its execution ended.
fn gone<E: ProvideErrorMetadata>(err: &aws_sdk_sfn::error::SdkError<E>) -> bool {
    matches!(err.as_service_error().and_then(|e| e.code()), Some("TaskTimedOut" | "TaskDoesNotExist" | "InvalidToken"))
}

fn answer<T, E>(result: Result<T, aws_sdk_sfn::error::SdkError<E>>, what: &'static str) -> Result<TaskAnswer>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match result {
        Ok(_) => Ok(TaskAnswer::Delivered),
        Err(err) if gone(&err) => Ok(TaskAnswer::Gone),
        Err(err) => Err(Error::dependency(what, describe(&err))),
    }
}

#[async_trait]
impl EpicEngine for StepFunctionsEngine {
    async fn start(&self, name: &str, input: &serde_json::Value) -> Result<String> {
        let arn = self
            .state_machine_arn
            .as_deref()
            .ok_or_else(|| Error::Config("EPIC_STATE_MACHINE_ARN is not set".into()))?;
        let result =
            self.client.start_execution().state_machine_arn(arn).name(name).input(input.to_string()).send().await;
        match result {
            Ok(out) => Ok(out.execution_arn),
            // The same name again (a retried start): that execution is the epic's.
            Err(err) if err.as_service_error().and_then(|e| e.code()) == Some("ExecutionAlreadyExists") => {
                let machine = arn.replacen(":stateMachine:", ":execution:", 1);
                Ok(format!("{machine}:{name}"))
            }
            Err(err) => Err(Error::dependency("step functions start execution", describe(&err))),
        }
    }

    async fn stop(&self, execution_id: &str, cause: &str) -> Result<()> {
        self.client
            .stop_execution()
            .execution_arn(execution_id)
            .cause(cause)
            .send()
            .await
            .map_err(|e| Error::dependency("step functions stop execution", describe(&e)))?;
        Ok(())
    }

    async fn succeed(&self, token: &str, output: &serde_json::Value) -> Result<TaskAnswer> {
        let sent = self.client.send_task_success().task_token(token).output(output.to_string()).send().await;
        answer(sent, "step functions task success")
    }

    async fn fail(&self, token: &str, error: &str, cause: &str) -> Result<TaskAnswer> {
        // Step Functions bounds both: 256 characters of error, 32 KB of cause.
        let error: String = error.chars().take(256).collect();
        let cause: String = cause.chars().take(32_000).collect();
        let sent = self.client.send_task_failure().task_token(token).error(error).cause(cause).send().await;
        answer(sent, "step functions task failure")
    }

    async fn heartbeat(&self, token: &str) -> Result<TaskAnswer> {
        let sent = self.client.send_task_heartbeat().task_token(token).send().await;
        answer(sent, "step functions task heartbeat")
    }
}
