//! Property tests of the caller-facing queries and intake: whatever a caller puts in a listing's
//! `limit`, `status`, `workflow` or `cursor`, a history's `offset`, a memory search or a run
//! submission, the use cases hand the store a bounded page and the cursor untouched, or answer
//! with a documented code, and never panic.
//!
//! Cursors are decoded by the stores (the DynamoDB adapters), not here, so the stores below
//! refuse any cursor they did not issue with `invalid_cursor`, as those do; the tests check that
//! the refusal reaches the caller as that code.

use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use proptest::prelude::*;
use serde_json::{Value, json};
use uuid::Uuid;

use super::runs::page_limit;
use super::{
    DEFAULT_PAGE_SIZE, EpicService, EpicSettings, ListQuery, MAX_PAGE_SIZE, MemorySearch, MemoryService, RunOrigin,
    RunService, SessionService,
};
use crate::domain::epic::{Epic, EpicId};
use crate::domain::fuzz_tests::RUN_REQUEST_CODES;
use crate::domain::memory::{MemoryHint, MemoryKind, MemoryStatus, NewMemory};
use crate::domain::{
    BranchName, IntakeLimits, MAX_MAX_TURNS, MIN_MAX_TURNS, Owner, RepositoryPolicy, Run, RunId, RunRequest, RunStatus,
    Session, WorkflowRegistry, object_keys,
};
use crate::ports::{
    EpicEngine, EpicStore, Heartbeat, IdempotencyRecord, MemoryChange, MemoryEntry, MemoryQuery, MemorySource,
    MemoryStore, ObjectStore, Page, RunFilter, RunMessage, RunQueue, RunStore, SessionStore, TaskAnswer,
};
use crate::{ErrorKind, Result};

/// The one cursor the stores below issued; they refuse any other.
const ISSUED: &str = "eyJydW5faWQiOiIwMTkifQ";
/// `DEFAULT_HISTORY_PAGE` and `MAX_HISTORY_PAGE` of `sessions`, private there.
const DEFAULT_HISTORY_PAGE: usize = 50;
const MAX_HISTORY_PAGE: usize = 200;
/// The session the stores hold.
const SESSION: Uuid = Uuid::from_u128(0x0196_0000_0000_7000_8000_0000_0000_0007);
const REPOSITORY: &str = "https://github.com/acme/app.git";

// ---------------------------------------------------------------------------------------------
// Stores that remember what they were asked
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Stores {
    /// Every listing call: the page size and the cursor.
    pages: Mutex<Vec<(usize, Option<String>)>>,
    /// Every runs listing's filter.
    filters: Mutex<Vec<RunFilter>>,
    /// Every memory search.
    searches: Mutex<Vec<MemoryQuery>>,
    session: Option<Session>,
    transcript: Option<Vec<u8>>,
}

impl Stores {
    /// Records a listing call; refuses a cursor it never issued, as the DynamoDB stores do.
    fn page<T>(&self, limit: usize, cursor: Option<&str>) -> Result<Page<T>> {
        self.pages.lock().expect("not poisoned").push((limit, cursor.map(str::to_owned)));
        match cursor {
            Some(c) if c != ISSUED => Err(crate::domain::ValidationError::InvalidCursor.into()),
            _ => Ok(Page { items: Vec::new(), next_cursor: Some(ISSUED.to_owned()) }),
        }
    }

    fn last_page(&self) -> Option<(usize, Option<String>)> {
        self.pages.lock().expect("not poisoned").last().cloned()
    }
}

#[async_trait]
impl RunStore for Stores {
    async fn claim_idempotency_key(&self, _record: &IdempotencyRecord) -> Result<Option<IdempotencyRecord>> {
        Ok(None)
    }
    async fn release_idempotency_key(&self, _owner: &Owner, _key: &str) -> Result<()> {
        Ok(())
    }
    async fn create(&self, _run: &Run) -> Result<bool> {
        Ok(true)
    }
    async fn get(&self, _run_id: RunId) -> Result<Option<Run>> {
        Ok(None)
    }
    async fn update(&self, _run: &Run, _expected_version: u64) -> Result<()> {
        Ok(())
    }
    async fn list(&self, _owner: &Owner, filter: &RunFilter, limit: usize, cursor: Option<&str>) -> Result<Page<Run>> {
        self.filters.lock().expect("not poisoned").push(filter.clone());
        self.page(limit, cursor)
    }
    async fn heartbeat(
        &self,
        _run_id: RunId,
        _executor: &str,
        _lease_until: DateTime<Utc>,
    ) -> Result<Option<Heartbeat>> {
        Ok(None)
    }
    async fn stale_leases(&self, _now: DateTime<Utc>, _limit: usize) -> Result<Vec<Run>> {
        Ok(Vec::new())
    }
    async fn queued_since(&self, _before: DateTime<Utc>, _limit: usize) -> Result<Vec<Run>> {
        Ok(Vec::new())
    }
    async fn count_active(&self, _owner: &Owner, _up_to: usize) -> Result<usize> {
        Ok(0)
    }
}

