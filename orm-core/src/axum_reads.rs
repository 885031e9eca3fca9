//! How a web request carries a [`CommitToken`] (for
//! [`SessionLayer::route_reads`](crate::axum::SessionLayer::route_reads)):
//! read from the request's header or cookie, written to the response's.

use ::axum::http::header::{COOKIE, SET_COOKIE};
use ::axum::http::{HeaderMap, HeaderValue, Method};

use crate::commit_token::CommitToken;
use crate::database::Database;
use crate::session::Session;

/// Which session a request gets.
#[derive(Clone, Copy)]
pub(crate) enum Route {
    /// An ordinary session, on the primary.
    Primary,
    /// A read session, which must see the commit of the token if any.
    Read(Option<CommitToken>),
}

impl Route {
    pub(crate) fn open(self, db: &Database) -> Session {
        match self {
            Route::Primary => db.session(),
            Route::Read(Some(token)) => db.read_session_after(token),
            Route::Read(None) => db.read_session(),
        }
    }
}

/// The header that carries a commit token both ways, for API clients.
pub const COMMIT_TOKEN_HEADER: &str = "x-commit-token";

/// The cookie that carries a commit token, for browsers, which send it
/// back by themselves.
pub const COMMIT_TOKEN_COOKIE: &str = "orm_commit_token";

/// How long the cookie lasts: far longer than a replica that is still in
/// service (see [`DatabaseConfig::max_replica_lag`](crate::DatabaseConfig::max_replica_lag))
/// takes to replay the commit, after which the token changes nothing.
const COOKIE_MAX_AGE_SECS: u32 = 3600;

/// Whether a request with this method only reads, by HTTP's rules (safe
/// methods): its session may be a read session.
pub(crate) fn only_reads(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The token the request carries, in its header or else its cookie. A
/// malformed one is ignored (the request reads as one without): it came
/// from the client.
pub(crate) fn token_of(headers: &HeaderMap) -> Option<CommitToken> {
    let header = headers.get(COMMIT_TOKEN_HEADER).and_then(|value| value.to_str().ok()).map(str::to_owned);
    let cookie = || {
        headers.get_all(COOKIE).iter().filter_map(|value| value.to_str().ok()).find_map(|cookies| {
            cookies.split(';').find_map(|cookie| {
                let (name, value) = cookie.trim().split_once('=')?;
                (name == COMMIT_TOKEN_COOKIE).then(|| value.to_owned())
            })
        })
    };
    let text = header.or_else(cookie)?;
    match text.parse() {
        Ok(token) => Some(token),
        Err(error) => {
            tracing::debug!(%error, "ignored a malformed commit token");
            None
        }
    }
}

/// Hands the client the later of `token`, its request's commit, and
/// `held`, the token the request came with: in the header, and in a cookie
/// the browser sends back on the next requests. Two writes of one client
/// may answer out of order; the later answer must not take the client
/// back to before the other write.
pub(crate) fn give(headers: &mut HeaderMap, token: CommitToken, held: Option<CommitToken>) {
    let token = held.map_or(token, |held| held.max(token));
    let cookie =
        format!("{COMMIT_TOKEN_COOKIE}={token}; Path=/; Max-Age={COOKIE_MAX_AGE_SECS}; HttpOnly; SameSite=Lax");
    // The token's text is hexadecimal digits and a slash: always a valid value.
    if let (Ok(header), Ok(cookie)) = (HeaderValue::from_str(&token.to_string()), HeaderValue::from_str(&cookie)) {
        headers.insert(COMMIT_TOKEN_HEADER, header);
        headers.append(SET_COOKIE, cookie);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_header_first_then_the_cookie_and_ignores_garbage() {
        let mut headers = HeaderMap::new();
        assert_eq!(token_of(&headers), None);
        headers.insert(COOKIE, HeaderValue::from_static("a=b; orm_commit_token=0/2A; c=d"));
        assert_eq!(token_of(&headers), Some("0/2A".parse().unwrap()));
        headers.insert(COMMIT_TOKEN_HEADER, HeaderValue::from_static("1/0"));
        assert_eq!(token_of(&headers), Some("1/0".parse().unwrap()));
        headers.insert(COMMIT_TOKEN_HEADER, HeaderValue::from_static("not a token"));
        assert_eq!(token_of(&headers), None);
    }

    #[test]
    fn gives_the_token_in_a_header_and_a_cookie() {
        let mut headers = HeaderMap::new();
        give(&mut headers, "0/2A".parse().unwrap(), Some("0/1F".parse().unwrap()));
        assert_eq!(headers[COMMIT_TOKEN_HEADER], "0/2A");
        let cookie = headers[SET_COOKIE].to_str().unwrap();
        assert!(cookie.starts_with("orm_commit_token=0/2A; Path=/;"), "{cookie}");
        let mut next = HeaderMap::new();
        next.insert(COOKIE, HeaderValue::from_str(cookie.split(';').next().unwrap()).unwrap());
        assert_eq!(token_of(&next), Some("0/2A".parse().unwrap()));
    }

    #[test]
    fn never_gives_a_token_older_than_the_one_the_request_came_with() {
        let mut headers = HeaderMap::new();
        give(&mut headers, "0/2A".parse().unwrap(), Some("1/0".parse().unwrap()));
        assert_eq!(headers[COMMIT_TOKEN_HEADER], "1/0");
        assert!(headers[SET_COOKIE].to_str().unwrap().starts_with("orm_commit_token=1/0;"));
    }
}
