//! The queue interface for orchestrators (Genie): CloudEvents in, through the same intake as
//! `POST /run` (and `POST /epics`), and CloudEvents out — `run.accepted`/`run.rejected` at once, `run.started` and the
//! terminal reply from the runs table's changes, whoever made them (`docs/genie.md`).

use std::sync::Arc;

use chrono::Utc;
use serde::Deserialize;

use super::{DecisionRequest, EpicService, RunOrigin, RunService};
use crate::domain::cloud_event::{CloudEvent, types};
use crate::domain::epic::{EpicRequest, announce};
use crate::domain::reply::{self, MAX_CORRELATION_ID_LEN, ReplyPolicy, ReplyRoute};
use crate::domain::{Owner, Run, RunRequest, StreamTokens};
use crate::ports::ReplyQueue;
use crate::{Error, ErrorKind, Result};

/// Where the WebSocket API is and how to grant a stream of one run, for `run.accepted`.
#[derive(Clone)]
pub struct StreamAccess {
    /// The WebSocket API's URL.
    pub url: String,
    /// Signs the per-run stream tokens.
    pub tokens: StreamTokens,
}

/// Requests from one requests queue (whose owner runs belong to), and the replies they are owed.
pub struct GenieService {
    runs: Arc<RunService>,
    replies: Arc<dyn ReplyQueue>,
    policy: ReplyPolicy,
    owner: Owner,
    stream: Option<StreamAccess>,
    epics: Option<Arc<EpicService>>,
}

/// The routing fields of a request's `data`, besides what `POST /run` takes.
#[derive(Deserialize)]
struct Routing {
    #[serde(default)]
    reply_to: Option<String>,
    #[serde(default)]
    correlation_id: Option<String>,
}

/// A refusal: the code and message the caller is told.
struct Refusal {
    code: String,
    message: String,
}

impl Refusal {
    fn new(code: &str, message: impl Into<String>) -> Self {
        Self { code: code.to_owned(), message: message.into() }
    }
}

impl GenieService {
    /// Requests submitted as `owner`, replies sent through `replies` where `policy` allows.
    pub fn new(
        runs: Arc<RunService>,
        replies: Arc<dyn ReplyQueue>,
        policy: ReplyPolicy,
        owner: Owner,
        stream: Option<StreamAccess>,
    ) -> Self {
        Self { runs, replies, policy, owner, stream, epics: None }
    }

    /// The same service, also taking epic requests and decisions.
    pub fn with_epics(self, epics: Arc<EpicService>) -> Self {
        Self { epics: Some(epics), ..self }
    }

    /// One request message. `Ok` when it is handled — accepted, or refused with `run.rejected`
    /// (not worth retrying); `Err` for a transient failure the queue should retry. Handling the
    /// same event again creates nothing new and repeats the same replies.
    pub async fn handle_request(&self, body: &str) -> Result<()> {
        let event = match CloudEvent::parse(body) {
            Ok(event) => event,
            Err(err) => return self.reject(None, None, &self.policy.default_queue, err.code, &err.message).await,
        };
        let routing: Routing =
            serde_json::from_value(event.data.clone()).unwrap_or(Routing { reply_to: None, correlation_id: None });
        let correlation = routing.correlation_id.as_deref();
        let Some(reply_to) = self.policy.route(routing.reply_to.as_deref()) else {
            let message = format!("reply_to {:?} is not on this deployment's reply allowlist", routing.reply_to);
            return self
                .reject(Some(&event), correlation, &self.policy.default_queue, "reply_not_allowed", &message)
                .await;
        };
        if correlation.is_some_and(|c| c.len() > MAX_CORRELATION_ID_LEN) {
            let message = format!("correlation_id is longer than {MAX_CORRELATION_ID_LEN} characters");
            return self.reject(Some(&event), None, &reply_to, "invalid_event", &message).await;
        }
        let route = ReplyRoute {
            reply_to: reply_to.clone(),
            correlation_id: routing.correlation_id.clone(),
            request_id: event.id.clone(),
        };
        let outcome = match event.kind.as_str() {
            types::RUN_REQUESTED => self.submit(&event, route).await,
            types::CANCEL_REQUESTED => self.cancel(&event).await,
            types::EPIC_REQUESTED => self.start_epic(&event, route).await,
            types::EPIC_DECISION_REQUESTED => self.decide(&event).await,
            other => Ok(Err(Refusal::new("unknown_event_type", format!("this service does not handle {other:?}")))),
        }?;
        match outcome {
            Ok(()) => Ok(()),
            Err(refusal) => self.reject(Some(&event), correlation, &reply_to, &refusal.code, &refusal.message).await,
        }
    }