#[async_trait]
impl SessionStore for Stores {
    async fn create(&self, _session: &Session) -> Result<bool> {
        Ok(true)
    }
    async fn get(&self, session_id: Uuid) -> Result<Option<Session>> {
        Ok(self.session.clone().filter(|s| s.session_id == session_id))
    }
    async fn update(&self, _session: &Session, _expected_version: u64) -> Result<()> {
        Ok(())
    }
    async fn delete(&self, _session_id: Uuid) -> Result<()> {
        Ok(())
    }
    async fn list(&self, _owner: &Owner, limit: usize, cursor: Option<&str>) -> Result<Page<Session>> {
        self.page(limit, cursor)
    }
    async fn expired(&self, _now: DateTime<Utc>, _limit: usize) -> Result<Vec<Session>> {
        Ok(Vec::new())
    }
}

#[async_trait]
impl RunQueue for Stores {
    async fn enqueue(&self, _message: &RunMessage) -> Result<()> {
        Ok(())
    }
}

#[async_trait]
impl ObjectStore for Stores {
    async fn put(&self, _key: &str, _body: Vec<u8>, _content_type: &str) -> Result<()> {
        Ok(())
    }
    async fn put_file(&self, _key: &str, _path: &Path, _content_type: &str) -> Result<()> {
        Ok(())
    }
    async fn get_file(&self, _key: &str, _path: &Path) -> Result<bool> {
        Ok(false)
    }
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.transcript.clone().filter(|_| key == object_keys::transcript(&object_keys::session_prefix(SESSION))))
    }
    async fn delete(&self, _key: &str) -> Result<()> {
        Ok(())
    }
    async fn list(&self, _prefix: &str) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
    async fn list_up_to(&self, _prefix: &str, _max: usize) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
}

#[async_trait]
impl EpicStore for Stores {
    async fn create(&self, _epic: &Epic) -> Result<()> {
        Ok(())
    }
    async fn get(&self, _epic_id: EpicId) -> Result<Option<Epic>> {
        Ok(None)
    }
    async fn update(&self, _epic: &Epic, _expected_version: u64) -> Result<()> {
        Ok(())
    }
    async fn list(&self, _owner: &Owner, limit: usize, cursor: Option<&str>) -> Result<Page<Epic>> {
        self.page(limit, cursor)
    }
}

#[async_trait]
impl EpicEngine for Stores {
    async fn start(&self, _name: &str, _input: &Value) -> Result<String> {
        Ok("execution".to_owned())
    }
    async fn stop(&self, _execution_id: &str, _cause: &str) -> Result<()> {
        Ok(())
    }
    async fn succeed(&self, _token: &str, _output: &Value) -> Result<TaskAnswer> {
        Ok(TaskAnswer::Gone)
    }
    async fn fail(&self, _token: &str, _error: &str, _cause: &str) -> Result<TaskAnswer> {
        Ok(TaskAnswer::Gone)
    }
    async fn heartbeat(&self, _token: &str) -> Result<TaskAnswer> {
        Ok(TaskAnswer::Gone)
    }
}

