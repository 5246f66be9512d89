//! What every DynamoDB adapter needs alike.

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::operation::scan::builders::ScanFluentBuilder;
use serde::de::DeserializeOwned;

use super::describe;
use runner_core::{Error, Result};

/// Pages a filtered scan may read in one call: callers (the janitor) are bounded per invocation.
const MAX_SCAN_PAGES: usize = 10;

/// A conditional write lost its condition (the item exists, or its version moved).
fn is_condition_failure<E: ProvideErrorMetadata>(err: &SdkError<E>) -> bool {
    err.as_service_error().and_then(|e| e.code()) == Some("ConditionalCheckFailedException")
}

/// A conditional write's outcome: `Some(output)` if it was applied, `None` if its condition did
/// not hold; any other failure is an error.
pub(super) fn applied<T, E>(result: Result<T, SdkError<E>>, what: &'static str) -> Result<Option<T>>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match result {
        Ok(output) => Ok(Some(output)),
        Err(err) if is_condition_failure(&err) => Ok(None),
        Err(err) => Err(Error::dependency(what, describe(&err))),
    }
}

/// How many items `query` matches, counted page by page (keys only) until the answer reaches
/// `up_to` or `pages` pages were read.
pub(super) async fn count_up_to(
    query: QueryFluentBuilder,
    up_to: usize,
    pages: usize,
    what: &'static str,
) -> Result<usize> {
    let mut counted = 0;
    let mut start = None;
    for _ in 0..pages {
        let out = query
            .clone()
            .select(aws_sdk_dynamodb::types::Select::Count)
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .map_err(|e| Error::dependency(what, describe(&e)))?;
        counted += out.count.max(0) as usize;
        match out.last_evaluated_key {
            Some(key) if counted < up_to => start = Some(key),
            _ => break,
        }
    }
    Ok(counted)
}

/// Up to `limit` items a (filtered) scan yields, reading at most `MAX_SCAN_PAGES` pages.
pub(super) async fn scan_up_to<T: DeserializeOwned>(
    scan: ScanFluentBuilder,
    limit: usize,
    what: &'static str,
) -> Result<Vec<T>> {
    let mut found = Vec::new();
    let mut start = None;
    for _ in 0..MAX_SCAN_PAGES {
        let out = scan
            .clone()
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| Error::dependency(what, describe(&e)))?;
        for item in out.items.unwrap_or_default() {
            found.push(serde_dynamo::from_item(item).map_err(|e| Error::dependency(what, e))?);
            if found.len() == limit {
                return Ok(found);
            }
        }
        start = out.last_evaluated_key;
        if start.is_none() {
            break;
        }
    }
    Ok(found)
}
