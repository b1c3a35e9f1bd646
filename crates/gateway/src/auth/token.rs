//! Verifying (and, for `tandem token` and tests, signing) JWTs with the
//! `jsonwebtoken` crate: only the configured algorithm is accepted, `exp` is
//! required, `nbf` is checked, signatures are compared in constant time by
//! the crate.

use std::time::Duration;

pub use jsonwebtoken::Algorithm;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation};

use crate::auth::claims::Claims;

/// Clock skew tolerated on `exp` and `nbf`.
pub const CLOCK_LEEWAY: Duration = Duration::from_secs(5);

/// Shortest HS256 secret accepted (RFC 7518 §3.2: at least the hash size).
pub const MIN_SECRET_BYTES: usize = 32;

/// Why a key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The HS256 secret is too short to be safe.
    #[error(
        "the auth secret is {0} bytes; at least {MIN_SECRET_BYTES} are needed (e.g. `openssl rand -base64 48`)"
    )]
    ShortSecret(usize),
    /// The PEM is not an EC P-256, RSA or Ed25519 public key.
    #[error(
        "--auth-public-key: not a PEM EC P-256 (ES256), RSA (RS256) or Ed25519 (EdDSA) public key"
    )]
    UnsupportedPem,
    /// Signing failed (a bad private key).
    #[error("signing the token failed: {0}")]
    Sign(String),
}

/// Why a token was not accepted. The text is sent to the client (in the
/// y-protocols permission-denied message or the HTTP body), so it names the
/// problem without echoing the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// No token in `?token=` or `Authorization: Bearer`.
    #[error("no token: pass ?token=... or Authorization: Bearer ...")]
    Missing,
    /// Not a JWT, bad signature, wrong algorithm, missing or bad claims.
    #[error("invalid token: {0}")]
    Invalid(&'static str),
    /// Past its `exp`.
    #[error("token expired")]
    Expired,
    /// Before its `nbf`.
    #[error("token not yet valid")]
    NotYetValid,
}

/// Checks tokens against one key and one algorithm.
pub struct Verifier {
    /// The public key or HS256 secret.
    key: DecodingKey,
    /// Exactly one algorithm, `exp` + `sub` required, `nbf` checked.
    validation: Validation,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Verifier({:?})", self.algorithm())
    }
}

impl Verifier {
    /// HS256 with a shared secret.
    pub fn hs256(secret: &[u8]) -> Result<Verifier, KeyError> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(KeyError::ShortSecret(secret.len()));
        }
        Ok(Self::new(
            DecodingKey::from_secret(secret),
            Algorithm::HS256,
        ))
    }

    /// A PEM public key; its type picks the only accepted algorithm: EC
    /// P-256 → ES256, Ed25519 → EdDSA, RSA → RS256.
    pub fn public_pem(pem: &[u8]) -> Result<Verifier, KeyError> {
        if let Ok(key) = DecodingKey::from_ec_pem(pem) {
            return Ok(Self::new(key, Algorithm::ES256));
        }
        if let Ok(key) = DecodingKey::from_ed_pem(pem) {
            return Ok(Self::new(key, Algorithm::EdDSA));
        }
        if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            return Ok(Self::new(key, Algorithm::RS256));
        }
        Err(KeyError::UnsupportedPem)
    }

    fn new(key: DecodingKey, alg: Algorithm) -> Verifier {
        let mut validation = Validation::new(alg);
        validation.leeway = CLOCK_LEEWAY.as_secs();
        validation.validate_nbf = true;
        // No audience is configured, so an `aud` claim is neither required nor checked.
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Verifier { key, validation }
    }

    /// The one algorithm accepted.
    pub fn algorithm(&self) -> Algorithm {
        self.validation.algorithms[0]
    }

    /// The claims of `token` if it is signed by this key with this
    /// algorithm and currently valid.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        match jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation) {
            Ok(data) => Ok(data.claims),
            Err(e) => Err(match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                ErrorKind::InvalidSignature => TokenError::Invalid("bad signature"),
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                    TokenError::Invalid("algorithm not accepted")
                }
                ErrorKind::MissingRequiredClaim(_) => {
                    TokenError::Invalid("missing claim (exp and sub are required)")
                }
                ErrorKind::Json(_) => TokenError::Invalid("bad claims (sub, docs, mode, exp)"),
                _ => TokenError::Invalid("not a valid JWT"),
            }),
        }
    }
}

/// Signs `claims` as an HS256 JWT with `secret` (what `tandem token` does).
pub fn mint_hs256(secret: &[u8], claims: &Claims) -> Result<String, KeyError> {
    if secret.len() < MIN_SECRET_BYTES {
        return Err(KeyError::ShortSecret(secret.len()));
    }
    sign(Algorithm::HS256, &EncodingKey::from_secret(secret), claims)
}

