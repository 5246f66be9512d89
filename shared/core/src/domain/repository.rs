//! Which repositories a deployment will clone.

use super::ValidationError;

/// The default repository, the allowlist and the schemes. An allowlist entry is an exact URL or
/// a prefix ending in `*` (`https://github.com/acme/*`); an empty allowlist allows only the
/// default. A requested URL must also use one of the deployment's schemes (`ssh` for scp-like
/// `user@host:path`).
#[derive(Clone, Debug, Default)]
pub struct RepositoryPolicy {
    default: Option<String>,
    allowlist: Vec<String>,
    /// Empty: every scheme the runner can clone.
    schemes: Vec<String>,
}

impl RepositoryPolicy {
    /// A policy with this default (an empty string counts as none) and allowlist.
    pub fn new(default: Option<String>, allowlist: Vec<String>) -> Self {
        Self { default: default.filter(|d| !d.is_empty()).map(|d| normalise(&d)), allowlist, schemes: Vec::new() }
    }

    /// The same policy for requests that name a repository with one of `schemes` only
    /// (`https`, `ssh`, `git`, `file`, `http`).
    pub fn with_schemes(self, schemes: Vec<String>) -> Self {
        Self { schemes: schemes.into_iter().map(|s| s.to_ascii_lowercase()).collect(), ..self }
    }

    /// The repository a run will use: the requested one if it is allowed, else the default.
    /// The URL is matched, and kept, in its normal form (lower-case scheme and host, no dot
    /// segments, no default port), so `https://h/acme/../other/x.git` is `https://h/other/x.git`
    /// and is judged as that.
    pub fn resolve(&self, requested: Option<&str>) -> Result<String, ValidationError> {
        let Some(url) = requested else {
            return self.default.clone().ok_or(ValidationError::RepositoryRequired);
        };
        check_git_url(url)?;
        let scheme = url::Url::parse(url).map_or("ssh".to_owned(), |parsed| parsed.scheme().to_owned());
        if !self.schemes.is_empty() && !self.schemes.contains(&scheme) {
            return Err(ValidationError::InvalidRepositoryUrl(format!(
                "this deployment clones {} repositories only, not {scheme}",
                self.schemes.join(", ")
            )));
        }
        let url = normalise(url);
        if self.allows(&url) { Ok(url) } else { Err(ValidationError::RepositoryNotAllowed(url)) }
    }

    /// The same default with another allowlist (a key's own).
    pub fn with_allowlist(&self, allowlist: Vec<String>) -> Self {
        Self { default: self.default.clone(), allowlist, schemes: self.schemes.clone() }
    }

    fn allows(&self, url: &str) -> bool {
        self.default.as_deref().map(normalise).as_deref() == Some(url)
            || self.allowlist.iter().any(|entry| match entry.strip_suffix('*') {
                Some(prefix) => url.starts_with(&normalise(prefix)),
                None => normalise(entry) == url,
            })
    }
}

/// A URL in its normal form; an scp-like `user@host:path` as it is (its path may not climb).
/// Hosts are lower-cased whatever the scheme (the URL standard does it for `https`, not `ssh`).
fn normalise(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) => {
            if let Some(host) = url.host_str().filter(|h| h.chars().any(|c| c.is_ascii_uppercase())) {
                let lower = host.to_ascii_lowercase();
                let _ = url.set_host(Some(&lower));
            }
            url.to_string()
        }
        Err(_) => raw.to_owned(),
    }
}

