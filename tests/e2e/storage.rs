use e2e::TestStack;
use runner_adapters::{S3ObjectStore, aws};
use runner_core::ports::ObjectStore;

#[tokio::test]
async fn the_object_store_round_trips_through_s3() {
    let t = TestStack::start().await;
    let store = S3ObjectStore::new(aws::s3(&t.stack.sdk), &t.stack.settings.artifacts_bucket);
    let key = "runs/abc/output.ndjson";
    assert_eq!(store.get(key).await.unwrap(), None, "a missing object is None, not an error");
    store.put(key, b"{\"seq\":1}\n".to_vec(), "application/x-ndjson").await.unwrap();
    store.put("runs/abc/workspace.tar.zst", vec![0u8; 1024], "application/zstd").await.unwrap();
    store.put("runs/other/output.ndjson", vec![1], "application/x-ndjson").await.unwrap();
    assert_eq!(store.get(key).await.unwrap().as_deref(), Some(&b"{\"seq\":1}\n"[..]));
    let mut listed = store.list("runs/abc/").await.unwrap();
    listed.sort();
    assert_eq!(listed, vec!["runs/abc/output.ndjson", "runs/abc/workspace.tar.zst"]);
    store.delete(key).await.unwrap();
    assert_eq!(store.get(key).await.unwrap(), None);
    t.stop().await;
}