    /// `run.requested`: the same intake as `POST /run`, keyed by the event.
    async fn submit(&self, event: &CloudEvent, route: ReplyRoute) -> Result<Result<(), Refusal>> {
        let mut data = event.data.clone();
        let Some(fields) = data.as_object_mut() else {
            return Ok(Err(Refusal::new("invalid_event", "`data` must be an object")));
        };
        fields.remove("reply_to");
        fields.remove("correlation_id");
        let workflow = match fields.remove("workflow") {
            Some(serde_json::Value::String(name)) => name,
            _ => return Ok(Err(Refusal::new("invalid_json", "data.workflow is required: a workflow's name"))),
        };
        let request: RunRequest = match serde_json::from_value(data) {
            Ok(request) => request,
            Err(e) => return Ok(Err(Refusal::new("invalid_json", format!("data is not a valid run request: {e}")))),
        };
        let key = event.idempotency_key();
        let submitted = match self
            .runs
            .submit(
                &self.owner,
                &workflow,
                request,
                Some(&key),
                RunOrigin { trace_id: event.trace_id(), ..RunOrigin::replying_to(route.clone()) },
            )
            .await
        {
            Ok(submitted) => submitted,
            Err(err) => return refusal_or_retry(err),
        };
        let run = &submitted.run;
        let token =
            self.stream.as_ref().map(|s| (s.url.as_str(), s.tokens.issue_for_run(run.run_id, &self.owner, Utc::now())));
        let stream = token.as_ref().map(|(url, token)| (*url, token.as_str()));
        // A replay answers where the run's own route says: the one it was created with.
        let route = run.reply.clone().unwrap_or(route);
        let accepted = reply::accepted(run, &route, stream, Utc::now());
        self.replies.send(&route.reply_to, &accepted, route.correlation_id.as_deref()).await?;
        tracing::info!(run_id = %run.run_id, replayed = submitted.replayed, request = %event.id, "queue request accepted");
        Ok(Ok(()))
    }

    /// `cancel.requested`: cancels a run of this queue's owner.
    async fn cancel(&self, event: &CloudEvent) -> Result<Result<(), Refusal>> {
        let Some(run_id) = event.data_str("run_id") else {
            return Ok(Err(Refusal::new("invalid_json", "data.run_id is required")));
        };
        match self.runs.cancel(&self.owner, run_id).await {
            Ok((run, outcome)) => {
                tracing::info!(run_id = %run.run_id, ?outcome, request = %event.id, "queue cancel");
                Ok(Ok(()))
            }
            Err(err) => refusal_or_retry(err),
        }
    }

