//! Keeping secrets out of frames and logs.

/// Replaces secret values in CLI output. Built once per run: the needles (each secret, and its
/// JSON-escaped form, since lines are JSON) are worked out once, not per line.
pub struct Redactor {
    needles: Vec<Vec<u8>>,
}

/// What a secret is replaced with.
pub const REDACTED: &[u8] = b"[REDACTED]";

impl Redactor {
    /// Masks secrets, not words: a value shorter than 8 bytes, or made of letters only (`offline`,
    /// `password`), is too likely to be an ordinary word of the output to redact.
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a String>) -> Self {
        let mut needles: Vec<Vec<u8>> = Vec::new();
        for secret in secrets.into_iter().filter(|s| is_secret_like(s)) {
            let escaped = serde_json::to_string(secret).unwrap_or_default().trim_matches('"').to_owned();
            for needle in [secret.clone(), escaped] {
                if !needles.iter().any(|n| n == needle.as_bytes()) {
                    needles.push(needle.into_bytes());
                }
            }
        }
        Self { needles }
    }

    /// The line with every secret replaced.
    pub fn bytes(&self, line: Vec<u8>) -> Vec<u8> {
        let mut line = line;
        for needle in &self.needles {
            if line.windows(needle.len()).any(|w| w == needle.as_slice()) {
                let mut out = Vec::with_capacity(line.len());
                let mut i = 0;
                while i < line.len() {
                    if line[i..].starts_with(needle) {
                        out.extend_from_slice(REDACTED);
                        i += needle.len();
                    } else {
                        out.push(line[i]);
                        i += 1;
                    }
                }
                line = out;
            }
        }
        line
    }

    /// The text with every secret replaced.
    pub fn text(&self, text: &str) -> String {
        String::from_utf8_lossy(&self.bytes(text.as_bytes().to_vec())).into_owned()
    }
}

/// Long enough, and not a plain word.
fn is_secret_like(value: &str) -> bool {
    value.len() >= 8 && !value.chars().all(|c| c.is_alphabetic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_short_values_are_not_redacted() {
        let secrets =
            ["offline".to_owned(), "password".to_owned(), "abc123".to_owned(), "sk-ant-0123456789".to_owned()];
        let r = Redactor::new(&secrets);
        assert_eq!(r.text("the offline model read the password abc123"), "the offline model read the password abc123");
        assert_eq!(r.text("key sk-ant-0123456789!"), "key [REDACTED]!");
    }

    #[test]
    fn json_escaped_secrets_are_redacted_too() {
        let secrets = vec!["pa\"ss\\word".to_owned()];
        let line = serde_json::json!({"content": format!("KEY={}", secrets[0])}).to_string().into_bytes();
        let out = String::from_utf8(Redactor::new(&secrets).bytes(line)).unwrap();
        assert_eq!(out, r#"{"content":"KEY=[REDACTED]"}"#);
    }

    #[test]
    fn secrets_are_redacted_wherever_they_appear() {
        let secrets = vec!["s3cr3t-value".to_owned(), "abc".to_owned()];
        let line = br#"{"content":"TOKEN=s3cr3t-value and s3cr3t-value; abc"}"#.to_vec();
        let out = String::from_utf8(Redactor::new(&secrets).bytes(line)).unwrap();
        assert_eq!(out, r#"{"content":"TOKEN=[REDACTED] and [REDACTED]; abc"}"#);
        assert!(serde_json::from_str::<serde_json::Value>(&out).is_ok(), "still JSON");
    }
}
