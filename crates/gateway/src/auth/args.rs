//! The auth flags of `tandem serve` (and the secret flags `tandem token`
//! shares), and turning them into an [`Auth`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::auth::Auth;
use crate::auth::revocation::{RevocationError, Revocations};
use crate::auth::token::{KeyError, Verifier};

/// `--auth`: whether tokens are required.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// Every WebSocket and API request needs a signed JWT.
    Jwt,
    /// No authentication: anyone who reaches the port may do anything.
    None,
}

/// Where the HS256 secret comes from (`tandem serve` and `tandem token`).
#[derive(Clone, Default, clap::Args)]
pub struct SecretArgs {
    /// HS256 secret (at least 32 bytes). Prefer `--auth-secret-file` or the
    /// env var: a flag is visible to other local users in `ps`.
    #[arg(long, env = "TANDEM_AUTH_SECRET", hide_env_values = true)]
    pub auth_secret: Option<String>,

    /// File holding the HS256 secret (one trailing newline is ignored).
    #[arg(long, env = "TANDEM_AUTH_SECRET_FILE", conflicts_with = "auth_secret")]
    pub auth_secret_file: Option<PathBuf>,
}

impl std::fmt::Debug for SecretArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret (clap and `{:?}` of the config would).
        f.debug_struct("SecretArgs")
            .field(
                "auth_secret",
                &self.auth_secret.as_ref().map(|_| "REDACTED"),
            )
            .field("auth_secret_file", &self.auth_secret_file)
            .finish()
    }
}

impl SecretArgs {
    /// The secret's bytes, if one was given.
    pub fn load(&self) -> Result<Option<Vec<u8>>, AuthSetupError> {
        if let Some(secret) = &self.auth_secret {
            return Ok(Some(secret.as_bytes().to_vec()));
        }
        let Some(path) = &self.auth_secret_file else {
            return Ok(None);
        };
        let mut bytes = read(path)?;
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
            if bytes.last() == Some(&b'\r') {
                bytes.pop();
            }
        }
        Ok(Some(bytes))
    }
}

/// Authentication flags of `tandem serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct AuthArgs {
    /// `jwt`: every WebSocket and API request needs a token (`--auth-secret`
    /// or `--auth-public-key`); `none`: no authentication. Required when
    /// listening on a non-loopback address.
    #[arg(long = "auth", env = "TANDEM_AUTH", value_enum)]
    pub auth: Option<AuthMode>,

    /// The HMAC secret, if tokens are signed with one (see [`SecretArgs`]).
    #[command(flatten)]
    pub secret: SecretArgs,

    /// PEM public key file (EC P-256 → ES256, RSA → RS256, Ed25519 →
    /// EdDSA): tokens are signed elsewhere (your backend, your identity
    /// provider) and only verified here.
    #[arg(
        long,
        env = "TANDEM_AUTH_PUBLIC_KEY",
        conflicts_with_all = ["auth_secret", "auth_secret_file"]
    )]
    pub auth_public_key: Option<PathBuf>,
}

/// Why the auth flags do not make a working configuration.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    /// A non-loopback listen address without an explicit `--auth`.
    #[error(
        "refusing to listen on {0} without authentication: anyone who can reach it could read, \
         overwrite and delete every document.\n  To require tokens: --auth jwt --auth-secret-file FILE \
         (or --auth-public-key KEY.pem); mint them with `tandem token`.\n  To run open anyway: --auth none"
    )]
    OpenOnNetwork(SocketAddr),
    /// `--auth jwt` without a key.
    #[error(
        "--auth jwt needs --auth-secret-file FILE, --auth-secret or TANDEM_AUTH_SECRET (HS256), or --auth-public-key KEY.pem"
    )]
    NoKey,
    /// A key was given but `--auth jwt` was not.
    #[error("an auth key was given but --auth is not jwt: add --auth jwt (or drop the key)")]
    KeyWithoutJwt,
    /// The key is unusable.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A key file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The revocation list could not be loaded.
    #[error(transparent)]
    Revocations(#[from] RevocationError),
}

