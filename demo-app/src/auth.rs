//! Authentication: JWTs (HS256) carrying the user's id, and the extractors
//! that read `Authorization: Token <jwt>`. Passwords are hashed in
//! `password`.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::db_session;
use crate::error::ApiError;

/// How long a token is valid.
const TOKEN_LIFETIME: chrono::Duration = chrono::Duration::days(30);

/// The keys that sign and check tokens, made from one secret.
pub struct JwtKeys {
    encoding: EncodingKey,
    /// HMAC-SHA256 with the secret's key schedule done once: each token's
    /// check clones it. (`jsonwebtoken::decode` keys a new HMAC for every
    /// token, two SHA-256 blocks, and parses the header and the claims
    /// twice each: 3.5% of a request's instructions under the load mix.)
    verifier: Hmac<Sha256>,
    /// The tokens checked so far, so that a client's next requests with the
    /// same token skip the check.
    verified: VerifiedTokens,
}

#[derive(Serialize, Deserialize)]
struct Claims {
    /// The user's id, as a string, as JWT requires.
    sub: String,
    iat: i64,
    exp: i64,
    /// Never issued; a token with one is refused, as `jsonwebtoken`'s
    /// default validation refuses an audience when none is expected.
    #[serde(default, skip_serializing)]
    aud: Option<IgnoredAny>,
}

/// A token's header: only its algorithm is read.
#[derive(Deserialize)]
struct TokenHeader {
    alg: String,
}

impl JwtKeys {
    /// Keys for an HMAC secret.
    pub fn new(secret: &[u8]) -> Self {
        // HMAC takes a key of any length: the error cannot happen.
        let verifier = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
        JwtKeys { encoding: EncodingKey::from_secret(secret), verifier, verified: VerifiedTokens::default() }
    }

    /// A signed token for user `user_id`.
    pub fn issue(&self, user_id: i64) -> Result<String, ApiError> {
        let now = chrono::Utc::now();
        let claims = Claims {
            sub: user_id.to_string(),
            iat: now.timestamp(),
            exp: (now + TOKEN_LIFETIME).timestamp(),
            aud: None,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).map_err(|error| {
            tracing::error!(%error, "cannot sign a token");
            ApiError::Internal
        })
    }

    /// The user id in a token with a valid signature that has not expired.
    pub fn verify(&self, token: &str) -> Result<i64, ApiError> {
        self.verify_at(token, chrono::Utc::now().timestamp()).ok_or(ApiError::InvalidToken)
    }

    /// What `jsonwebtoken::decode` with HS256, `exp` and `sub` required and
    /// no leeway accepted, at time `now` (seconds since the epoch): a
    /// header naming HS256, a valid signature over header and claims, the
    /// claims of [`Claims`] with an `exp` not before `now` (this server
    /// checks tokens it signed itself, with its own clock, so an expired
    /// token is refused at once), and no audience.
    ///
    /// Only the `exp` comparison depends on the time, so a token that
    /// passed [`check`](Self::check) once is remembered with its user and
    /// `exp`, and its later uses compare `exp` with `now` alone: the same
    /// answers, without the SHA-256 over the token (10,000 instructions)
    /// and the parsing, which were 4% of a request's instructions under
    /// the load mix, where every request carries one of a few tokens.
    fn verify_at(&self, token: &str, now: i64) -> Option<i64> {
        let key = self.verified.key(token);
        let (user, exp) = if let Some(known) = self.verified.get(key, token) {
            known
        } else {
            let checked = self.check(token)?;
            self.verified.insert(key, token, checked);
            checked
        };
        (exp >= now).then_some(user)
    }

