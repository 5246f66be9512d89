//! IAM authentication through an RDS Proxy: the password is a token, a SigV4-presigned
//! `connect` request for the database user that lapses after 15 minutes. The pool's connect
//! options are renewed well before then, so connections opened later use a fresh one.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use sqlx::postgres::PgConnectOptions;

use runner_core::{Error, Result};

/// How long a token is valid (RDS's fixed maximum).
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(900);
/// How often the pool's token is renewed: well inside its lifetime.
pub const TOKEN_RENEWAL: Duration = Duration::from_secs(600);

/// True for a URL that names no password and points at RDS: its password is an IAM token.
pub fn uses_iam(options: &PgConnectOptions, url: &str) -> bool {
    let host = options.get_host();
    let has_password = url::Url::parse(url).ok().is_some_and(|u| u.password().is_some_and(|p| !p.is_empty()));
    !has_password && host.ends_with(".rds.amazonaws.com")
}

/// The IAM token for `user` at `host:port`, signed with `credentials` in `region` at `now`.
pub fn auth_token(
    host: &str,
    port: u16,
    user: &str,
    region: &str,
    credentials: &Credentials,
    now: SystemTime,
) -> Result<String> {
    let failed = |e: &dyn std::fmt::Display| Error::dependency("sign the database token", e.to_string());
    let identity: Identity = credentials.clone().into();
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(TOKEN_LIFETIME);
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("rds-db")
        .time(now)
        .settings(settings)
        .build()
        .map_err(|e| failed(&e))?
        .into();
    let mut url = url::Url::parse(&format!("https://{host}:{port}/")).map_err(|e| failed(&e))?;
    url.query_pairs_mut().append_pair("Action", "connect").append_pair("DBUser", user);
    let signable = SignableRequest::new("GET", url.as_str(), std::iter::empty(), SignableBody::Bytes(&[]))
        .map_err(|e| failed(&e))?;
    let (instructions, _) = sign(signable, &params).map_err(|e| failed(&e))?.into_parts();
    for (name, value) in instructions.params() {
        url.query_pairs_mut().append_pair(name, value);
    }
    Ok(url.as_str().trim_start_matches("https://").to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credentials() -> Credentials {
        Credentials::new("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", None, None, "test")
    }

    #[test]
    fn a_token_is_a_presigned_connect_request_for_the_user_valid_fifteen_minutes() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_300_000);
        let host = "db.proxy-abc.eu-west-1.rds.amazonaws.com";
        let token = auth_token(host, 5432, "runner", "eu-west-1", &credentials(), at).unwrap();
        assert!(token.starts_with(&format!("{host}:5432/?Action=connect&DBUser=runner&")), "{token}");
        let url = url::Url::parse(&format!("https://{token}")).unwrap();
        let query: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(query["X-Amz-Algorithm"], "AWS4-HMAC-SHA256");
        assert_eq!(query["X-Amz-Expires"], "900");
        assert_eq!(query["X-Amz-Credential"], "AKIDEXAMPLE/20251128/eu-west-1/rds-db/aws4_request");
        assert_eq!(query["X-Amz-Signature"].len(), 64);
        // Deterministic for the same inputs; another user or time signs differently.
        assert_eq!(token, auth_token(host, 5432, "runner", "eu-west-1", &credentials(), at).unwrap());
        assert_ne!(token, auth_token(host, 5432, "admin", "eu-west-1", &credentials(), at).unwrap());
    }

    #[test]
    fn only_a_passwordless_url_on_rds_uses_a_token() {
        let cases = [
            ("postgres://runner@db.proxy-abc.eu-west-1.rds.amazonaws.com:5432/runner", true),
            ("postgres://runner:secret@db.proxy-abc.eu-west-1.rds.amazonaws.com:5432/runner", false),
            ("postgres://runner@localhost:5432/runner", false),
        ];
        for (url, iam) in cases {
            let options: PgConnectOptions = url.parse().unwrap();
            assert_eq!(uses_iam(&options, url), iam, "{url}");
        }
    }
}
