//! Secrets from Secrets Manager. A function's environment names a secret (`ANTHROPIC_API_KEY_SECRET_ARN`,
//! `STREAM_TOKEN_SECRET_ARN`, `GIT_CREDENTIALS_SECRET_ARN`) rather than holding its value; each is read once, when the function's container starts, and
//! kept in memory as if it had been the variable `<NAME>`.

use std::collections::BTreeMap;

use aws_config::SdkConfig;
use aws_sdk_secretsmanager::error::DisplayErrorContext;

use runner_core::{Error, Result};

/// The variables a deployment keeps in Secrets Manager, each with the variable naming its secret.
const SECRET_VARIABLES: &[(&str, &str)] = &[
    ("ANTHROPIC_API_KEY", "ANTHROPIC_API_KEY_SECRET_ARN"),
    ("STREAM_TOKEN_SECRET", "STREAM_TOKEN_SECRET_ARN"),
    ("GIT_CREDENTIALS", "GIT_CREDENTIALS_SECRET_ARN"),
];

/// `vars` with each variable naming a secret replaced by the secret's value. A secret that
/// cannot be read fails the start: a function must not run without its key.
pub async fn resolve(sdk: &SdkConfig, mut vars: BTreeMap<String, String>) -> Result<BTreeMap<String, String>> {
    let mut client = None;
    for (name, reference) in SECRET_VARIABLES {
        let Some(id) = vars.remove(*reference).filter(|id| !id.trim().is_empty()) else { continue };
        let client = client.get_or_insert_with(|| aws_sdk_secretsmanager::Client::new(sdk));
        let output = client.get_secret_value().secret_id(&id).send().await.map_err(|e| {
            Error::Config(format!("reading {name} from Secrets Manager ({id}): {}", DisplayErrorContext(e)))
        })?;
        let value =
            output.secret_string().ok_or_else(|| Error::Config(format!("{name}: secret {id} holds no string")))?;
        vars.insert((*name).to_owned(), value.to_owned());
    }
    Ok(vars)
}
