//! Where the signing credentials come from, first found wins: the module's
//! config, the environment, the shared credentials file, the instance profile
//! (IMDSv2). Loaded at the first request and kept while they are valid.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use stoke_api::Root;

use crate::env::Env;
use crate::imds;
use crate::profile;

/// Keys given in a module's config (the chain's first source).
#[derive(Clone, PartialEq)]
pub struct StaticCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

#[derive(Clone, PartialEq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
    /// Instance-profile credentials expire; the others do not.
    pub expires: Option<SystemTime>,
}

/// Never prints the secret or the token.
impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("session_token", &self.session_token.as_ref().map(|_| "…"))
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

/// Why there are no credentials, and whether waiting could help (an instance
/// profile can appear a little after boot; a broken credentials file cannot
/// fix itself).
#[derive(Debug, PartialEq)]
pub struct CredentialsError {
    pub transient: bool,
    pub message: String,
}

impl CredentialsError {
    fn permanent(message: String) -> Self {
        CredentialsError {
            transient: false,
            message,
        }
    }
}

/// Credentials closer than this to their expiry are fetched again.
const REFRESH_BEFORE: Duration = Duration::from_secs(300);

pub struct Chain {
    config: Option<Credentials>,
    env: Env,
    /// The instance's root: the credentials file is read under it (a `--root` sandbox must not
    /// read the host's).
    root: Root,
    /// The metadata endpoint this boot uses (the datasource's choice), if known.
    imds_endpoint: Option<String>,
    cache: Mutex<Option<Credentials>>,
}

impl Chain {
    pub fn new(config: Option<StaticCredentials>, env: Env, root: Root) -> Chain {
        Chain {
            config: config.map(|c| Credentials {
                access_key_id: c.access_key_id,
                secret_access_key: c.secret_access_key,
                session_token: c.session_token,
                expires: None,
            }),
            env,
            root,
            imds_endpoint: None,
            cache: Mutex::new(None),
        }
    }

    /// Instance-profile credentials from this endpoint (unless the environment names one).
    pub fn with_imds(mut self, endpoint: Option<String>) -> Chain {
        self.imds_endpoint = endpoint;
        self
    }

    /// The credentials to sign the next request with.
    pub async fn get(&self) -> Result<Credentials, CredentialsError> {
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(c) = cached.filter(fresh) {
            return Ok(c);
        }
        let (c, source) = self.load().await?;
        tracing::debug!(source = %source, "aws: credentials loaded");
        *self.cache.lock().unwrap_or_else(PoisonError::into_inner) = Some(c.clone());
        Ok(c)
    }

    async fn load(&self) -> Result<(Credentials, String), CredentialsError> {
        if let Some(c) = &self.config {
            return Ok((c.clone(), "the module's config".into()));
        }
        if let Some(c) = from_env(&self.env)? {
            return Ok((c, "the environment".into()));
        }
        let (file, profile) = file_and_profile(&self.env);
        if let Some(c) = from_file(&self.env, &self.root)? {
            return Ok((c, format!("profile `{profile}` of {}", show(&file))));
        }
        let tried = format!(
            "none in the config, the environment (AWS_ACCESS_KEY_ID) or profile `{profile}` of {}",
            show(&file)
        );
        if self.env.is_true("AWS_EC2_METADATA_DISABLED") {
            return Err(CredentialsError::permanent(format!(
                "no credentials: {tried}, and the instance profile is off (AWS_EC2_METADATA_DISABLED)"
            )));
        }
        let endpoint = imds::endpoint(&self.env, self.imds_endpoint.as_deref());
        match imds::credentials(&endpoint, imds::BUDGET).await {
            Ok(c) => Ok((c, format!("the instance profile (IMDS at {endpoint})"))),
            Err(e) => Err(CredentialsError {
                transient: true,
                message: format!(
                    "no credentials: {tried}; instance profile (IMDS at {endpoint}): {e}"
                ),
            }),
        }
    }
}

fn fresh(c: &Credentials) -> bool {
    c.expires
        .is_none_or(|t| t > SystemTime::now() + REFRESH_BEFORE)
}

fn show(p: &Option<PathBuf>) -> String {
    p.as_ref().map_or_else(
        || "~/.aws/credentials (HOME is not set)".into(),
        |p| p.display().to_string(),
    )
}