    /// `epic.requested`: the same intake as `POST /epics`, keyed by the event.
    async fn start_epic(&self, event: &CloudEvent, route: ReplyRoute) -> Result<Result<(), Refusal>> {
        let Some(epics) = &self.epics else {
            return Ok(Err(Refusal::new("epics_not_deployed", "this deployment has no epics")));
        };
        let mut data = event.data.clone();
        let Some(fields) = data.as_object_mut() else {
            return Ok(Err(Refusal::new("invalid_event", "`data` must be an object")));
        };
        fields.remove("reply_to");
        fields.remove("correlation_id");
        let request: EpicRequest = match serde_json::from_value(data) {
            Ok(request) => request,
            Err(e) => return Ok(Err(Refusal::new("invalid_json", format!("data is not a valid epic request: {e}")))),
        };
        let key = event.idempotency_key();
        let started = match epics.start(&self.owner, request, Some(&key), Some(route.clone())).await {
            Ok(started) => started,
            Err(err) => return refusal_or_retry(err),
        };
        let epic = &started.epic;
        let route = epic.reply.clone().unwrap_or(route);
        let accepted = announce::accepted(epic, &route, Utc::now());
        self.replies.send(&route.reply_to, &accepted, route.correlation_id.as_deref()).await?;
        tracing::info!(epic_id = %epic.epic_id, replayed = started.replayed, request = %event.id, "queue epic accepted");
        Ok(Ok(()))
    }

    /// `epic.decision.requested`: decides a pending approval of this queue owner's epic.
    async fn decide(&self, event: &CloudEvent) -> Result<Result<(), Refusal>> {
        let Some(epics) = &self.epics else {
            return Ok(Err(Refusal::new("epics_not_deployed", "this deployment has no epics")));
        };
        #[derive(Deserialize)]
        struct Asked {
            epic_id: String,
            approval_id: usize,
            #[serde(flatten)]
            decision: serde_json::Map<String, serde_json::Value>,
        }
        let asked: Asked = match serde_json::from_value(event.data.clone()) {
            Ok(asked) => asked,
            Err(e) => return Ok(Err(Refusal::new("invalid_json", format!("data is not a valid decision: {e}")))),
        };
        let mut decision = asked.decision;
        decision.remove("reply_to");
        decision.remove("correlation_id");
        let request: DecisionRequest = match serde_json::from_value(serde_json::Value::Object(decision)) {
            Ok(request) => request,
            Err(e) => return Ok(Err(Refusal::new("invalid_json", format!("data is not a valid decision: {e}")))),
        };
        match epics.decide(&self.owner, &asked.epic_id, asked.approval_id, request).await {
            Ok(epic) => {
                tracing::info!(epic_id = %epic.epic_id, approval_id = asked.approval_id, request = %event.id, "queue decision");
                Ok(Ok(()))
            }
            Err(err) => refusal_or_retry(err),
        }
    }

    async fn reject(
        &self,
        event: Option<&CloudEvent>,
        correlation_id: Option<&str>,
        reply_to: &str,
        code: &str,
        message: &str,
    ) -> Result<()> {
        tracing::info!(request = event.map(|e| e.id.as_str()), code, "queue request rejected");
        let rejected = reply::rejected(event, correlation_id, code, message, Utc::now());
        self.replies.send(reply_to, &rejected, correlation_id).await
    }

    /// A run changed (from `old`, if it existed before, to `new`): sends what the change owes
    /// its caller, if the run came from a queue. `Err` when the reply could not be sent.
    pub async fn announce_change(&self, old: Option<&Run>, new: &Run) -> Result<()> {
        let Some((route, event)) = reply::for_change(old, new, Utc::now()) else { return Ok(()) };
        self.replies.send(&route.reply_to, &event, route.correlation_id.as_deref()).await?;
        tracing::info!(run_id = %new.run_id, reply = %event.kind, "reply sent");
        Ok(())
    }
}

/// A caller's mistake becomes a refusal with the HTTP API's code; anything else is retried.
fn refusal_or_retry(err: Error) -> Result<Result<(), Refusal>> {
    match err.kind() {
        ErrorKind::InvalidInput
        | ErrorKind::NotFound
        | ErrorKind::Conflict
        | ErrorKind::Unauthorized
        | ErrorKind::TooMany => Ok(Err(Refusal::new(err.code(), err.to_string()))),
        ErrorKind::Unavailable | ErrorKind::Internal => Err(err),
    }
}
