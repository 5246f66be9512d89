//! Feeds a table's stream to a function's handler, as Lambda's DynamoDB event source mapping
//! would: in shard order, retrying from the first failed record.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::dynamodb::{Event, EventRecord};
use aws_lambda_events::streams::DynamoDbEventResponse;
use aws_sdk_dynamodbstreams::Client;
use aws_sdk_dynamodbstreams::types::{Record, ShardIteratorType};
use futures_util::future::BoxFuture;
use tokio::sync::watch;

/// A function's handler for stream batches; `Err` is a failed invocation (the batch is retried).
pub type StreamHandler = Arc<dyn Fn(Event) -> BoxFuture<'static, Result<DynamoDbEventResponse, String>> + Send + Sync>;

const POLL_INTERVAL: Duration = Duration::from_millis(100);
const RETRY_BACKOFF: Duration = Duration::from_millis(500);
const BATCH_SIZE: i32 = 100;

/// Where the feeder is in one shard.
#[derive(Default)]
struct ShardCursor {
    iterator: Option<String>,
    /// Last record handed to the handler successfully.
    last_sequence: Option<String>,
    closed: bool,
}

pub async fn feed_stream(
    client: Client,
    stream_arn: String,
    handler: StreamHandler,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut shards: HashMap<String, ShardCursor> = HashMap::new();
    let mut polls: u32 = 0;
    loop {
        if *shutdown.borrow() {
            return;
        }
        if polls.is_multiple_of(20)
            && let Err(err) = discover_shards(&client, &stream_arn, &mut shards).await
        {
            tracing::warn!(error = %err, "describe stream failed");
        }
        polls = polls.wrapping_add(1);
        for (shard_id, cursor) in shards.iter_mut().filter(|(_, c)| !c.closed) {
            if let Err(err) = poll_shard(&client, &stream_arn, shard_id, cursor, &handler).await {
                tracing::warn!(shard = %shard_id, error = %err, "stream poll failed; re-opening the shard");
                cursor.iterator = None;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL_INTERVAL) => {}
            _ = shutdown.changed() => return,
        }
    }
}

async fn discover_shards(
    client: &Client,
    stream_arn: &str,
    shards: &mut HashMap<String, ShardCursor>,
) -> Result<(), String> {
    let description = client.describe_stream().stream_arn(stream_arn).send().await.map_err(|e| e.to_string())?;
    for shard in description.stream_description.and_then(|d| d.shards).unwrap_or_default() {
        if let Some(shard_id) = shard.shard_id {
            shards.entry(shard_id).or_default();
        }
    }
    Ok(())
}

async fn open_iterator(
    client: &Client,
    stream_arn: &str,
    shard_id: &str,
    kind: ShardIteratorType,
    sequence_number: Option<String>,
) -> Result<String, String> {
    client
        .get_shard_iterator()
        .stream_arn(stream_arn)
        .shard_id(shard_id)
        .shard_iterator_type(kind)
        .set_sequence_number(sequence_number)
        .send()
        .await
        .map_err(|e| e.to_string())?
        .shard_iterator
        .ok_or_else(|| "no shard iterator".to_owned())
}

/// One GetRecords call and, when it returned records, one invocation.
async fn poll_shard(
    client: &Client,
    stream_arn: &str,
    shard_id: &str,
    cursor: &mut ShardCursor,
    handler: &StreamHandler,
) -> Result<(), String> {
    // No iterator: a new shard, or the last call failed. Resume after the last applied record.
    let iterator = match cursor.iterator.take() {
        Some(it) => it,
        None => match &cursor.last_sequence {
            Some(seq) => {
                open_iterator(client, stream_arn, shard_id, ShardIteratorType::AfterSequenceNumber, Some(seq.clone()))
                    .await?
            }
            None => open_iterator(client, stream_arn, shard_id, ShardIteratorType::TrimHorizon, None).await?,
        },
    };
    let out =
        client.get_records().shard_iterator(&iterator).limit(BATCH_SIZE).send().await.map_err(|e| e.to_string())?;
    let records = out.records.unwrap_or_default();
    if records.is_empty() {
        cursor.closed = out.next_shard_iterator.is_none();
        cursor.iterator = out.next_shard_iterator;
        return Ok(());
    }
    let sequences: Vec<Option<String>> =
        records.iter().map(|r| r.dynamodb.as_ref().and_then(|d| d.sequence_number.clone())).collect();
    let mut event = Event::default();
    event.records = records.into_iter().map(|r| lambda_record(r, stream_arn)).collect();
    let response = handler(event).await?;
    match response.batch_item_failures.into_iter().find_map(|f| f.item_identifier) {
        None => {
            cursor.last_sequence = sequences.into_iter().flatten().last().or(cursor.last_sequence.take());
            cursor.closed = out.next_shard_iterator.is_none();
            cursor.iterator = out.next_shard_iterator;
        }
        Some(failed) => {
            // Everything before the failed record is done; retry from it after a pause.
            let failed_at = sequences.iter().position(|s| s.as_deref() == Some(failed.as_str())).unwrap_or(0);
            if failed_at > 0 {
                cursor.last_sequence = sequences[failed_at - 1].clone();
            }
            tokio::time::sleep(RETRY_BACKOFF).await;
            cursor.iterator = Some(
                open_iterator(client, stream_arn, shard_id, ShardIteratorType::AtSequenceNumber, Some(failed)).await?,
            );
        }
    }
    Ok(())
}

/// The stream record in the shape Lambda delivers it.
fn lambda_record(record: Record, stream_arn: &str) -> EventRecord {
    let mut out = EventRecord::default();
    out.event_id = record.event_id.unwrap_or_default();
    out.event_name = record.event_name.map(|n| n.as_str().to_owned()).unwrap_or_default();
    out.aws_region = "us-east-1".into();
    out.event_source = Some("aws:dynamodb".into());
    out.event_source_arn = Some(stream_arn.to_owned());
    if let Some(change) = record.dynamodb {
        out.change.keys = serde_dynamo::Item::from(change.keys.unwrap_or_default());
        out.change.new_image = serde_dynamo::Item::from(change.new_image.unwrap_or_default());
        out.change.old_image = serde_dynamo::Item::from(change.old_image.unwrap_or_default());
        out.change.sequence_number = change.sequence_number;
        out.change.size_bytes = change.size_bytes.unwrap_or_default();
    }
    out
}
