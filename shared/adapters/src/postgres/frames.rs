//! `claude_cli_outputs`: every frame of every run, for history and replay.

use async_trait::async_trait;
use sqlx::PgPool;

use runner_core::domain::{Frame, FrameData, RunId, TraceId};
use runner_core::ports::{FrameHistory, FrameSink};
use runner_core::{Error, Result};

/// Frames in `claude_cli_outputs`, one multi-row insert per batch. Replayed batches are ignored
/// by the unique `(run_id, sequence_number)`.
pub struct PgFrameStore {
    pool: PgPool,
}

impl PgFrameStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

#[async_trait]
impl FrameSink for PgFrameStore {
    fn name(&self) -> &'static str {
        "postgres"
    }

    async fn publish(&self, frames: &[Frame]) -> Result<()> {
        if frames.is_empty() {
            return Ok(());
        }
        let mut run_ids = Vec::with_capacity(frames.len());
        let mut seqs = Vec::with_capacity(frames.len());
        let mut kinds = Vec::with_capacity(frames.len());
        let mut subtypes = Vec::with_capacity(frames.len());
        let mut stamps = Vec::with_capacity(frames.len());
        let mut data = Vec::with_capacity(frames.len());
        let mut sizes = Vec::with_capacity(frames.len());
        let mut truncated = Vec::with_capacity(frames.len());
        let mut traces = Vec::with_capacity(frames.len());
        for frame in frames {
            let mut json = frame.data_json();
            // jsonb has no room for U+0000; such characters become U+2400 (␀) in the copy
            // stored here (the S3 log keeps the line as printed).
            let mut text = json.to_string();
            if text.contains("\\u0000") {
                replace_nul(&mut json);
                text = json.to_string();
            }
            run_ids.push(frame.run_id.as_uuid());
            seqs.push(frame.seq as i64);
            kinds.push(frame.kind.clone());
            subtypes.push(frame.subtype.clone());
            stamps.push(frame.ts);
            sizes.push(text.len() as i32);
            data.push(text);
            truncated.push(frame.is_truncated());
            traces.push(frame.trace_id.as_ref().map(|t| t.as_str().to_owned()));
        }
        sqlx::query(
            r#"
            INSERT INTO claude_cli_outputs (run_id, sequence_number, output_type, subtype, ts, data, byte_size, truncated,
                                            trace_id)
            SELECT * FROM UNNEST($1::uuid[], $2::bigint[], $3::text[], $4::text[], $5::timestamptz[], $6::text[]::jsonb[],
                                 $7::int[], $8::bool[], $9::text[])
            ON CONFLICT (run_id, sequence_number) DO NOTHING
            "#,
        )
        .bind(&run_ids)
        .bind(&seqs)
        .bind(&kinds)
        .bind(&subtypes)
        .bind(&stamps)
        .bind(&data)
        .bind(&sizes)
        .bind(&truncated)
        .bind(&traces)
        .execute(&self.pool)
        .await
        .map_err(|e| Error::dependency("postgres insert frames", e))?;
        Ok(())
    }
}

#[async_trait]
impl FrameHistory for PgFrameStore {
    async fn frames_after(&self, run_id: RunId, after_seq: u64, limit: usize) -> Result<Vec<Frame>> {
        type Row =
            (i64, String, Option<String>, chrono::DateTime<chrono::Utc>, serde_json::Value, bool, Option<String>);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT sequence_number, output_type, subtype, ts, data, truncated, trace_id FROM claude_cli_outputs \
             WHERE run_id = $1 AND sequence_number > $2 ORDER BY sequence_number LIMIT $3",
        )
        .bind(run_id.as_uuid())
        .bind(after_seq as i64)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| Error::dependency("postgres read frames", e))?;
        Ok(rows
            .into_iter()
            .map(|(seq, kind, subtype, ts, data, truncated, trace)| {
                let data = match truncated {
                    true => serde_json::from_value(data.clone()).unwrap_or(FrameData::Json(data)),
                    false => FrameData::Json(data),
                };
                let trace_id = trace.as_deref().and_then(TraceId::parse);
                Frame { run_id, seq: seq as u64, ts, kind, subtype, data, trace_id }
            })
            .collect())
    }

    async fn last_seq(&self, run_id: RunId) -> Result<u64> {
        let last: Option<i64> =
            sqlx::query_scalar("SELECT max(sequence_number) FROM claude_cli_outputs WHERE run_id = $1")
                .bind(run_id.as_uuid())
                .fetch_one(&self.pool)
                .await
                .map_err(|e| Error::dependency("postgres read frames", e))?;
        Ok(last.unwrap_or(0) as u64)
    }
}

fn replace_nul(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) if s.contains('\0') => *s = s.replace('\0', "\u{2400}"),
        serde_json::Value::Array(items) => items.iter_mut().for_each(replace_nul),
        serde_json::Value::Object(map) => {
            // Keys can hold NUL too; rebuild the map only when one does.
            if map.keys().any(|k| k.contains('\0')) {
                let entries: Vec<_> = std::mem::take(map).into_iter().collect();
                for (key, mut v) in entries {
                    replace_nul(&mut v);
                    map.insert(key.replace('\0', "\u{2400}"), v);
                }
            } else {
                map.values_mut().for_each(replace_nul);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn nul_characters_are_replaced_but_escaped_text_is_kept() {
        let mut v = serde_json::json!({"a": "x\u{0}y", "b": ["\\u0000 literal"], "k\u{0}": 1});
        super::replace_nul(&mut v);
        assert_eq!(v["a"], "x\u{2400}y");
        assert_eq!(v["b"][0], "\\u0000 literal", "text that merely spells the escape is untouched");
        assert_eq!(v["k\u{2400}"], 1);
        assert!(!v.to_string().contains("\\u0000\""));
    }
}