    /// The user id and `exp` of a token whose header, signature and claims
    /// are valid (see [`verify_at`](Self::verify_at)), whatever its `exp`.
    fn check(&self, token: &str) -> Option<(i64, i64)> {
        let (message, signature) = token.rsplit_once('.')?;
        let (header, claims) = message.split_once('.')?;
        let header: TokenHeader = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).ok()?).ok()?;
        if header.alg != "HS256" {
            return None;
        }
        let mut mac = self.verifier.clone();
        mac.update(message.as_bytes());
        // In constant time.
        mac.verify_slice(&URL_SAFE_NO_PAD.decode(signature).ok()?).ok()?;
        let claims = URL_SAFE_NO_PAD.decode(claims).ok()?;
        // An object: serde would also take an array for the struct, which
        // jsonwebtoken's validation refuses.
        if !claims.trim_ascii_start().starts_with(b"{") {
            return None;
        }
        let claims: Claims = serde_json::from_slice(&claims).ok()?;
        if claims.aud.is_some() {
            return None;
        }
        Some((claims.sub.parse().ok()?, claims.exp))
    }
}

/// At most this many tokens are remembered; past it, all are forgotten at
/// once (each is then checked again on its next use). Only tokens signed
/// with the server's secret get in, so the set is the tokens clients hold,
/// and 4,096 of them take about 1 MiB.
const VERIFIED_CAPACITY: usize = 4096;

/// Tokens that passed [`JwtKeys::check`], with its result, shared by all
/// requests. Keyed by a hash of the token, keyed at random per process so
/// that no client can make tokens collide; a hit is confirmed by comparing
/// the whole token, in a time that does not depend on where it differs.
#[derive(Default)]
struct VerifiedTokens {
    hasher: RandomState,
    /// Keyed by `hasher`'s hash of the token, which needs no second `SipHash`.
    entries: Mutex<HashMap<u64, VerifiedToken, foldhash::fast::RandomState>>,
}

struct VerifiedToken {
    token: Box<str>,
    user: i64,
    exp: i64,
}

impl VerifiedTokens {
    fn key(&self, token: &str) -> u64 {
        self.hasher.hash_one(token)
    }

    /// The user and `exp` of `token` if it is remembered. (A poisoned lock
    /// is a miss: the token is checked again.)
    fn get(&self, key: u64, token: &str) -> Option<(i64, i64)> {
        let entries = self.entries.lock().ok()?;
        let known = entries.get(&key)?;
        same_bytes(known.token.as_bytes(), token.as_bytes()).then_some((known.user, known.exp))
    }

    fn insert(&self, key: u64, token: &str, (user, exp): (i64, i64)) {
        let Ok(mut entries) = self.entries.lock() else { return };
        if entries.len() >= VERIFIED_CAPACITY {
            entries.clear();
        }
        entries.insert(key, VerifiedToken { token: token.into(), user, exp });
    }
}

/// Whether `a` and `b` are equal, in a time that depends on their lengths
/// only, as the signature's own comparison is.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |differ, (x, y)| differ | (x ^ y)) == 0
}

/// The authenticated user of a request: `Authorization: Token <jwt>` (or
/// `Bearer <jwt>`) is required. Checking the token needs no database; that
/// its user still exists is checked by the session middleware, after the
/// handler and in its transaction (see `db_session`).
#[derive(Debug, Clone)]
pub struct AuthUser {
    /// The user's id, from the token.
    pub id: i64,
    /// The token as sent, returned in user responses.
    pub token: String,
    /// Where to tell the session middleware that the user exists.
    token_user: Option<db_session::TokenUser>,
}

impl AuthUser {
    /// Tells the session middleware that this user exists, which a
    /// statement the handler sent anyway found: its own lookup after the
    /// handler is then not sent.
    pub fn found_in_database(&self) {
        if let Some(token_user) = &self.token_user {
            token_user.found();
        }
    }
}

/// The user of a request where authentication is optional. A token that is
/// sent must still be valid, and name a user that exists.
#[derive(Debug, Clone)]
pub struct MaybeAuthUser(pub Option<AuthUser>);

