//! Property tests of the domain's input handling: whatever a caller sends (a run or epic request,
//! a branch, a repository URL, a stream token, a trace header, a CloudEvent), the answer is a
//! value that keeps the documented rules or an error with a documented code, never a panic.

use std::sync::OnceLock;

use chrono::{DateTime, Duration, Utc};
use proptest::prelude::*;
use serde_json::{Value, json};
use uuid::Uuid;

use super::cloud_event::CloudEvent;
use super::epic::{ApprovalMode, EpicRequest, MAX_APPROVAL_TIMEOUT_SECONDS, MAX_FIX_ROUNDS, PlanStep};
use super::request::{MAX_BUDGET_USD, MAX_METADATA_BYTES, MIN_BUDGET_USD};
use super::stream::STREAM_TOKEN_TTL;
use super::{
    BranchName, DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_MAX_TURNS, IntakeLimits, MAX_BRANCH_BYTES, MAX_MAX_TURNS,
    MIN_MAX_TURNS, Owner, RepositoryPolicy, RunId, RunRequest, StreamClaims, StreamTokens, TraceContext, TraceId,
    ValidationError, WorkflowRegistry, validate_idempotency_key,
};

/// Every code `RunRequest::validate` can answer with (the `ValidationError` variants it builds,
/// itself or through `BranchName::parse` and `RepositoryPolicy::resolve`).
pub(crate) const RUN_REQUEST_CODES: &[&str] = &[
    "empty_message",
    "message_too_large",
    "invalid_message",
    "invalid_branch",
    "branch_too_long",
    "invalid_max_turns",
    "invalid_session_id",
    "invalid_repository_url",
    "repository_not_allowed",
    "repository_required",
    "invalid_metadata",
    "metadata_too_large",
    "invalid_budget",
];

/// Every code `EpicRequest::validate` can answer with.
const EPIC_REQUEST_CODES: &[&str] = &[
    "invalid_title",
    "empty_message",
    "message_too_large",
    "invalid_message",
    "invalid_branch",
    "branch_too_long",
    "invalid_repository_url",
    "repository_not_allowed",
    "repository_required",
    "invalid_budget",
    "invalid_steps",
    "invalid_approval_timeout",
    "invalid_fix_rounds",
    "invalid_max_turns",
];

/// `MAX_TITLE_CHARS`, `MAX_PLAN_STEPS` and `MAX_EPIC_BUDGET_USD` of `epic::request`, which is
/// private to `epic`.
const MAX_TITLE_CHARS: usize = 200;
const MAX_PLAN_STEPS: usize = 12;
const MAX_EPIC_BUDGET_USD: f64 = 10_000.0;

// ---------------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------------

const TEXT_UNITS: &[&str] = &["x", "é", "😀", " ", "\u{0}", "\n", "\u{3000}", "\""];

/// Any text: arbitrary Unicode, NUL and other controls, Unicode whitespace, and long runs of one
/// character (up to `max_repeat` of them, each of 1 to 4 bytes).
fn text(max_repeat: usize) -> BoxedStrategy<String> {
    prop_oneof![
        4 => any::<String>(),
        3 => "[ \\t\\r\\n\\x00\\x01\\x7f\\x{85}\\x{a0}\\x{3000}a-zé😀]{0,40}",
        1 => ("[a-z]{0,2}", prop::sample::select(TEXT_UNITS), 0..=max_repeat)
            .prop_map(|(head, unit, n)| format!("{head}{}", unit.repeat(n))),
    ]
    .boxed()
}

/// A message: mostly small, sometimes a few times the default 100 KiB limit.
fn message() -> BoxedStrategy<String> {
    prop_oneof![
        6 => text(600),
        1 => text(DEFAULT_MAX_MESSAGE_BYTES * 3 / 4),
    ]
    .boxed()
}

/// JSON of bounded depth, every kind of leaf included (a non-finite float becomes `null`).
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        text(64).prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(text(8), inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const METADATA_UNITS: &[&str] = &["v", "\"", "\u{1}", "é", "\\"];

/// Metadata: any JSON, or an object around the size limit (escaping included).
fn metadata() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => json_value(),
        1 => (0..3 * MAX_METADATA_BYTES, prop::sample::select(METADATA_UNITS))
            .prop_map(|(n, unit)| json!({ "k": unit.repeat(n) })),
    ]
}

const TURN_EDGES: &[i64] = &[i64::MIN, i64::MAX, -1, 0, 1, 200, 201, u32::MAX as i64, u32::MAX as i64 + 1];

fn max_turns() -> impl Strategy<Value = i64> {
    prop_oneof![any::<i64>(), -3i64..=205, prop::sample::select(TURN_EDGES)]
}