/// Accepts `https://`, `ssh://`, `git://`, `file://` URLs and scp-like `user@host:path`; refuses
/// credentials in the URL (they would end up in run records and logs).
fn check_git_url(raw: &str) -> Result<(), ValidationError> {
    let invalid = |why: &str| Err(ValidationError::InvalidRepositoryUrl(why.to_owned()));
    if raw.len() > 2048 || raw.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return invalid("too long or contains whitespace");
    }
    if raw.starts_with('-') {
        return invalid("must not start with '-'");
    }
    if let Ok(url) = url::Url::parse(raw) {
        if !matches!(url.scheme(), "https" | "ssh" | "git" | "file" | "http") {
            return invalid("scheme must be https, ssh, git or file");
        }
        if url.password().is_some() || (url.scheme().starts_with("http") && !url.username().is_empty()) {
            return invalid("credentials must not be embedded in the URL");
        }
        if url.scheme() != "file" && url.host_str().is_none_or(str::is_empty) {
            return invalid("a host is required");
        }
        // An encoded slash or dot segment would climb out of an allowlisted prefix wherever a
        // server decodes it.
        let path = url.path().to_ascii_lowercase();
        if ["%2f", "%5c", "%2e%2e", ".%2e", "%2e."].iter().any(|encoded| path.contains(encoded)) {
            return invalid("the path must not contain encoded slashes or dot segments");
        }
        return Ok(());
    }
    // scp-like syntax: user@host:path, whose path may not climb out of where it points.
    match raw.split_once(':') {
        Some((_, path)) if path.split('/').any(|segment| segment == "..") => invalid("the path must not contain '..'"),
        Some((user_host, path)) if user_host.contains('@') && !path.is_empty() && !user_host.contains('/') => Ok(()),
        _ => invalid("not a URL or user@host:path"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deployment_may_allow_some_schemes_only() {
        let p = RepositoryPolicy::new(None, vec!["*".into()]).with_schemes(vec!["https".into()]);
        assert!(p.resolve(Some("https://github.com/acme/app.git")).is_ok());
        for other in ["file:///srv/app.git", "ssh://git@github.com/acme/app.git", "git@github.com:acme/app.git"] {
            let err = p.resolve(Some(other)).unwrap_err();
            assert!(
                matches!(err, ValidationError::InvalidRepositoryUrl(ref why) if why.contains("https")),
                "{other}: {err}"
            );
        }
        let p = p.with_schemes(vec!["https".into(), "SSH".into()]);
        assert!(p.resolve(Some("git@github.com:acme/app.git")).is_ok(), "scp-like is ssh");
        assert!(
            p.with_allowlist(vec!["*".into()]).resolve(Some("file:///x.git")).is_err(),
            "a key's list keeps the schemes"
        );
    }

    #[test]
    fn default_is_used_when_none_is_requested() {
        let p = RepositoryPolicy::new(Some("https://h/a.git".into()), vec![]);
        assert_eq!(p.resolve(None).unwrap(), "https://h/a.git");
        assert_eq!(RepositoryPolicy::default().resolve(None), Err(ValidationError::RepositoryRequired));
    }

    #[test]
    fn allowlist_matches_exact_entries_and_prefixes() {
        let p = RepositoryPolicy::new(None, vec!["https://h/acme/*".into(), "git@h:solo/one.git".into()]);
        assert!(p.resolve(Some("https://h/acme/x.git")).is_ok());
        assert!(p.resolve(Some("git@h:solo/one.git")).is_ok());
        assert_eq!(p.resolve(Some("git@h:solo/two.git")).unwrap_err().code(), "repository_not_allowed");
        assert_eq!(p.resolve(Some("https://h/other/x.git")).unwrap_err().code(), "repository_not_allowed");
    }

    #[test]
    fn a_url_is_judged_in_its_normal_form() {
        let p = RepositoryPolicy::new(None, vec!["https://github.com/acme/*".into()]);
        for climbing in [
            "https://github.com/acme/../other/x.git",
            "https://github.com/acme/%2e%2e/other/x.git",
            "https://github.com/acme/./../other/x.git",
        ] {
            assert_eq!(p.resolve(Some(climbing)).unwrap_err().code(), "repository_not_allowed", "{climbing}");
        }
        assert_eq!(p.resolve(Some("HTTPS://GitHub.com:443/acme/./x.git")).unwrap(), "https://github.com/acme/x.git");
        assert_eq!(p.resolve(Some("git@github.com:acme/../other.git")).unwrap_err().code(), "invalid_repository_url");
    }

    #[test]
    fn malformed_or_dangerous_urls_are_invalid() {
        let p = RepositoryPolicy::new(None, vec!["*".into()]);
        for bad in [
            "not a url",
            "https://user:token@h/a.git",
            "https://token@h/a.git",
            "ftp://h/a.git",
            "-uhttps://h/a.git",
            "https://",
            "plainword",
        ] {
            assert_eq!(p.resolve(Some(bad)).unwrap_err().code(), "invalid_repository_url", "{bad}");
        }
        for good in ["https://h/a.git", "ssh://git@h/a.git", "git@h:a/b.git", "file:///tmp/repo.git"] {
            assert!(p.resolve(Some(good)).is_ok(), "{good}");
        }
    }
}