impl MaybeAuthUser {
    /// The user's id, if authenticated.
    pub fn id(&self) -> Option<i64> {
        self.0.as_ref().map(|user| user.id)
    }

    /// [`AuthUser::found_in_database`], if authenticated.
    pub fn found_in_database(&self) {
        if let Some(user) = &self.0 {
            user.found_in_database();
        }
    }
}

fn authenticate(parts: &Parts, keys: &JwtKeys) -> Result<Option<AuthUser>, ApiError> {
    let Some(header) = parts.headers.get(AUTHORIZATION) else { return Ok(None) };
    let header = header.to_str().map_err(|_| ApiError::InvalidToken)?;
    let token = header
        .strip_prefix("Token ")
        .or_else(|| header.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or(ApiError::InvalidToken)?;
    let id = keys.verify(token)?;
    let token_user = db_session::note_token_user(parts, id);
    Ok(Some(AuthUser { id, token: token.to_owned(), token_user }))
}

impl<S> FromRequestParts<S> for AuthUser
where
    Arc<JwtKeys>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        authenticate(parts, &Arc::<JwtKeys>::from_ref(state))?.ok_or(ApiError::MissingToken)
    }
}

impl<S> FromRequestParts<S> for MaybeAuthUser
where
    Arc<JwtKeys>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        authenticate(parts, &Arc::<JwtKeys>::from_ref(state)).map(MaybeAuthUser)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use jsonwebtoken::{DecodingKey, Validation};
    use serde_json::{json, Value};

    /// The check this module made before: `jsonwebtoken::decode`.
    fn jsonwebtoken_verify(secret: &[u8], token: &str) -> Option<i64> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = 0;
        let claims = jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(secret), &validation).ok()?;
        claims.claims.sub.parse().ok()
    }

    fn sign(algorithm: Algorithm, secret: &[u8], claims: &Value) -> String {
        jsonwebtoken::encode(&Header::new(algorithm), claims, &EncodingKey::from_secret(secret)).unwrap()
    }

    #[test]
    fn accepts_and_refuses_what_jsonwebtoken_did() {
        let keys = JwtKeys::new(b"secret");
        let now = chrono::Utc::now().timestamp();
        let later = now + 1000;
        let cases = [
            sign(Algorithm::HS256, b"secret", &json!({"sub": "7", "iat": now, "exp": later})),
            sign(Algorithm::HS256, b"secret", &json!({"sub": "7", "iat": now, "exp": now - 10})),
            sign(Algorithm::HS256, b"other", &json!({"sub": "7", "iat": now, "exp": later})),
            sign(Algorithm::HS384, b"secret", &json!({"sub": "7", "iat": now, "exp": later})),
            sign(Algorithm::HS256, b"secret", &json!({"sub": "7", "iat": now})),
            sign(Algorithm::HS256, b"secret", &json!({"iat": now, "exp": later})),
            sign(Algorithm::HS256, b"secret", &json!({"sub": "7", "exp": later})),
            sign(Algorithm::HS256, b"secret", &json!({"sub": "x", "iat": now, "exp": later})),
            sign(Algorithm::HS256, b"secret", &json!({"sub": 7, "iat": now, "exp": later})),
            sign(Algorithm::HS256, b"secret", &json!({"sub": "7", "iat": now, "exp": -5})),
            sign(Algorithm::HS256, b"secret", &json!({"sub": "7", "iat": now, "exp": 1.5e12})),
            sign(Algorithm::HS256, b"secret", &json!({"sub": "7", "iat": now, "exp": later, "aud": "x"})),
            sign(Algorithm::HS256, b"secret", &json!({"sub": "7", "iat": now, "exp": later, "aud": null})),
            sign(Algorithm::HS256, b"secret", &json!({"sub": "7", "iat": now, "exp": later, "nbf": later})),
            sign(Algorithm::HS256, b"secret", &json!({"sub": "7", "iat": now, "exp": later, "iss": "x"})),
            sign(Algorithm::HS256, b"secret", &json!([7, now, later])),
            sign(Algorithm::HS256, b"secret", &json!(["7", now, later])),
            "not.a.token".to_owned(),
            String::new(),
        ];
        let mut accepted = 0;
        for token in &cases {
            let expected = jsonwebtoken_verify(b"secret", token);
            assert_eq!(keys.verify(token).ok(), expected, "{token}");
            // Changed in the signature, the claims or the header: refused.
            for at in [token.len().saturating_sub(2), token.len() / 2, 3] {
                if let Some(byte) = token.as_bytes().get(at) {
                    let mut tampered = token.clone().into_bytes();
                    tampered[at] = if *byte == b'A' { b'B' } else { b'A' };
                    let tampered = String::from_utf8(tampered).unwrap();
                    assert_eq!(keys.verify(&tampered).ok(), jsonwebtoken_verify(b"secret", &tampered), "{tampered}");
                }
            }
            accepted += usize::from(expected.is_some());
        }
        // The valid token, and those with claims nothing checks.
        assert_eq!(accepted, 4);
    }

    #[test]
    fn a_token_expires_after_its_exp_second() {
        let keys = JwtKeys::new(b"secret");
        let token = sign(Algorithm::HS256, b"secret", &json!({"sub": "7", "iat": 100, "exp": 200}));
        assert_eq!(keys.verify_at(&token, 200), Some(7));
        // Remembered: still expires.
        assert_eq!(keys.verify_at(&token, 201), None);
        assert_eq!(keys.verify_at(&token, 200), Some(7));
        // Expired at its first use, then valid at an earlier time (a clock
        // set back): the same answers.
        let keys = JwtKeys::new(b"secret");
        assert_eq!(keys.verify_at(&token, 201), None);
        assert_eq!(keys.verify_at(&token, 200), Some(7));
    }

    #[test]
    fn remembered_tokens_get_the_same_answers() {
        let keys = JwtKeys::new(b"secret");
        let later = chrono::Utc::now().timestamp() + 1000;
        let token = sign(Algorithm::HS256, b"secret", &json!({"sub": "7", "iat": 0, "exp": later}));
        for _ in 0..3 {
            assert_eq!(keys.verify(&token), Ok(7));
        }
        // The same token with one byte changed anywhere, or cut short, or
        // longer: refused, also once the token is remembered.
        for at in 0..token.len() {
            let mut tampered = token.clone().into_bytes();
            tampered[at] ^= 1;
            let tampered = String::from_utf8(tampered).unwrap();
            assert_eq!(keys.verify(&tampered).ok(), jsonwebtoken_verify(b"secret", &tampered), "{tampered}");
        }
        assert_eq!(keys.verify(&token[..token.len() - 1]), Err(ApiError::InvalidToken));
        assert_eq!(keys.verify(&format!("{token}A")), Err(ApiError::InvalidToken));
        // A token checked by other keys is not theirs to remember.
        assert_eq!(JwtKeys::new(b"other").verify(&token), Err(ApiError::InvalidToken));
        // Past the capacity, the set is emptied and tokens still verify.
        for user in 0..=VERIFIED_CAPACITY {
            let user = i64::try_from(user).unwrap();
            let token = keys.issue(user).unwrap();
            assert_eq!(keys.verify(&token), Ok(user));
        }
        assert!(keys.verified.entries.lock().unwrap().len() <= VERIFIED_CAPACITY);
        assert_eq!(keys.verify(&token), Ok(7));
    }

    #[test]
    fn tokens_round_trip_and_reject_tampering() {
        let keys = JwtKeys::new(b"secret");
        let token = keys.issue(42).unwrap();
        assert_eq!(keys.verify(&token), Ok(42));
        assert_eq!(JwtKeys::new(b"other").verify(&token), Err(ApiError::InvalidToken));
        assert_eq!(keys.verify("not.a.token"), Err(ApiError::InvalidToken));
    }
}