/// `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`).
fn from_env(env: &Env) -> Result<Option<Credentials>, CredentialsError> {
    match (
        env.get("AWS_ACCESS_KEY_ID"),
        env.get("AWS_SECRET_ACCESS_KEY"),
    ) {
        (Some(id), Some(secret)) => Ok(Some(Credentials {
            access_key_id: id.into(),
            secret_access_key: secret.into(),
            session_token: env.get("AWS_SESSION_TOKEN").map(str::to_string),
            expires: None,
        })),
        (None, None) => Ok(None),
        (Some(_), None) => Err(CredentialsError::permanent(
            "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not".into(),
        )),
        (None, Some(_)) => Err(CredentialsError::permanent(
            "AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not".into(),
        )),
    }
}

/// The credentials file (`AWS_SHARED_CREDENTIALS_FILE`, else
/// `$HOME/.aws/credentials`) and profile (`AWS_PROFILE`, else `default`).
fn file_and_profile(env: &Env) -> (Option<PathBuf>, String) {
    let file = env
        .get("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .or_else(|| {
            env.get("HOME")
                .map(|h| PathBuf::from(h).join(".aws/credentials"))
        });
    let profile = env.get("AWS_PROFILE").unwrap_or("default").to_string();
    (file, profile)
}

/// No file, or no `default` profile in it: `None` (the chain goes on). What
/// was named explicitly (a file, a profile) and is not there, or a profile
/// without keys, is an error: falling through to another identity would hide it.
fn from_file(env: &Env, root: &Root) -> Result<Option<Credentials>, CredentialsError> {
    let (file, profile) = file_and_profile(env);
    let Some(file) = file else {
        return Ok(None);
    };
    let explicit_file = env.get("AWS_SHARED_CREDENTIALS_FILE").is_some();
    let explicit_profile = env.get("AWS_PROFILE").is_some();
    // Resolved inside the root; absent reads as NotFound, as before.
    let read = root.fs().and_then(|rd| {
        rd.read_string(std::path::Path::new(&file), 1024 * 1024)?
            .ok_or_else(|| std::io::ErrorKind::NotFound.into())
    });
    let text = match read {
        Ok(t) => t,
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound && !explicit_file && !explicit_profile =>
        {
            return Ok(None);
        }
        Err(e) => {
            return Err(CredentialsError::permanent(format!(
                "reading the credentials file {}: {e}",
                file.display()
            )));
        }
    };
    match profile::credentials(&text, &profile) {
        Ok(Some(c)) => Ok(Some(c)),
        Ok(None) if !explicit_profile => Ok(None),
        Ok(None) => Err(CredentialsError::permanent(format!(
            "AWS_PROFILE is `{profile}` but {} has no such profile",
            file.display()
        ))),
        Err(e) => Err(CredentialsError::permanent(format!(
            "credentials file {}: {e}",
            file.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(env: &[(&str, &str)]) -> Chain {
        Chain::new(None, Env::of(env), Root::new("/"))
    }

    #[tokio::test]
    async fn config_then_environment_then_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("credentials");
        std::fs::write(
            &file,
            "[default]\naws_access_key_id = FILEKEY\naws_secret_access_key = filesecret\n\
             [other]\naws_access_key_id = OTHERKEY\naws_secret_access_key = othersecret\n",
        )
        .unwrap();
        let f = file.to_str().unwrap();
        let env = [
            ("AWS_ACCESS_KEY_ID", "ENVKEY"),
            ("AWS_SECRET_ACCESS_KEY", "envsecret"),
            ("AWS_SESSION_TOKEN", "envtoken"),
            ("AWS_SHARED_CREDENTIALS_FILE", f),
        ];
        let from_config = Chain::new(
            Some(StaticCredentials {
                access_key_id: "CFGKEY".into(),
                secret_access_key: "cfgsecret".into(),
                session_token: None,
            }),
            Env::of(&env),
            Root::new("/"),
        );
        assert_eq!(from_config.get().await.unwrap().access_key_id, "CFGKEY");
        let c = chain(&env).get().await.unwrap();
        assert_eq!(
            (c.access_key_id.as_str(), c.session_token.as_deref()),
            ("ENVKEY", Some("envtoken"))
        );
        let c = chain(&[("AWS_SHARED_CREDENTIALS_FILE", f)])
            .get()
            .await
            .unwrap();
        assert_eq!(c.access_key_id, "FILEKEY");
        let c = chain(&[("AWS_SHARED_CREDENTIALS_FILE", f), ("AWS_PROFILE", "other")])
            .get()
            .await
            .unwrap();
        assert_eq!(c.access_key_id, "OTHERKEY");
        // $HOME/.aws/credentials when the variable is unset.
        std::fs::create_dir(dir.path().join(".aws")).unwrap();
        std::fs::copy(&file, dir.path().join(".aws/credentials")).unwrap();
        let c = chain(&[("HOME", dir.path().to_str().unwrap())])
            .get()
            .await
            .unwrap();
        assert_eq!(c.access_key_id, "FILEKEY");
        // Under a root (`stoke --root`), the file is the root's, never the host's.
        let under_root = Chain::new(None, Env::of(&[("HOME", "/")]), Root::new(dir.path()));
        assert_eq!(
            under_root.get().await.unwrap().access_key_id,
            "FILEKEY",
            "read from <root>/.aws/credentials"
        );
    }

    #[tokio::test]
    async fn what_was_named_and_is_wrong_fails_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("credentials");
        std::fs::write(&file, "[default]\naws_access_key_id = ONLYKEY\n").unwrap();
        let f = file.to_str().unwrap();
        let missing = dir.path().join("nope");
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("AWS_ACCESS_KEY_ID", "K")],
                "AWS_SECRET_ACCESS_KEY is not",
            ),
            (
                &[("AWS_SHARED_CREDENTIALS_FILE", f)],
                "no `aws_secret_access_key`",
            ),
            (
                &[("AWS_SHARED_CREDENTIALS_FILE", f), ("AWS_PROFILE", "ci")],
                "no such profile",
            ),
            (
                &[("AWS_SHARED_CREDENTIALS_FILE", missing.to_str().unwrap())],
                "reading the credentials file",
            ),
        ];
        for (env, want) in cases {
            let e = chain(env).get().await.unwrap_err();
            assert!(!e.transient, "{e:?}");
            assert!(e.message.contains(want), "{env:?}: {}", e.message);
        }
    }

    #[tokio::test]
    async fn falls_through_to_the_instance_profile_and_says_what_it_tried() {
        let dir = tempfile::tempdir().unwrap();
        // Nothing listens on this port any more: IMDS fails fast, retryably.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let endpoint = format!("http://127.0.0.1:{port}");
        let e = chain(&[
            ("HOME", dir.path().to_str().unwrap()),
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", &endpoint),
        ])
        .get()
        .await
        .unwrap_err();
        assert!(e.transient, "{e:?}");
        assert!(e.message.contains("profile `default` of"), "{}", e.message);
        assert!(
            e.message.contains(&format!("IMDS at {endpoint}")),
            "{}",
            e.message
        );

        let e = chain(&[("AWS_EC2_METADATA_DISABLED", "true")])
            .get()
            .await
            .unwrap_err();
        assert!(
            !e.transient && e.message.contains("AWS_EC2_METADATA_DISABLED"),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn instance_profile_credentials_are_fetched_once_while_valid() {
        use crate::imds::tests::{TOKEN, creds_json, imds};
        let dir = tempfile::tempdir().unwrap();
        let role = "/latest/meta-data/iam/security-credentials/r";
        let (url, seen) = imds(vec![
            ("PUT", "/latest/api/token", 200, TOKEN.into()),
            (
                "GET",
                "/latest/meta-data/iam/security-credentials/",
                200,
                "r".into(),
            ),
            (
                "GET",
                role,
                200,
                creds_json("Success").replace("2026-11-25T16:00:00Z", "2999-01-01T00:00:00Z"),
            ),
        ])
        .await;
        let c = chain(&[
            ("HOME", dir.path().to_str().unwrap()),
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", &url),
        ]);
        let first = c.get().await.unwrap();
        assert_eq!(first.session_token.as_deref(), Some("sess"));
        assert_eq!(c.get().await.unwrap(), first);
        assert_eq!(seen.lock().unwrap().len(), 3, "{:?}", seen.lock().unwrap());

        // The endpoint the boot's datasource chose, without any environment.
        let c = chain(&[("HOME", dir.path().to_str().unwrap())]).with_imds(Some(url.clone()));
        assert_eq!(c.get().await.unwrap(), first);
        assert_eq!(seen.lock().unwrap().len(), 6, "{:?}", seen.lock().unwrap());
    }

    #[test]
    fn expiring_credentials_are_not_reused() {
        let mut c = Credentials {
            access_key_id: "A".into(),
            secret_access_key: "s".into(),
            session_token: Some("t".into()),
            expires: None,
        };
        assert!(fresh(&c));
        c.expires = Some(SystemTime::now() + Duration::from_secs(60));
        assert!(!fresh(&c));
        c.expires = Some(SystemTime::now() + Duration::from_secs(3600));
        assert!(fresh(&c));
        c.secret_access_key = "supersecret".into();
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("supersecret") && !shown.contains("\"t\""),
            "{shown}"
        );
    }
}