const BUDGET_EDGES: &[f64] = &[
    f64::NAN,
    f64::INFINITY,
    f64::NEG_INFINITY,
    0.0,
    -0.0,
    f64::MIN_POSITIVE,
    f64::from_bits(1),
    f64::EPSILON,
    f64::MAX,
    f64::MIN,
    1e-130,
    1e-131,
    MIN_BUDGET_USD,
    f64::from_bits(MIN_BUDGET_USD.to_bits() - 1),
    f64::from_bits(MIN_BUDGET_USD.to_bits() + 1),
    MAX_BUDGET_USD,
    f64::from_bits(MAX_BUDGET_USD.to_bits() - 1),
    f64::from_bits(MAX_BUDGET_USD.to_bits() + 1),
];

/// Any float: NaN, infinities, negative, subnormal, and the neighbours of both bounds.
fn budget() -> impl Strategy<Value = f64> {
    prop_oneof![
        3 => any::<f64>(),
        2 => -1.0f64..20_000.0,
        2 => prop::sample::select(BUDGET_EDGES),
    ]
}

fn session_id() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => any::<String>(),
        1 => any::<u128>().prop_map(|n| Uuid::from_u128(n).to_string()),
        1 => any::<u128>().prop_map(|n| Uuid::from_u128(n).simple().to_string()),
        1 => any::<u128>().prop_map(|n| Uuid::from_u128(n).urn().to_string()),
        1 => "[0-9a-fA-F{}-]{30,40}",
    ]
}

const BRANCH_EDGES: &[&str] = &[
    "",
    "HEAD",
    "@",
    "-x",
    "a.lock",
    "a.lock/b",
    "a/.b",
    ".a",
    "a..b",
    "a@{1}",
    "@{-1}",
    "a/",
    "/a",
    "a//b",
    "a.",
    "x\\y",
    "x y",
    "x\u{7f}",
    "x\u{0}",
    "refs/heads/main",
    "feature/x",
    "é/😀",
];

const BRANCH_UNITS: &[&str] = &["b", "é", "/", "ab/", "😀"];

/// Branch-like names: git's special characters, arbitrary text, plausible names, names around
/// the length cap, and the classic edge cases.
fn branch_like() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-zA-Z0-9/._@{}~^:?*\\[\\\\ \\x00\\x1f\\x7f-]{0,24}",
        2 => any::<String>(),
        2 => prop::collection::vec("[a-z0-9._-]{1,8}", 1..5).prop_map(|parts| parts.join("/")),
        1 => (1usize..=120, prop::sample::select(BRANCH_UNITS)).prop_map(|(n, unit)| unit.repeat(n)),
        1 => prop::sample::select(BRANCH_EDGES).prop_map(str::to_owned),
    ]
}

const SCHEMES: &[&str] = &["https", "HTTPS", "HtTpS", "http", "ssh", "SSH", "git", "file", "ftp", "javascript", ""];
const USERINFO: &[&str] = &["", "", "", "git@", "user@", "user:pass@", ":@", "tok%40en@", ":x@", "@"];
const HOSTS: &[&str] = &[
    "github.com",
    "GitHub.COM",
    "GITHUB.com",
    "ｇｉｔｈｕｂ.com",
    "evil.com",
    "github.com.evil.com",
    "127.0.0.1",
    "[::1]",
    "",
    "xn--",
    "github.com%2F",
    "git.example.com",
];
const PORTS: &[&str] = &["", "", "", ":443", ":80", ":22", ":8443", ":", ":99999", ":0443"];
const SEGMENTS: &[&str] = &[
    "acme",
    "ACME",
    "other",
    "x.git",
    "..",
    ".",
    "%2e%2e",
    "%2E%2e",
    ".%2e",
    "%2e",
    "",
    "..%2f..%2fother",
    "a%2fb",
    "%5c..",
    "~",
    "@",
    "?q=..",
    "#/../x",
    ";",
    "é",
    "%00",
    "a b",
];
const SEPARATORS: &[&str] = &["/", "/", "/", "\\", "//"];

/// A path of `SEGMENTS`, each after a separator (`/`, `\` or `//`).
fn url_path() -> impl Strategy<Value = String> {
    prop::collection::vec((prop::sample::select(SEPARATORS), prop::sample::select(SEGMENTS)), 0..7).prop_map(|path| {
        let mut out = String::new();
        for (separator, segment) in path {
            out.push_str(separator);
            out.push_str(segment);
        }
        out
    })
}