/// Signs `claims` with a PEM private key (ES256, RS256 or EdDSA, as `alg` says).
pub fn mint_pem(alg: Algorithm, private_pem: &[u8], claims: &Claims) -> Result<String, KeyError> {
    let key = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(private_pem),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(private_pem),
        Algorithm::RS256 => EncodingKey::from_rsa_pem(private_pem),
        _ => {
            return Err(KeyError::Sign(format!(
                "{alg:?} needs a secret, not a PEM key"
            )));
        }
    }
    .map_err(|e| KeyError::Sign(e.to_string()))?;
    sign(alg, &key, claims)
}

fn sign(alg: Algorithm, key: &EncodingKey, claims: &Claims) -> Result<String, KeyError> {
    jsonwebtoken::encode(&Header::new(alg), claims, key).map_err(|e| KeyError::Sign(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Mode;
    use crate::auth::claims::{Scope, unix_now};

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn claims(exp: u64) -> Claims {
        Claims {
            sub: "ana".into(),
            docs: Scope::everything(),
            mode: Mode::Write,
            exp,
            nbf: None,
            iat: None,
            jti: None,
        }
    }

    #[test]
    fn a_signed_token_verifies_and_keeps_its_claims() {
        let c = claims(unix_now() + 60);
        let token = mint_hs256(SECRET, &c).expect("mint");
        assert_eq!(Verifier::hs256(SECRET).expect("key").verify(&token), Ok(c));
    }

    #[test]
    fn another_secret_is_a_bad_signature() {
        let token = mint_hs256(SECRET, &claims(unix_now() + 60)).expect("mint");
        let other = Verifier::hs256(b"another secret of at least 32 bytes!").expect("key");
        assert_eq!(
            other.verify(&token),
            Err(TokenError::Invalid("bad signature"))
        );
    }

    #[test]
    fn expired_and_not_yet_valid_are_refused() {
        let v = Verifier::hs256(SECRET).expect("key");
        let old = mint_hs256(SECRET, &claims(unix_now() - 60)).expect("mint");
        assert_eq!(v.verify(&old), Err(TokenError::Expired));
        let mut early = claims(unix_now() + 600);
        early.nbf = Some(unix_now() + 300);
        let early = mint_hs256(SECRET, &early).expect("mint");
        assert_eq!(v.verify(&early), Err(TokenError::NotYetValid));
    }

    #[test]
    fn alg_none_is_refused() {
        // {"alg":"none","typ":"JWT"} . claims . (no signature)
        let header = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0";
        let body = "eyJzdWIiOiJhbmEiLCJkb2NzIjpbIioiXSwibW9kZSI6ImFkbWluIiwiZXhwIjo0MTAyNDQ0ODAwfQ";
        let v = Verifier::hs256(SECRET).expect("key");
        assert!(v.verify(&format!("{header}.{body}.")).is_err());
    }

    fn fixture(name: &str) -> Vec<u8> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/auth/");
        std::fs::read(format!("{path}{name}")).expect("fixture key")
    }

    #[test]
    fn each_public_key_accepts_only_its_own_algorithm() {
        let keys = [
            (Algorithm::ES256, "es256"),
            (Algorithm::EdDSA, "ed25519"),
            (Algorithm::RS256, "rs256"),
        ];
        let c = claims(unix_now() + 60);
        for (alg, name) in keys {
            let v = Verifier::public_pem(&fixture(&format!("{name}-public.pem"))).expect("key");
            assert_eq!(v.algorithm(), alg, "{name}");
            let own = mint_pem(alg, &fixture(&format!("{name}-private.pem")), &c).expect("mint");
            assert_eq!(v.verify(&own), Ok(c.clone()), "{name}");
            for (other, other_name) in keys.iter().filter(|(a, _)| *a != alg) {
                let pem = fixture(&format!("{other_name}-private.pem"));
                let foreign = mint_pem(*other, &pem, &c).expect("mint");
                assert!(v.verify(&foreign).is_err(), "{name} accepted {other_name}");
            }
            // Algorithm confusion: HS256 "signed" with the public key as the secret.
            let confused = mint_hs256(&fixture(&format!("{name}-public.pem")), &c).expect("mint");
            assert_eq!(
                v.verify(&confused),
                Err(TokenError::Invalid("algorithm not accepted"))
            );
        }
    }

    #[test]
    fn a_private_key_or_garbage_is_not_a_public_key() {
        assert!(Verifier::public_pem(b"not a pem").is_err());
        assert!(Verifier::public_pem(&fixture("es256-private.pem")).is_err());
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(matches!(
            Verifier::hs256(b"short"),
            Err(KeyError::ShortSecret(5))
        ));
    }

    #[test]
    fn garbage_is_invalid_not_a_panic() {
        let v = Verifier::hs256(SECRET).expect("key");
        for t in ["", ".", "..", "a.b.c", "eyJ.eyJ.x", "\u{0}"] {
            assert!(matches!(v.verify(t), Err(TokenError::Invalid(_))), "{t:?}");
        }
    }
}
