//! Secrets that tools read by name (an `http` tool's `auth`), resolved when a call is
//! made. The engine knows no keychain: whoever builds it passes a [`SecretResolver`]
//! (the desktop app and the `nexus` command pass one over the OS keychain); without one,
//! secrets come from the environment ([`EnvSecrets`]).
//!
//! A secret's value is never written to a run record, an event or a log: the engine
//! only sends it in the request, and replaces it in a response that echoes it.

/// Where secrets come from.
pub trait SecretResolver: Send + Sync {
    /// The value of the secret `name`, `Ok(None)` when it is not set. May block (a
    /// keychain call): the engine calls it on a blocking thread.
    ///
    /// # Errors
    /// A message when the place the secrets live cannot be read.
    fn resolve(&self, name: &str) -> Result<Option<String>, String>;

    /// How a user sets the secret `name`, for the error of a missing one.
    fn how_to_set(&self, name: &str) -> String {
        format!("set the environment variable {}", env_var(name))
    }
}

/// The environment variable that holds secret `name`: `NEXUS_SECRET_` and the name in
/// upper case, every character other than a letter or digit as `_` (`github-token` →
/// `NEXUS_SECRET_GITHUB_TOKEN`).
pub fn env_var(name: &str) -> String {
    let mut var = String::from("NEXUS_SECRET_");
    var.extend(name.chars().map(|c| {
        if c.is_ascii_alphanumeric() {
            c.to_ascii_uppercase()
        } else {
            '_'
        }
    }));
    var
}

/// Secrets from environment variables ([`env_var`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct EnvSecrets;

impl SecretResolver for EnvSecrets {
    fn resolve(&self, name: &str) -> Result<Option<String>, String> {
        Ok(std::env::var(env_var(name)).ok().filter(|v| !v.is_empty()))
    }
}

/// Replaces every occurrence of `value` in `text` with `[secret NAME]`; `text` itself
/// when it holds none.
pub fn redact(text: &str, name: &str, value: &str) -> Option<String> {
    (!value.is_empty() && text.contains(value))
        .then(|| text.replace(value, &format!("[secret {name}]")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_are_upper_case_with_underscores() {
        assert_eq!(env_var("github-token"), "NEXUS_SECRET_GITHUB_TOKEN");
        assert_eq!(env_var("Api.Key"), "NEXUS_SECRET_API_KEY");
    }

    #[test]
    fn echoed_secrets_are_replaced() {
        assert_eq!(
            redact("token s3cr3t seen", "T", "s3cr3t").as_deref(),
            Some("token [secret T] seen")
        );
        assert_eq!(redact("nothing", "T", "s3cr3t"), None);
    }
}