#[async_trait]
impl MemoryStore for Stores {
    async fn record(&self, _source: &MemorySource, _entry: &NewMemory, _status: MemoryStatus) -> Result<Uuid> {
        Ok(Uuid::nil())
    }
    async fn relevant(
        &self,
        _owner: &Owner,
        _repository_url: &str,
        _text: &str,
        _limit: usize,
    ) -> Result<Vec<MemoryHint>> {
        Ok(Vec::new())
    }
    async fn search(&self, _owner: &Owner, query: &MemoryQuery) -> Result<Vec<MemoryEntry>> {
        self.searches.lock().expect("not poisoned").push(query.clone());
        Ok(Vec::new())
    }
    async fn get(&self, _owner: &Owner, _memory_id: Uuid) -> Result<Option<MemoryEntry>> {
        Ok(None)
    }
    async fn update(&self, _owner: &Owner, _memory_id: Uuid, _change: &MemoryChange) -> Result<Option<MemoryEntry>> {
        Ok(None)
    }
    async fn delete(&self, _owner: &Owner, _memory_id: Uuid) -> Result<bool> {
        Ok(false)
    }
    async fn remove_stale(&self, _retired: DateTime<Utc>, _proposed: DateTime<Utc>, _limit: i64) -> Result<u64> {
        Ok(0)
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers and strategies
// ---------------------------------------------------------------------------------------------

fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().build().expect("a runtime").block_on(future)
}

fn registry() -> Arc<WorkflowRegistry> {
    static REGISTRY: OnceLock<Arc<WorkflowRegistry>> = OnceLock::new();
    REGISTRY.get_or_init(|| Arc::new(WorkflowRegistry::builtin())).clone()
}

fn owner() -> Owner {
    Owner::new("tenant")
}

fn policy() -> RepositoryPolicy {
    RepositoryPolicy::new(Some(REPOSITORY.to_owned()), vec!["https://github.com/acme/*".to_owned()])
}

fn run_service(stores: &Arc<Stores>) -> RunService {
    RunService::new(
        stores.clone(),
        stores.clone(),
        stores.clone(),
        stores.clone(),
        registry(),
        IntakeLimits::default(),
        policy(),
    )
}

fn session_service(stores: &Arc<Stores>) -> SessionService {
    SessionService::new(stores.clone(), stores.clone(), registry(), policy(), Duration::days(1))
}

fn epic_service(stores: &Arc<Stores>) -> EpicService {
    let runs = Arc::new(run_service(stores));
    EpicService::new(stores.clone(), stores.clone(), runs, stores.clone(), None, None, EpicSettings::default())
}

/// The session the stores hold: the tenant's, on `implement`, with a transcript.
fn session() -> Session {
    let mut session =
        Session::reserve(SESSION, owner(), "implement", REPOSITORY, "main", Utc::now(), Duration::days(1));
    session.transcript_prefix = Some(object_keys::session_prefix(SESSION));
    session
}

/// A CLI transcript of `messages` user and assistant messages, with a line that is none.
fn transcript(messages: usize) -> Vec<u8> {
    let mut text = String::from("{\"type\":\"queue-operation\"}\n");
    for (i, role) in ["user", "assistant"].iter().cycle().take(messages).enumerate() {
        text.push_str(&json!({"type": role, "message": {"content": format!("message {i}")}}).to_string());
        text.push('\n');
    }
    text.into_bytes()
}

/// The page size a listing's `limit` text asks for, if it is a valid one.
fn asked_limit(raw: &str) -> Option<usize> {
    raw.parse::<usize>().ok().filter(|n| (1..=MAX_PAGE_SIZE).contains(n))
}

const LIMIT_EDGES: &[&str] = &[
    "",
    "0",
    "1",
    "20",
    "100",
    "101",
    "-1",
    "+5",
    " 5",
    "5 ",
    "1e2",
    "0x10",
    "5.0",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999999",
    "２０",
    "٣",
];

fn limit_text() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => any::<String>(),
        2 => (0u64..=250).prop_map(|n| n.to_string()),
        1 => any::<u64>().prop_map(|n| n.to_string()),
        2 => prop::sample::select(LIMIT_EDGES).prop_map(str::to_owned),
    ]
}

fn cursor() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => any::<String>(),
        2 => Just(ISSUED.to_owned()),
        1 => "[A-Za-z0-9_=+/-]{0,64}",
        1 => "[A-Za-z0-9_-]{0,8}\\x00[A-Za-z0-9_-]{0,8}",
    ]
}

/// A name from `names`, or any text.
fn one_of_or_any(names: Vec<&'static str>) -> impl Strategy<Value = String> {
    prop_oneof![prop::sample::select(names).prop_map(str::to_owned), any::<String>()]
}

fn workflow_names() -> Vec<&'static str> {
    vec!["architect", "implement", "test", "review", "fix", "refactor", "document", "pr", "deploy", "Implement", ""]
}

/// The error code of an answer, `None` for an answer.
fn code<T>(answer: &Result<T>) -> Option<&'static str> {
    answer.as_ref().err().map(crate::Error::code)
}