/// URL-ish text: mixed-case schemes and hosts, userinfo, ports and climbing paths.
fn url_like() -> impl Strategy<Value = String> {
    (
        prop::sample::select(SCHEMES),
        prop::sample::select(USERINFO),
        prop::sample::select(HOSTS),
        prop::sample::select(PORTS),
        url_path(),
    )
        .prop_map(|(scheme, userinfo, host, port, path)| format!("{scheme}://{userinfo}{host}{port}{path}"))
}

const SCP_USERS: &[&str] = &["git@", "", "a@b@", "-oProxyCommand=x@"];
const SCP_HOSTS: &[&str] = &["github.com", "GitHub.com", "h", "h/x"];

/// scp-like `user@host:path` text.
fn scp_like() -> impl Strategy<Value = String> {
    (
        prop::sample::select(SCP_USERS),
        prop::sample::select(SCP_HOSTS),
        prop::collection::vec(prop::sample::select(SEGMENTS), 0..5),
    )
        .prop_map(|(user, host, segments)| format!("{user}{host}:{}", segments.join("/")))
}

fn repository_url() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => url_like(),
        2 => url_path().prop_map(|path| format!("https://github.com/acme{path}")),
        2 => scp_like(),
        2 => any::<String>(),
    ]
}

prop_compose! {
    fn run_request()(
        message in message(),
        branch in branch_like(),
        max_turns in prop::option::of(max_turns()),
        session_id in prop::option::of(session_id()),
        repository_url in prop::option::of(repository_url()),
        metadata in prop::option::of(metadata()),
        auto_commit in any::<Option<bool>>(),
        max_budget_usd in prop::option::of(budget()),
    ) -> RunRequest {
        RunRequest { message, branch, max_turns, session_id, repository_url, metadata, auto_commit, max_budget_usd }
    }
}

/// An instant between 1970 and 2100.
fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    (0i64..4_102_444_800, 0u32..1_000_000_000)
        .prop_map(|(secs, nanos)| DateTime::<Utc>::from_timestamp(secs, nanos).expect("within chrono's range"))
}

fn run_id() -> impl Strategy<Value = RunId> {
    any::<u128>().prop_map(|n| Uuid::from_u128(n).to_string().parse::<RunId>().expect("a UUID is a run id"))
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

use super::request::tests::workflow;

fn registry() -> &'static WorkflowRegistry {
    static REGISTRY: OnceLock<WorkflowRegistry> = OnceLock::new();
    REGISTRY.get_or_init(WorkflowRegistry::builtin)
}

/// A few deployments' policies: a default with an allowlist, two prefixes and no default,
/// anything, nothing.
fn policy(which: usize) -> RepositoryPolicy {
    match which {
        0 => RepositoryPolicy::new(
            Some("https://git.example.com/acme/app.git".into()),
            vec!["https://git.example.com/acme/*".into()],
        ),
        1 => RepositoryPolicy::new(None, vec!["https://github.com/acme/*".into(), "git@github.com:acme/*".into()]),
        2 => RepositoryPolicy::new(None, vec!["*".into()]),
        _ => RepositoryPolicy::default(),
    }
}

/// git-check-ref-format(1) as `branch.rs` documents it (`--branch`, so one-level names are
/// fine and a lone `@` is `refs/heads/@`), written independently over bytes, plus the length cap.
fn git_accepts_branch(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_BRANCH_BYTES
        && !name.starts_with('-')
        && name != "HEAD"
        && !name.contains("@{")
        && !name.contains("..")
        && !name.bytes().any(|b| b < 0x20 || b == 0x7f || b" ~^:?*[\\".contains(&b))
        && !name.starts_with('/')
        && !name.ends_with('/')
        && !name.contains("//")
        && !name.ends_with('.')
        && name.split('/').all(|component| !component.starts_with('.') && !component.ends_with(".lock"))
}

/// A path segment the URL standard treats as `.` or `..` (percent-encoded dots included).
fn is_dot_segment(segment: &str) -> bool {
    matches!(segment.to_ascii_lowercase().as_str(), "." | ".." | "%2e" | ".%2e" | "%2e." | "%2e%2e")
}

fn in_budget(usd: f64) -> bool {
    usd.is_finite() && (MIN_BUDGET_USD..=MAX_BUDGET_USD).contains(&usd)
}

