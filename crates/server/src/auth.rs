//! Authentication: every command RPC needs a bearer JWT signed with Ed25519 (`EdDSA`, the only
//! algorithm accepted), with `exp`, `aud` and `iss` checked. The claims name the tenant, the
//! acting person or service (`sub`) and its roles. The tenant comes only from the token.
//!
//! For the quick start, `serve` creates a key pair in `DATA_DIR/auth/` on first start and
//! `dialogue-ledger token` signs tokens with it; production passes its own public key.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ledger_domain::{Actor, Role, TenantId};
use serde::{Deserialize, Serialize};
use tonic::{Request, Status};

/// The `iss` and `aud` of tokens unless configured.
pub const DEFAULT_ISSUER: &str = "dialogue-ledger";
pub const DEFAULT_AUDIENCE: &str = "dialogue-ledger";

/// Clock skew tolerated on `exp`, in seconds.
const LEEWAY_SECS: u64 = 30;

/// A token's claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// The acting person's id (role member) or the service's name.
    pub sub: String,
    pub tenant: String,
    pub roles: Vec<String>,
    pub iat: u64,
    pub exp: u64,
}

/// Who is calling, established from a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub tenant: TenantId,
    pub actor: Actor,
}

impl Principal {
    /// The principal the authenticating interceptor put into `request`.
    pub fn of<T>(request: &Request<T>) -> Result<Self, Status> {
        request
            .extensions()
            .get::<Self>()
            .cloned()
            .ok_or_else(|| Status::unauthenticated("missing bearer token"))
    }
}

/// The quick start's key pair in the data directory.
#[derive(Debug, Clone)]
pub struct LocalKeys {
    dir: PathBuf,
}

impl LocalKeys {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            dir: data_dir.join("auth"),
        }
    }

    pub fn signing_key_path(&self) -> PathBuf {
        self.dir.join("token-signing-key.pem")
    }

    pub fn verifying_key_path(&self) -> PathBuf {
        self.dir.join("token-verifying-key.pem")
    }

    /// Creates the key pair unless it exists; returns the public key (PEM).
    pub fn ensure(&self) -> anyhow::Result<String> {
        let public = self.verifying_key_path();
        if !public.exists() {
            let key = load_or_create_signing_key(&self.signing_key_path())?;
            std::fs::write(
                &public,
                key.verifying_key().to_public_key_pem(LineEnding::LF)?,
            )?;
        }
        std::fs::read_to_string(&public)
            .with_context(|| format!("cannot read {}", public.display()))
    }

    /// Signs a token with the local signing key.
    pub fn issue(&self, claims: &Claims) -> anyhow::Result<String> {
        let path = self.signing_key_path();
        let pem = std::fs::read(&path).with_context(|| {
            format!(
                "cannot read {} (start `serve` once to create it)",
                path.display()
            )
        })?;
        let key = EncodingKey::from_ed_pem(&pem)
            .context("the signing key is not an Ed25519 PKCS#8 PEM")?;
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::EdDSA),
            claims,
            &key,
        )?)
    }
}

/// Reads an Ed25519 signing key (PKCS#8 PEM) from `path`, creating it (readable by its owner
/// only) if it does not exist.
pub fn load_or_create_signing_key(path: &Path) -> anyhow::Result<SigningKey> {
    use ed25519_dalek::pkcs8::DecodePrivateKey;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if !path.exists() {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let key = SigningKey::from_bytes(&rand::random());
        let pem = key
            .to_pkcs8_pem(LineEnding::LF)
            .context("cannot encode a signing key")?;
        let mut file = std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(path)?;
        file.write_all(pem.as_bytes())?;
        tracing::info!(path = %path.display(), "created a signing key");
    }
    let pem =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    SigningKey::from_pkcs8_pem(&pem)
        .with_context(|| format!("{} is not an Ed25519 PKCS#8 PEM key", path.display()))
}

/// Verifies bearer tokens (the server's [`Gate`](crate::limits::Gate) puts the [`Principal`]
/// into each request).
#[derive(Clone)]
pub struct Authenticator {
    key: Arc<DecodingKey>,
    validation: Arc<Validation>,
    /// Tokens already verified, with their principal and expiry: a service sends the same token
    /// with every request, and checking its signature each time cost a tenth of the server's
    /// time under load.
    verified: Arc<Mutex<HashMap<String, (Principal, u64)>>>,
}

