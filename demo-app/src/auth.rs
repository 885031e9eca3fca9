//! Authentication: JWTs (HS256) carrying the user's id, and the extractors
//! that read `Authorization: Token <jwt>`. Passwords are hashed in
//! `password`.

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::db_session;
use crate::error::ApiError;

/// How long a token is valid.
const TOKEN_LIFETIME: chrono::Duration = chrono::Duration::days(30);

/// The keys that sign and check tokens, made from one secret.
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

#[derive(Serialize, Deserialize)]
struct Claims {
    /// The user's id, as a string, as JWT requires.
    sub: String,
    iat: i64,
    exp: i64,
}

impl JwtKeys {
    /// Keys for an HMAC secret.
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        // jsonwebtoken accepts a token for 60 s past its `exp` by default,
        // for clock skew; this server checks tokens it signed itself, with
        // its own clock, so an expired token is refused at once.
        validation.leeway = 0;
        JwtKeys { encoding: EncodingKey::from_secret(secret), decoding: DecodingKey::from_secret(secret), validation }
    }

    /// A signed token for user `user_id`.
    pub fn issue(&self, user_id: i64) -> Result<String, ApiError> {
        let now = chrono::Utc::now();
        let claims = Claims { sub: user_id.to_string(), iat: now.timestamp(), exp: (now + TOKEN_LIFETIME).timestamp() };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).map_err(|error| {
            tracing::error!(%error, "cannot sign a token");
            ApiError::Internal
        })
    }

    /// The user id in a token with a valid signature that has not expired.
    pub fn verify(&self, token: &str) -> Result<i64, ApiError> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .ok()
            .and_then(|data| data.claims.sub.parse().ok())
            .ok_or(ApiError::InvalidToken)
    }
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
    db_session::note_token_user(parts, id);
    Ok(Some(AuthUser { id, token: token.to_owned() }))
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

    #[test]
    fn tokens_round_trip_and_reject_tampering() {
        let keys = JwtKeys::new(b"secret");
        let token = keys.issue(42).unwrap();
        assert_eq!(keys.verify(&token), Ok(42));
        assert_eq!(JwtKeys::new(b"other").verify(&token), Err(ApiError::InvalidToken));
        assert_eq!(keys.verify("not.a.token"), Err(ApiError::InvalidToken));
    }
}