/// Whether `err` names a rule `request` really breaks.
fn justifies(err: &ValidationError, request: &RunRequest, limits: &IntakeLimits, policy: &RepositoryPolicy) -> bool {
    match err {
        ValidationError::EmptyMessage => request.message.trim().is_empty(),
        ValidationError::MessageTooLarge { actual, max } => {
            *actual == request.message.len() && *max == limits.max_message_bytes && actual > max
        }
        ValidationError::InvalidMessage => request.message.contains('\0'),
        ValidationError::InvalidBranch { .. } | ValidationError::BranchTooLong { .. } => {
            BranchName::parse(&request.branch).err().as_ref() == Some(err)
        }
        ValidationError::InvalidMaxTurns { actual, .. } => {
            request.max_turns == Some(*actual)
                && !(i64::from(MIN_MAX_TURNS)..=i64::from(MAX_MAX_TURNS)).contains(actual)
        }
        ValidationError::InvalidSessionId => {
            request.session_id.as_deref().is_some_and(|id| Uuid::parse_str(id).is_err())
        }
        ValidationError::InvalidRepositoryUrl(_)
        | ValidationError::RepositoryNotAllowed(_)
        | ValidationError::RepositoryRequired => {
            policy.resolve(request.repository_url.as_deref()).err().as_ref() == Some(err)
        }
        ValidationError::InvalidMetadata => request.metadata.as_ref().is_some_and(|m| !m.is_object() && !m.is_null()),
        ValidationError::MetadataTooLarge { actual, max } => {
            request.metadata.as_ref().is_some_and(|m| m.is_object() && m.to_string().len() == *actual)
                && *max == MAX_METADATA_BYTES
                && actual > max
        }
        ValidationError::InvalidBudget => request.max_budget_usd.is_some_and(|usd| !in_budget(usd)),
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Run requests
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn run_requests_validate_within_the_limits_or_with_a_documented_code(
        request in run_request(),
        max_message_bytes in prop_oneof![Just(DEFAULT_MAX_MESSAGE_BYTES), 0usize..2_000],
        workflow_turns in prop::option::of(MIN_MAX_TURNS..=MAX_MAX_TURNS),
        which_policy in 0usize..4,
    ) {
        let limits = IntakeLimits { max_message_bytes };
        let repositories = policy(which_policy);
        match request.clone().validate(&workflow(workflow_turns), &limits, &repositories) {
            Ok(valid) => {
                prop_assert_eq!(valid.workflow.as_str(), "implement");
                prop_assert!(!valid.message.trim().is_empty());
                prop_assert!(valid.message.len() <= max_message_bytes);
                prop_assert!(!valid.message.contains('\0'));
                prop_assert!(valid.message == request.message, "the message is kept as sent");
                prop_assert_eq!(valid.branch.as_str(), request.branch.as_str());
                prop_assert!(git_accepts_branch(valid.branch.as_str()), "accepted branch {:?}", valid.branch);
                prop_assert!((MIN_MAX_TURNS..=MAX_MAX_TURNS).contains(&valid.max_turns));
                match request.max_turns {
                    Some(asked) => prop_assert_eq!(i64::from(valid.max_turns), asked),
                    None => prop_assert_eq!(Some(valid.max_turns), workflow_turns.or(Some(DEFAULT_MAX_TURNS))),
                }
                prop_assert_eq!(valid.session_id.is_some(), request.session_id.is_some());
                let resolved = repositories.resolve(request.repository_url.as_deref());
                prop_assert_eq!(Ok(valid.repository_url.clone()), resolved);
                match (&request.metadata, &valid.metadata_json) {
                    (None | Some(Value::Null), None) => {}
                    (Some(Value::Object(_)), Some(kept)) => {
                        prop_assert!(kept.len() <= MAX_METADATA_BYTES);
                        let back: Value = serde_json::from_str(kept).map_err(|e| TestCaseError::fail(e.to_string()))?;
                        prop_assert!(back.is_object());
                    }
                    (sent, kept) => {
                        return Err(TestCaseError::fail(format!("metadata {sent:?} was kept as {kept:?}")));
                    }
                }
                prop_assert_eq!(valid.auto_commit, request.auto_commit);
                match valid.max_budget_usd {
                    Some(usd) => prop_assert!(in_budget(usd), "accepted budget {}", usd),
                    None => prop_assert!(request.max_budget_usd.is_none()),
                }
            }
            Err(err) => {
                prop_assert!(RUN_REQUEST_CODES.contains(&err.code()), "undocumented code {}", err.code());
                prop_assert!(!err.to_string().is_empty());
                prop_assert!(
                    justifies(&err, &request, &limits, &repositories),
                    "{:?} is not a rule the request breaks \
                     (branch {:?}, max_turns {:?}, session {:?}, repository {:?}, budget {:?})",
                    err,
                    request.branch,
                    request.max_turns,
                    request.session_id,
                    request.repository_url,
                    request.max_budget_usd
                );
            }
        }
    }

    #[test]
    fn idempotency_keys_are_one_to_255_printable_ascii_bytes(
        key in prop_oneof![any::<String>(), "[!-~]{0,300}", "[ -\\x7f]{0,20}"],
    ) {
        let verdict = validate_idempotency_key(&key);
        prop_assert_eq!(
            verdict.is_ok(),
            !key.is_empty() && key.len() <= 255 && key.bytes().all(|b| b.is_ascii_graphic())
        );
        if let Err(err) = verdict {
            prop_assert_eq!(err.code(), "invalid_idempotency_key");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Branch names
// ---------------------------------------------------------------------------------------------

const INFIX_FRAGMENTS: &[&str] = &["..", "@{", "\\", " ", "~", "^", ":", "?", "*", "[", "\u{7f}", "\u{0}", "\t", "//"];
const SUFFIX_FRAGMENTS: &[&str] = &[".lock", "/", ".", "/.lock", "/.x"];
const PREFIX_FRAGMENTS: &[&str] = &["-", "/", ".", "./"];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn branch_names_are_accepted_exactly_when_git_would(name in branch_like()) {
        let parsed = BranchName::parse(&name);
        match &parsed {
            Ok(branch) => {
                prop_assert_eq!(branch.as_str(), name.as_str());
                prop_assert!(git_accepts_branch(&name), "accepted {:?}", name);
            }
            Err(err) => {
                prop_assert!(matches!(err.code(), "invalid_branch" | "branch_too_long"), "code {}", err.code());
                prop_assert_eq!(matches!(err, ValidationError::BranchTooLong { .. }), name.len() > MAX_BRANCH_BYTES);
                prop_assert!(!git_accepts_branch(&name), "refused {:?}: {}", name, err);
            }
        }
        // Deserializing goes through the same rules.
        let quoted = serde_json::to_string(&name).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(serde_json::from_str::<BranchName>(&quoted).ok(), parsed.ok());
    }

    #[test]
    fn well_formed_names_pass_and_one_bad_fragment_fails_them(
        parts in prop::collection::vec("[a-zA-Z0-9_+=,é][a-zA-Z0-9_+=,é-]{0,10}(\\.[a-km-z0-9]{1,4})?", 1..5),
        infix in prop::sample::select(INFIX_FRAGMENTS),
        suffix in prop::sample::select(SUFFIX_FRAGMENTS),
        prefix in prop::sample::select(PREFIX_FRAGMENTS),
        at in any::<prop::sample::Index>(),
    ) {
        let name = parts.join("/");
        prop_assume!(name != "HEAD");
        prop_assert!(BranchName::parse(&name).is_ok(), "refused {:?}", name);

        let mut cut = at.index(name.len() + 1);
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        let with_infix = format!("{}{infix}{}", &name[..cut], &name[cut..]);
        prop_assert!(BranchName::parse(&with_infix).is_err(), "accepted {:?}", with_infix);
        let with_suffix = format!("{name}{suffix}");
        prop_assert!(BranchName::parse(&with_suffix).is_err(), "accepted {:?}", with_suffix);
        let with_prefix = format!("{prefix}{name}");
        prop_assert!(BranchName::parse(&with_prefix).is_err(), "accepted {:?}", with_prefix);
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Repository URLs
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn accepted_urls_are_in_normal_form(raw in repository_url()) {
        let anything = policy(2);
        match anything.resolve(Some(raw.as_str())) {
            Err(err) => prop_assert_eq!(err.code(), "invalid_repository_url", "{:?}: {}", raw, err),
            Ok(url) => {
                prop_assert!(!url.chars().any(|c| c.is_control() || c.is_whitespace()), "{:?}", url);
                prop_assert!(!url.starts_with('-'));
                match url::Url::parse(&url) {
                    Ok(parsed) => {
                        let scheme = parsed.scheme();
                        let known = matches!(scheme, "https" | "http" | "ssh" | "git" | "file");
                        prop_assert!(known, "scheme of {:?}", url);
                        prop_assert!(url.starts_with(&format!("{scheme}:")), "scheme of {:?} is not lower-case", url);
                        prop_assert!(parsed.password().is_none(), "password in {:?}", url);
                        if scheme.starts_with("http") {
                            prop_assert!(parsed.username().is_empty(), "user in {:?}", url);
                        }
                        if matches!(scheme, "https" | "http" | "file") {
                            let host = parsed.host_str().unwrap_or_default();
                            prop_assert_eq!(host, host.to_ascii_lowercase(), "host of {:?}", url);
                        }
                        let segments: Vec<&str> = parsed.path_segments().map(|s| s.collect()).unwrap_or_default();
                        prop_assert!(!segments.iter().any(|s| is_dot_segment(s)), "dot segment in {:?}", url);
                        // The normal form is a fixed point: judging it again changes nothing.
                        prop_assert_eq!(anything.resolve(Some(url.as_str())), Ok(url.clone()));
                    }
                    Err(_) => {
                        // scp-like `user@host:path`, kept as sent; its path may not climb.
                        prop_assert_eq!(&url, &raw);
                        let (user_host, path) = url.split_once(':').unwrap_or_default();
                        prop_assert!(user_host.contains('@') && !user_host.contains('/'), "{:?}", url);
                        prop_assert!(!path.split('/').any(|s| s == ".."), "climbing path in {:?}", url);
                    }
                }
            }
        }
    }

    #[test]
    fn a_prefix_allows_nothing_outside_it(raw in repository_url()) {
        let acme = policy(1);
        match acme.resolve(Some(raw.as_str())) {
            Err(err) => {
                let code = err.code();
                prop_assert!(matches!(code, "invalid_repository_url" | "repository_not_allowed"), "{}", code);
            }
            Ok(url) if url.starts_with("git@github.com:acme/") => {
                prop_assert_eq!(&url, &raw);
                prop_assert!(!url.split(['/', ':']).any(|s| s == ".."), "climbing path in {:?}", url);
            }
            Ok(url) => {
                prop_assert!(url.starts_with("https://github.com/acme/"), "{:?} allowed as {:?}", raw, url);
                let parsed = url::Url::parse(&url).map_err(|e| TestCaseError::fail(format!("{url:?}: {e}")))?;
                prop_assert_eq!(parsed.scheme(), "https");
                prop_assert_eq!(parsed.host_str(), Some("github.com"));
                prop_assert_eq!(parsed.port(), None);
                prop_assert!(parsed.username().is_empty() && parsed.password().is_none());
                let segments: Vec<&str> = parsed.path_segments().map(|s| s.collect()).unwrap_or_default();
                prop_assert_eq!(segments.first().copied(), Some("acme"), "{:?}", url);
                prop_assert!(!segments.iter().any(|s| is_dot_segment(s)), "dot segment in {:?}", url);
            }
        }
    }

    #[test]
    fn any_policy_answers_with_a_repository_code(raw in prop::option::of(repository_url()), which in 0usize..4) {
        let policy = policy(which);
        if let Err(err) = policy.resolve(raw.as_deref()) {
            prop_assert!(
                matches!(err.code(), "invalid_repository_url" | "repository_not_allowed" | "repository_required"),
                "{}", err.code()
            );
            prop_assert_eq!(matches!(err, ValidationError::RepositoryRequired), raw.is_none());
        }
    }
}

/// `ssh://` and `git://` are not "special" schemes to the URL standard, so the `url` crate keeps
/// their host as written; the normal form lower-cases it anyway, so one repository has one name.
#[test]
fn ssh_hosts_are_lower_cased_like_https_hosts() {
    let anything = policy(2);
    assert_eq!(anything.resolve(Some("ssh://git@GitHub.com/acme/x.git")).unwrap(), "ssh://git@github.com/acme/x.git");
    assert_eq!(anything.resolve(Some("git://GitHub.com/acme/x.git")).unwrap(), "git://github.com/acme/x.git");
}

/// Percent-encoded slashes survive normalisation (`%2f` is not a separator to the URL standard),
/// so a path that climbs once a server decodes `%2f` is refused outright.
#[test]
fn encoded_slashes_cannot_climb_out_of_a_prefix() {
    let acme = policy(1);
    for climbing in ["https://github.com/acme/..%2f..%2fother/x.git", "https://github.com/acme/..%2F/other/x.git"] {
        assert_eq!(acme.resolve(Some(climbing)).unwrap_err().code(), "invalid_repository_url", "{climbing}");
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Stream tokens
// ---------------------------------------------------------------------------------------------

/// Secrets without NUL bytes and at most a SHA-256 block long: HMAC pads a shorter key with
/// zeros and hashes a longer one, so `k` and `k\0`, or a long key and its digest, are one key.
fn secret() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(1u8..=255, 0..=64)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_tokens_never_verify(
        token in prop_oneof![
            any::<String>(),
            "[A-Za-z0-9_-]{0,120}\\.[0-9a-fA-F]{0,70}",
            "[A-Za-z0-9_.=+/-]{0,200}",
        ],
        secret in secret(),
        now in instant(),
    ) {
        prop_assert_eq!(StreamTokens::new(secret).verify(&token, now), None);
    }

    #[test]
    fn forged_claims_never_verify(
        run_id in run_id(),
        owner in any::<String>(),
        now in instant(),
        signature in "[0-9a-f]{64}",
    ) {
        use base64::Engine;
        let claims = StreamClaims { run_id, owner: Owner::new(owner), expires_at: now + Duration::days(1), key: None };
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(&claims).map_err(|e| TestCaseError::fail(e.to_string()))?);
        prop_assert_eq!(StreamTokens::new(b"secret".to_vec()).verify(&format!("{payload}.{signature}"), now), None);
        prop_assert_eq!(StreamTokens::new(b"secret".to_vec()).verify(&payload, now), None);
    }

    #[test]
    fn a_token_verifies_only_under_its_own_secret_while_fresh(
        secret in secret(),
        other in secret(),
        run_id in run_id(),
        owner in any::<String>(),
        issued_at in instant(),
        within in 0i64..3_600_000,
        after in 0i64..1_000_000_000_000,
    ) {
        let tokens = StreamTokens::new(secret.clone());
        let owner = Owner::new(owner);
        let token = tokens.issue_for_run(run_id, &owner, issued_at);
        let expected = StreamClaims { run_id, owner, expires_at: issued_at + STREAM_TOKEN_TTL, key: None };

        prop_assert_eq!(tokens.verify(&token, issued_at + Duration::milliseconds(within)), Some(expected.clone()));
        prop_assert_eq!(tokens.verify(&token, expected.expires_at + Duration::milliseconds(after)), None, "expired");
        if other != secret {
            prop_assert_eq!(StreamTokens::new(other).verify(&token, issued_at), None, "another secret");
        }
    }

    #[test]
    fn a_token_with_one_character_changed_fails(
        secret in secret(),
        run_id in run_id(),
        owner in "[a-z0-9:@._-]{0,40}",
        issued_at in instant(),
        at in any::<prop::sample::Index>(),
        replacement in any::<char>(),
    ) {
        let tokens = StreamTokens::new(secret);
        let token = tokens.issue_for_run(run_id, &Owner::new(owner), issued_at);
        // The token is ASCII, so every byte is a character boundary.
        let i = at.index(token.len());
        let original = char::from(token.as_bytes()[i]);
        prop_assume!(replacement != original);
        let mut changed = token.clone();
        changed.replace_range(i..=i, replacement.encode_utf8(&mut [0; 4]));

        let in_signature = token.find('.').is_some_and(|dot| i > dot);
        // hex::decode reads upper case too: the only other spelling of a signature.
        let same_nibble =
            in_signature && replacement.is_ascii_hexdigit() && replacement.eq_ignore_ascii_case(&original);
        prop_assert_eq!(tokens.verify(&changed, issued_at).is_some(), same_nibble, "{:?} -> {:?}", token, changed);
    }
}

/// A token has one spelling: its signature in lower-case hex, as issued (`hex::decode` alone
/// would take upper case too).
#[test]
fn a_token_has_one_spelling() {
    let tokens = StreamTokens::new(b"secret".to_vec());
    let now = Utc::now();
    let token = tokens.issue_for_run(RunId::new(), &Owner::new("a"), now);
    let (payload, signature) = token.split_once('.').unwrap();
    assert_eq!(tokens.verify(&format!("{payload}.{}", signature.to_ascii_uppercase()), now), None);
}

// ---------------------------------------------------------------------------------------------
// Epic requests, trace headers, CloudEvents
// ---------------------------------------------------------------------------------------------

const STEP_NAMES: &[&str] = &[
    "approval",
    "architect",
    "implement",
    "test",
    "review",
    "fix",
    "refactor",
    "document",
    "pr",
    "deploy",
    "",
    "APPROVAL",
];
const APPROVAL_MODES: &[ApprovalMode] = &[ApprovalMode::Manual, ApprovalMode::Auto];
const SPEC_VERSIONS: &[&str] = &["1.0", "0.3", "", " 1.0"];

prop_compose! {
    fn epic_request()(
        title in prop_oneof![text(60), "[a-z ]{195,205}", "é{199,201}"],
        message in message(),
        branch in branch_like(),
        repository_url in prop::option::of(repository_url()),
        steps in prop::option::of(prop::collection::vec(
            prop_oneof![4 => prop::sample::select(STEP_NAMES).prop_map(str::to_owned), 1 => any::<String>()],
            0..16,
        )),
        budget_usd in budget(),
        approval in prop::option::of(prop::sample::select(APPROVAL_MODES)),
        approval_timeout_seconds in prop::option::of(prop_oneof![any::<i64>(), -2i64..700_000]),
        max_fix_rounds in prop::option::of(prop_oneof![any::<i64>(), -2i64..8]),
        flags in any::<(Option<bool>, Option<bool>)>(),
        max_turns in prop::option::of(max_turns()),
    ) -> EpicRequest {
        let (pr, rollback_on_failure) = flags;
        EpicRequest {
            title, message, branch, repository_url, steps, budget_usd, approval, approval_timeout_seconds,
            max_fix_rounds, pr, rollback_on_failure, max_turns,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn epic_requests_validate_within_the_limits_or_with_a_documented_code(
        request in epic_request(),
        max_message_bytes in prop_oneof![Just(DEFAULT_MAX_MESSAGE_BYTES), 0usize..2_000],
        which_policy in 0usize..4,
    ) {
        let limits = IntakeLimits { max_message_bytes };
        match request.validate(registry(), &limits, &policy(which_policy)) {
            Ok(valid) => {
                prop_assert_eq!(valid.title.trim(), valid.title.as_str());
                prop_assert!(!valid.title.is_empty() && valid.title.chars().count() <= MAX_TITLE_CHARS);
                prop_assert!(!valid.title.contains('\0'));
                prop_assert!(!valid.message.trim().is_empty() && !valid.message.contains('\0'));
                prop_assert!(valid.message.len() <= max_message_bytes / 2);
                prop_assert!(BranchName::parse(&valid.branch).is_ok());
                prop_assert!(!valid.plan.is_empty() && valid.plan.len() <= MAX_PLAN_STEPS);
                let has_run = valid.plan.iter().any(|s| matches!(s, PlanStep::Run { .. }));
                prop_assert!(has_run, "the plan runs something");
                prop_assert!(!valid.plan.windows(2).any(|w| w[0] == PlanStep::Approval && w[1] == PlanStep::Approval));
                for step in &valid.plan {
                    if let PlanStep::Run { workflow, .. } = step {
                        prop_assert!(registry().get(workflow).is_some(), "unknown workflow {:?} planned", workflow);
                    }
                }
                let budget = valid.budget_usd;
                prop_assert!(budget.is_finite() && (MIN_BUDGET_USD..=MAX_EPIC_BUDGET_USD).contains(&budget));
                prop_assert!((1..=MAX_APPROVAL_TIMEOUT_SECONDS).contains(&valid.approval_timeout_seconds));
                prop_assert!(valid.max_fix_rounds <= MAX_FIX_ROUNDS);
                prop_assert!(valid.max_turns.is_none_or(|t| (MIN_MAX_TURNS..=MAX_MAX_TURNS).contains(&t)));
            }
            Err(err) => {
                prop_assert!(EPIC_REQUEST_CODES.contains(&err.code()), "undocumented code {}", err.code());
                prop_assert!(!err.to_string().is_empty());
            }
        }
    }

    #[test]
    fn trace_headers_name_only_well_formed_trace_ids(
        header in prop_oneof![
            any::<String>(),
            "[0-9a-fA-F]{2}-[0-9a-fA-F]{32}-[0-9a-fA-F]{16}-[0-9a-fA-F]{2}(-[a-z0-9]{0,4})?",
            "Root=1-[0-9a-fA-F]{8}-[0-9a-fA-F]{24}(;Parent=[0-9a-f]{16})?",
            "[0-9a-fA-Fé]{30,34}",
        ],
    ) {
        let ids = [TraceId::parse(&header), TraceId::from_traceparent(&header), TraceId::from_xray(&header)];
        for id in ids.into_iter().flatten() {
            prop_assert_eq!(id.as_str().len(), 32);
            prop_assert!(id.as_str().bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{}", id);
            prop_assert!(id.as_str().bytes().any(|b| b != b'0'));
        }
        let context = TraceContext::continuing(Some(header.as_str()), Some(header.as_str()));
        prop_assert_eq!(context.span_id.len(), 16);
        prop_assert!(TraceId::from_traceparent(&context.traceparent()).is_some());
    }

    #[test]
    fn cloud_events_parse_or_say_why(
        event_text in prop_oneof![
            any::<String>(),
            (
                prop::sample::select(SPEC_VERSIONS),
                text(8),
                text(8),
                text(8),
                json_value(),
                prop::option::of(text(40)),
            )
                .prop_map(|(version, id, source, kind, data, traceparent)| {
                    json!({
                        "specversion": version, "id": id, "source": source, "type": kind, "data": data,
                        "traceparent": traceparent,
                    })
                    .to_string()
                }),
        ],
    ) {
        match CloudEvent::parse(&event_text) {
            Ok(event) => {
                prop_assert_eq!(event.specversion.as_str(), "1.0");
                for field in [&event.id, &event.source, &event.kind] {
                    prop_assert!(!field.trim().is_empty());
                }
                prop_assert!(event.data.is_object() || event.data.is_null());
                prop_assert!(validate_idempotency_key(&event.idempotency_key()).is_ok());
                let _ = event.trace_id();
            }
            Err(err) => prop_assert!(matches!(err.code, "invalid_json" | "invalid_event"), "{}", err.code),
        }
    }
}