/// Verified tokens remembered at most; the memory is cleared when full.
const VERIFIED_TOKENS: usize = 10_000;

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Accepts tokens signed by the Ed25519 key whose public half is `public_key_pem`, issued by
    /// `issuer` for `audience`.
    pub fn new(public_key_pem: &str, issuer: &str, audience: &str) -> anyhow::Result<Self> {
        let key = DecodingKey::from_ed_pem(public_key_pem.as_bytes())
            .context("the token verifying key is not an Ed25519 public key PEM")?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = LEEWAY_SECS;
        Ok(Self {
            key: Arc::new(key),
            validation: Arc::new(validation),
            verified: Arc::default(),
        })
    }

    /// The principal of a request's bearer token, or UNAUTHENTICATED saying why not.
    pub fn authenticate<T>(&self, request: &Request<T>) -> Result<Principal, Status> {
        let header = request.metadata().get("authorization").ok_or_else(|| {
            Status::unauthenticated("missing bearer token (metadata `authorization: Bearer <jwt>`)")
        })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or_else(|| {
                Status::unauthenticated("the authorization header is not `Bearer <jwt>`")
            })?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if let Some((principal, exp)) = self.verified.lock().unwrap().get(token)
            && now <= *exp
        {
            return Ok(principal.clone());
        }
        let claims = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| Status::unauthenticated(format!("invalid token: {}", describe(e.kind()))))?
            .claims;
        let principal = Self::principal(&claims)?;
        let mut verified = self.verified.lock().unwrap();
        if verified.len() >= VERIFIED_TOKENS {
            verified.clear();
        }
        // Remembered only until its expiry proper, without the leeway the first check allows.
        verified.insert(token.to_owned(), (principal.clone(), claims.exp));
        Ok(principal)
    }

    /// The principal that verified `claims` name.
    fn principal(claims: &Claims) -> Result<Principal, Status> {
        let tenant = TenantId::parse(&claims.tenant)
            .ok_or_else(|| Status::unauthenticated("invalid token: malformed tenant"))?;
        let roles = (claims.roles.iter())
            .map(|role| {
                Role::parse(role)
                    .ok_or_else(|| Status::unauthenticated("invalid token: unknown role"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if claims.sub.is_empty() {
            return Err(Status::unauthenticated("invalid token: empty subject"));
        }
        Ok(Principal {
            tenant,
            actor: Actor {
                subject: claims.sub.clone(),
                roles,
            },
        })
    }
}

fn describe(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::ExpiredSignature => "expired",
        ErrorKind::InvalidAudience => "wrong audience",
        ErrorKind::InvalidIssuer => "wrong issuer",
        ErrorKind::InvalidSignature => "bad signature",
        ErrorKind::InvalidAlgorithm => "algorithm not accepted (EdDSA only)",
        ErrorKind::MissingRequiredClaim(_) => "a required claim is missing",
        ErrorKind::ImmatureSignature => "not valid yet",
        _ => "malformed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp_offset: i64) -> Claims {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        Claims {
            iss: DEFAULT_ISSUER.into(),
            aud: DEFAULT_AUDIENCE.into(),
            sub: "mia".into(),
            tenant: "acme".into(),
            roles: vec!["member".into()],
            iat: now,
            exp: now.saturating_add_signed(exp_offset),
        }
    }

    fn request(token: &str) -> Request<()> {
        let mut request = Request::new(());
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        request
    }

    fn rejection(auth: &Authenticator, token: &str) -> String {
        auth.authenticate(&request(token))
            .unwrap_err()
            .message()
            .to_owned()
    }

    #[test]
    fn tokens_are_verified_and_their_claims_become_the_principal() {
        let dir = tempfile::tempdir().unwrap();
        let keys = LocalKeys::new(dir.path());
        let public = keys.ensure().unwrap();
        assert_eq!(keys.ensure().unwrap(), public, "the key pair was replaced");
        let auth = Authenticator::new(&public, DEFAULT_ISSUER, DEFAULT_AUDIENCE).unwrap();

        let principal = auth
            .authenticate(&request(&keys.issue(&claims(3600)).unwrap()))
            .unwrap();
        assert_eq!(principal.tenant.as_str(), "acme");
        assert_eq!(
            principal.actor,
            Actor {
                subject: "mia".into(),
                roles: vec![Role::Member]
            }
        );

        assert!(rejection(&auth, &keys.issue(&claims(-3600)).unwrap()).contains("expired"));
        let other_audience = Claims {
            aud: "elsewhere".into(),
            ..claims(3600)
        };
        assert!(rejection(&auth, &keys.issue(&other_audience).unwrap()).contains("audience"));
        let other_issuer = Claims {
            iss: "elsewhere".into(),
            ..claims(3600)
        };
        assert!(rejection(&auth, &keys.issue(&other_issuer).unwrap()).contains("issuer"));
        let bad_role = Claims {
            roles: vec!["root".into()],
            ..claims(3600)
        };
        assert!(rejection(&auth, &keys.issue(&bad_role).unwrap()).contains("role"));

        // Signed by someone else's key.
        let stranger = LocalKeys::new(&dir.path().join("stranger"));
        stranger.ensure().unwrap();
        assert!(rejection(&auth, &stranger.issue(&claims(3600)).unwrap()).contains("signature"));
        // An HMAC token (algorithm confusion) is refused.
        let hs = jsonwebtoken::encode(
            &Header::default(),
            &claims(3600),
            &EncodingKey::from_secret(public.as_bytes()),
        )
        .unwrap();
        assert!(rejection(&auth, &hs).contains("algorithm"));
        assert!(
            auth.authenticate(&Request::new(()))
                .unwrap_err()
                .message()
                .contains("missing")
        );
    }

    #[test]
    fn a_verified_token_is_remembered_only_until_it_expires() {
        let dir = tempfile::tempdir().unwrap();
        let keys = LocalKeys::new(dir.path());
        let auth =
            Authenticator::new(&keys.ensure().unwrap(), DEFAULT_ISSUER, DEFAULT_AUDIENCE).unwrap();
        let token = keys.issue(&claims(3600)).unwrap();
        let first = auth.authenticate(&request(&token)).unwrap();
        assert_eq!(auth.authenticate(&request(&token)).unwrap(), first);
        assert_eq!(auth.verified.lock().unwrap().len(), 1);

        // A token within the leeway after its expiry passes the first check, but its memory
        // ends at the expiry: asked again, it is verified afresh.
        let lapsing = keys.issue(&claims(-10)).unwrap();
        assert!(auth.authenticate(&request(&lapsing)).is_ok());
        let past = (auth.verified.lock().unwrap().get(&lapsing).unwrap().1) < now_secs();
        assert!(past, "remembered beyond its expiry");
        // Remembered tokens do not let a changed token through.
        let mut tampered = token.clone();
        tampered.pop();
        assert!(
            rejection(&auth, &tampered).contains("signature")
                || rejection(&auth, &tampered).contains("malformed")
        );
    }

    fn now_secs() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }
}