fn read(path: &Path) -> Result<Vec<u8>, AuthSetupError> {
    std::fs::read(path).map_err(|source| AuthSetupError::Read {
        path: path.to_owned(),
        source,
    })
}

impl AuthArgs {
    /// The [`Auth`] these flags describe for a server on `listen` with its
    /// data in `data_dir` (blocking: reads key files and the denylist).
    ///
    /// Secure by default: without `--auth`, only a loopback address may be
    /// served (open, as `just demo` does).
    pub fn build(&self, listen: SocketAddr, data_dir: &Path) -> Result<Auth, AuthSetupError> {
        let has_key = self.auth_public_key.is_some()
            || self.secret.auth_secret.is_some()
            || self.secret.auth_secret_file.is_some();
        match self.auth {
            None if has_key => Err(AuthSetupError::KeyWithoutJwt),
            None if !listen.ip().is_loopback() => Err(AuthSetupError::OpenOnNetwork(listen)),
            None | Some(AuthMode::None) => Ok(Auth::Off),
            Some(AuthMode::Jwt) => {
                let verifier = match (&self.auth_public_key, self.secret.load()?) {
                    (Some(path), _) => Verifier::public_pem(&read(path)?)?,
                    (None, Some(secret)) => Verifier::hs256(&secret)?,
                    (None, None) => return Err(AuthSetupError::NoKey),
                };
                Ok(Auth::Jwt {
                    verifier: Arc::new(verifier),
                    revocations: Arc::new(Revocations::open(data_dir)?),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(auth: Option<AuthMode>, secret: Option<&str>) -> AuthArgs {
        AuthArgs {
            auth,
            secret: SecretArgs {
                auth_secret: secret.map(str::to_owned),
                auth_secret_file: None,
            },
            auth_public_key: None,
        }
    }

    #[test]
    fn loopback_without_auth_runs_open_and_a_network_address_refuses() {
        let dir = tempfile::tempdir().expect("dir");
        let local: SocketAddr = "127.0.0.1:8080".parse().expect("addr");
        let public: SocketAddr = "0.0.0.0:8080".parse().expect("addr");
        assert!(matches!(
            args(None, None).build(local, dir.path()),
            Ok(Auth::Off)
        ));
        let refused = args(None, None).build(public, dir.path());
        assert!(matches!(refused, Err(AuthSetupError::OpenOnNetwork(_))));
        let open = args(Some(AuthMode::None), None).build(public, dir.path());
        assert!(matches!(open, Ok(Auth::Off)));
    }

    #[test]
    fn jwt_needs_a_key_and_a_key_needs_jwt() {
        let dir = tempfile::tempdir().expect("dir");
        let local: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let no_key = args(Some(AuthMode::Jwt), None).build(local, dir.path());
        assert!(matches!(no_key, Err(AuthSetupError::NoKey)));
        let stray = args(None, Some("0123456789abcdef0123456789abcdef")).build(local, dir.path());
        assert!(matches!(stray, Err(AuthSetupError::KeyWithoutJwt)));
        let jwt = args(
            Some(AuthMode::Jwt),
            Some("0123456789abcdef0123456789abcdef"),
        );
        assert!(jwt.build(local, dir.path()).expect("jwt").is_on());
    }

    #[test]
    fn secret_files_lose_one_trailing_newline() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("secret");
        std::fs::write(&path, "abc\n").expect("write");
        let s = SecretArgs {
            auth_secret: None,
            auth_secret_file: Some(path),
        };
        assert_eq!(s.load().expect("load"), Some(b"abc".to_vec()));
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let shown = format!("{:?}", args(None, Some("hunter2-hunter2")).secret);
        assert!(!shown.contains("hunter2"));
    }
}