// ---------------------------------------------------------------------------------------------
// Listings: page sizes and cursors
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn page_limits_are_within_bounds_or_invalid_query(
        asked in prop::option::of(prop_oneof![any::<usize>(), 0usize..300]),
        default in 1usize..300,
        max in 0usize..300,
    ) {
        match page_limit(asked, default, max) {
            Ok(n) => match asked {
                None => prop_assert_eq!(n, default),
                Some(a) => {
                    prop_assert_eq!(n, a);
                    prop_assert!((1..=max).contains(&n));
                }
            },
            Err(err) => {
                prop_assert_eq!(err.code(), "invalid_query");
                prop_assert!(asked.is_some_and(|a| !(1..=max).contains(&a)));
            }
        }
    }

    #[test]
    fn run_listings_hand_the_store_a_bounded_page_and_the_cursor_untouched(
        status in prop::option::of(one_of_or_any(RunStatus::ALL.map(RunStatus::as_str).to_vec())),
        workflow in prop::option::of(one_of_or_any(workflow_names())),
        limit in prop::option::of(limit_text()),
        cursor in prop::option::of(cursor()),
    ) {
        let stores = Arc::new(Stores::default());
        let query = ListQuery {
            status: status.clone(),
            workflow: workflow.clone(),
            limit: limit.clone(),
            cursor: cursor.clone(),
        };
        let answer = block_on(run_service(&stores).list(&owner(), query));

        let bad_status = status.as_deref().is_some_and(|s| s.parse::<RunStatus>().is_err());
        let unknown_workflow = workflow.as_deref().is_some_and(|w| registry().get(w).is_none());
        let page_size = match limit.as_deref() {
            None => Some(DEFAULT_PAGE_SIZE),
            Some(raw) => asked_limit(raw),
        };
        let expected = if bad_status {
            Some("invalid_query")
        } else if unknown_workflow {
            Some("unknown_workflow")
        } else {
            listing_code(page_size, cursor.as_deref())
        };
        prop_assert_eq!(code(&answer), expected);
        if let Err(err) = &answer {
            prop_assert!(matches!(err.kind(), ErrorKind::InvalidInput | ErrorKind::NotFound), "{:?}", err.kind());
        }
        if bad_status || unknown_workflow || page_size.is_none() {
            prop_assert_eq!(stores.last_page(), None, "the store is not asked for an invalid query");
        } else {
            let (size, passed) = stores.last_page().unwrap_or_default();
            prop_assert_eq!(Some(size), page_size);
            prop_assert!((1..=MAX_PAGE_SIZE).contains(&size));
            prop_assert_eq!(passed, cursor);
            let filter = stores.filters.lock().expect("not poisoned").last().cloned().unwrap_or_default();
            prop_assert_eq!(filter.status.map(RunStatus::as_str), status.as_deref());
            prop_assert_eq!(filter.workflow, workflow);
        }
    }

    #[test]
    fn session_listings_hand_the_store_a_bounded_page_and_the_cursor_untouched(
        limit in prop::option::of(prop_oneof![any::<usize>(), 0usize..150]),
        cursor in prop::option::of(cursor()),
    ) {
        let stores = Arc::new(Stores::default());
        let answer = block_on(session_service(&stores).list(&owner(), limit, cursor.as_deref()));

        let page_size = limit.map_or(Some(DEFAULT_PAGE_SIZE), |n| (1..=MAX_PAGE_SIZE).contains(&n).then_some(n));
        let expected = listing_code(page_size, cursor.as_deref());
        prop_assert_eq!(code(&answer), expected);
        prop_assert_eq!(stores.last_page(), page_size.map(|size| (size, cursor.clone())));
    }

    #[test]
    fn epic_listings_hand_the_store_a_bounded_page_and_the_cursor_untouched(
        limit in prop::option::of(limit_text()),
        cursor in prop::option::of(cursor()),
    ) {
        let stores = Arc::new(Stores::default());
        let answer = block_on(epic_service(&stores).list(&owner(), limit.clone(), cursor.as_deref()));

        let page_size = match limit.as_deref() {
            None => Some(DEFAULT_PAGE_SIZE),
            Some(raw) => asked_limit(raw),
        };
        let expected = listing_code(page_size, cursor.as_deref());
        prop_assert_eq!(code(&answer), expected);
        prop_assert_eq!(stores.last_page(), page_size.map(|size| (size, cursor.clone())));
    }

    #[test]
    fn session_history_pages_through_the_transcript(
        id in prop::option::of(prop_oneof![
            any::<String>(),
            any::<u128>().prop_map(|n| Uuid::from_u128(n).to_string()),
            Just(SESSION.braced().to_string()),
            Just(SESSION.simple().to_string()),
            Just(SESSION.to_string().to_uppercase()),
        ]),
        offset in prop::option::of(prop_oneof![any::<usize>(), 0usize..400, Just(usize::MAX)]),
        limit in prop::option::of(prop_oneof![any::<usize>(), 0usize..300]),
        messages in 0usize..300,
    ) {
        let stores =
            Arc::new(Stores { session: Some(session()), transcript: Some(transcript(messages)), ..Stores::default() });
        // `None` stands for the session's own id, as the API writes it.
        let id = id.unwrap_or_else(|| SESSION.to_string());
        let answer = block_on(session_service(&stores).history(&owner(), &id, offset, limit));

        let size_ok = limit.is_none_or(|n| (1..=MAX_HISTORY_PAGE).contains(&n));
        let expected = if !size_ok {
            Some("invalid_query")
        } else {
            match Uuid::parse_str(&id) {
                Err(_) => Some("invalid_session_id"),
                Ok(parsed) if parsed != SESSION => Some("unknown_session"),
                Ok(_) => None,
            }
        };
        prop_assert_eq!(code(&answer), expected);
        if let Ok((page, next)) = &answer {
            let start = offset.unwrap_or(0);
            let size = limit.unwrap_or(DEFAULT_HISTORY_PAGE);
            prop_assert_eq!(page.len(), messages.saturating_sub(start).min(size));
            for (k, message) in page.iter().enumerate() {
                prop_assert_eq!(message.index, start + k);
                prop_assert_eq!(&message.text, &format!("message {}", start + k));
            }
            // `page` is empty whenever `start` is past the end, so this cannot overflow.
            let end = start + page.len();
            prop_assert_eq!(*next, (end < messages).then_some(end));
        }
    }

    #[test]
    fn memory_searches_are_bounded_or_invalid_query(
        repository in prop::option::of(prop_oneof![Just(REPOSITORY.to_owned()), any::<String>(), "[a-z:/]{0,10}\\x00"]),
        kind in prop::option::of(one_of_or_any(MemoryKind::ALL.map(MemoryKind::as_str).to_vec())),
        status in prop::option::of(one_of_or_any(MemoryStatus::ALL.map(MemoryStatus::as_str).to_vec())),
        q in prop::option::of(prop_oneof![any::<String>(), "[ \\t\\n]{0,4}", "[a-z ]{0,10}\\x00"]),
        limit in prop::option::of(limit_text()),
    ) {
        let stores = Arc::new(Stores::default());
        let search = MemorySearch {
            repository: repository.clone(),
            kind: kind.clone(),
            status: status.clone(),
            q: q.clone(),
            limit: limit.clone(),
        };
        let answer = block_on(MemoryService::new(stores.clone(), policy()).search(&owner(), search));

        let page_size = match limit.as_deref() {
            None => Some(DEFAULT_PAGE_SIZE),
            Some(raw) => asked_limit(raw),
        };
        let valid = kind.as_deref().is_none_or(|k| k.parse::<MemoryKind>().is_ok())
            && status.as_deref().is_none_or(|s| s.parse::<MemoryStatus>().is_ok())
            && page_size.is_some()
            && ![&q, &repository].into_iter().flatten().any(|v| v.contains('\0'));
        prop_assert_eq!(code(&answer), (!valid).then_some("invalid_query"));
        let searches = stores.searches.lock().expect("not poisoned").clone();
        if valid {
            prop_assert_eq!(searches.len(), 1);
            let query = &searches[0];
            prop_assert_eq!(Some(query.limit), page_size);
            prop_assert_eq!(query.kind.map(MemoryKind::as_str), kind.as_deref());
            prop_assert_eq!(query.status.map(MemoryStatus::as_str), status.as_deref());
            prop_assert_eq!(&query.repository_url, &repository);
            prop_assert_eq!(query.text.as_deref(), q.as_deref().filter(|q| !q.trim().is_empty()));
        } else {
            prop_assert!(searches.is_empty(), "the store is not asked for an invalid search");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Submissions
// ---------------------------------------------------------------------------------------------

/// What a listing answers for a page size (`None`: out of bounds) and a cursor: the size is
/// judged first, then the cursor (only the one the fake store issued is good).
fn listing_code(page_size: Option<usize>, cursor: Option<&str>) -> Option<&'static str> {
    if page_size.is_none() {
        Some("invalid_query")
    } else if cursor.is_some_and(|c| c != ISSUED) {
        Some("invalid_cursor")
    } else {
        None
    }
}

/// The codes a submission can be refused with beyond its request's own (no limiter here, and
/// the stores never fail).
const SUBMIT_ONLY_CODES: &[&str] =
    &["unknown_workflow", "invalid_idempotency_key", "unknown_session", "session_conflict"];

const REPOSITORIES: &[&str] = &[
    REPOSITORY,
    "https://github.com/acme/lib.git",
    "HTTPS://GitHub.com:443/acme/./app.git",
    "https://github.com/acme/../other/x.git",
    "https://user:token@github.com/acme/app.git",
    "git@github.com:acme/app.git",
    "ftp://github.com/acme/app.git",
];

prop_compose! {
    fn run_request()(
        message in prop_oneof!["[a-z \\n\\x00]{0,20}", any::<String>()],
        branch in prop_oneof!["[a-z/.@{-]{0,12}", any::<String>()],
        max_turns in prop::option::of(prop_oneof![-5i64..210, any::<i64>()]),
        session_id in prop::option::of(prop_oneof![
            Just(SESSION.to_string()),
            any::<u128>().prop_map(|n| Uuid::from_u128(n).to_string()),
            any::<String>(),
        ]),
        repository_url in prop::option::of(prop_oneof![
            prop::sample::select(REPOSITORIES).prop_map(str::to_owned),
            any::<String>(),
        ]),
        metadata in prop::option::of(prop_oneof![
            Just(json!({"ticket": "ABC-1"})),
            Just(json!(["not", "an", "object"])),
            Just(Value::Null),
            any::<String>().prop_map(Value::String),
        ]),
        auto_commit in any::<Option<bool>>(),
        max_budget_usd in prop::option::of(prop_oneof![any::<f64>(), 0.0f64..20.0]),
    ) -> RunRequest {
        RunRequest { message, branch, max_turns, session_id, repository_url, metadata, auto_commit, max_budget_usd }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn submissions_are_queued_or_refused_with_a_documented_code(
        request in run_request(),
        workflow in prop_oneof![3 => Just("implement".to_owned()), 1 => one_of_or_any(workflow_names())],
        key in prop::option::of(prop_oneof!["[!-~]{1,40}", any::<String>(), "[!-~]{250,260}"]),
    ) {
        let stores = Arc::new(Stores { session: Some(session()), ..Stores::default() });
        let service = run_service(&stores);
        let origin = RunOrigin::default();
        let answer = block_on(service.submit(&owner(), &workflow, request.clone(), key.as_deref(), origin));
        match answer {
            Ok(submitted) => {
                let run = submitted.run;
                prop_assert!(!submitted.replayed);
                prop_assert_eq!(run.status, RunStatus::Queued);
                prop_assert_eq!(&run.workflow, &workflow);
                prop_assert_eq!(&run.message, &request.message);
                prop_assert!(BranchName::parse(&run.branch).is_ok(), "branch {:?}", run.branch);
                prop_assert!((MIN_MAX_TURNS..=MAX_MAX_TURNS).contains(&run.max_turns));
                prop_assert_eq!(&run.idempotency_key, &key);
                prop_assert!(run.repository_url.starts_with("https://github.com/acme/"), "{:?}", run.repository_url);
                if run.session_id.is_some() {
                    prop_assert_eq!(run.session_id, Some(SESSION));
                    prop_assert_eq!(run.workflow.as_str(), "implement");
                    prop_assert_eq!(run.repository_url.as_str(), REPOSITORY);
                }
            }
            Err(err) => {
                let known = RUN_REQUEST_CODES.contains(&err.code()) || SUBMIT_ONLY_CODES.contains(&err.code());
                prop_assert!(known, "undocumented code {}", err.code());
                prop_assert!(
                    matches!(err.kind(), ErrorKind::InvalidInput | ErrorKind::NotFound | ErrorKind::Conflict),
                    "{:?}", err.kind()
                );
            }
        }
    }
}
