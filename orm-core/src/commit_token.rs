//! [`CommitToken`]: where in the primary's write-ahead log a commit ended,
//! so that a later session can read its own writes from a replica.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// A position in the primary's write-ahead log at or after the end of a
/// commit, from [`Session::commit_with_token`](crate::Session::commit_with_token).
///
/// A replica that has replayed its log up to this position holds
/// everything the commit wrote. Hand the token to
/// [`Database::read_session_after`](crate::Database::read_session_after)
/// in a later request (a cookie, a header) and that session reads from a
/// replica only if the replica has replayed past it, and from the primary
/// otherwise: the user who just wrote sees the write, and everyone else
/// still reads from replicas.
///
/// Its text form is PostgreSQL's own for a `pg_lsn` (`16/B374D848`), which
/// is safe in a header and a cookie. Parsing anything else is an
/// [`Error::BadCommitToken`]: a token comes from the client, so a
/// malformed one is the client's error (answer 400, or ignore it and read
/// from the primary).
///
/// ```
/// use orm_core::{CommitToken, ErrorKind};
///
/// let token: CommitToken = "16/B374D848".parse()?;
/// assert_eq!(token.to_string(), "16/B374D848");
/// assert!(token > "16/B374D000".parse()?); // later in the log
///
/// let refused = "16-B374D848".parse::<CommitToken>().unwrap_err();
/// assert_eq!(refused.kind(), ErrorKind::BadCommitToken);
/// # Ok::<(), orm_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CommitToken(u64);

/// The size of a page of PostgreSQL's write-ahead log (`XLOG_BLCKSZ`, as
/// every standard build has it).
const WAL_PAGE: u64 = 8192;

/// The sizes of a log page's header: the long one starts a segment, the
/// short one every other page.
const WAL_PAGE_HEADERS: [u64; 2] = [24, 40];

impl CommitToken {
    /// Whether a replica whose replay position is `replayed` holds
    /// everything up to this token.
    ///
    /// A token is the primary's insert position after the commit. When the
    /// commit's record ended a log page, that position is past the next
    /// page's header, while a replica's replay position is the end of the
    /// last record it applied: the page boundary, until another record is
    /// written. Only a page header lies between the two then, so the
    /// replica holds the commit; without this, a reader with the token
    /// would go to the primary until the next write anywhere.
    pub(crate) fn is_replayed_by(self, replayed: CommitToken) -> bool {
        if replayed >= self {
            return true;
        }
        replayed.0 % WAL_PAGE == 0 && WAL_PAGE_HEADERS.contains(&(self.0 - replayed.0))
    }

    /// The token for a log position as PostgreSQL prints a `pg_lsn`.
    /// `what` names the source in the error.
    pub(crate) fn parse_lsn(text: &str, what: &str) -> Result<Self, Error> {
        let refused = || Error::BadCommitToken(format!("{what} {text:?} is not a log position such as 16/B374D848"));
        let (high, low) = text.split_once('/').ok_or_else(refused)?;
        let half = |part: &str| {
            if part.is_empty() || part.len() > 8 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(refused());
            }
            u32::from_str_radix(part, 16).map_err(|_| refused())
        };
        Ok(CommitToken((u64::from(half(high)?) << 32) | u64::from(half(low)?)))
    }
}

impl fmt::Display for CommitToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl FromStr for CommitToken {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        Self::parse_lsn(text, "commit token")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_at_the_page_boundary_before_a_token_past_the_header_holds_it() {
        let token = |text: &str| text.parse::<CommitToken>().unwrap();
        assert!(token("0/3000148").is_replayed_by(token("0/3000148")));
        assert!(token("0/3000148").is_replayed_by(token("0/3000200")));
        assert!(!token("0/3000148").is_replayed_by(token("0/3000140")));
        // A short page header after a page boundary, a long one after a
        // segment boundary: nothing of the log lies between.
        assert!(token("0/3002018").is_replayed_by(token("0/3002000")));
        assert!(token("1/28").is_replayed_by(token("1/0")));
        // Anything more is a record the replica has not applied.
        assert!(!token("0/3002019").is_replayed_by(token("0/3002000")));
        assert!(!token("0/3002017").is_replayed_by(token("0/3002000")));
        assert!(!token("0/3002118").is_replayed_by(token("0/3002100")));
    }

    #[test]
    fn round_trips_through_text_and_orders_by_position() {
        let token: CommitToken = "0/3000148".parse().unwrap();
        assert_eq!(token, CommitToken(0x0300_0148));
        assert_eq!(token.to_string(), "0/3000148");
        let later: CommitToken = "1/0".parse().unwrap();
        assert!(later > token);
        assert_eq!("FFFFFFFF/FFFFFFFF".parse::<CommitToken>().unwrap(), CommitToken(u64::MAX));
    }

    #[test]
    fn refuses_what_is_not_a_log_position() {
        for bad in ["", "/", "0/", "/1", "1/2/3", "G/1", "+1/1", "100000000/0", "1 /2", "1/-2"] {
            let error = bad.parse::<CommitToken>().unwrap_err();
            assert!(matches!(&error, Error::BadCommitToken(message) if message.contains("commit token")), "{bad}");
        }
    }
}
