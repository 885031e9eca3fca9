//! The JSON shapes of responses, and building them from what `loaders`
//! loads: a page of articles comes with its authors, tags, favorite counts
//! and the viewer's favorites and follows from one statement; a page of
//! comments with its authors, then the viewer's follows of them. A page
//! only shows what it loads, so its rows are plain values the session does
//! not track (an untracked query, `Query::untracked`): no identity map, no
//! instance per row.

use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};
use orm_core::{Session, Tracked};
use serde::Serialize;

use crate::entities::{Article, Comment, User};
use crate::loaders::{self, ArticleRow};

/// A time in a response, in RealWorld's format: ISO 8601 in UTC with
/// milliseconds (`2024-05-06T07:08:09.123Z`), the bytes of chrono's
/// `to_rfc3339_opts(SecondsFormat::Millis, true)`. Written straight into
/// the response: formatted through chrono into a `String` it was 3.2% of a
/// request's instructions under the load mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp(pub DateTime<Utc>);

impl Timestamp {
    /// The time as chrono's RFC 3339 with milliseconds and `Z` writes it,
    /// for the years 0 to 9999 (four digits, no sign) and no leap second;
    /// `None` for the others, which [`chrono_text`](Self::chrono_text)
    /// formats.
    pub fn rfc3339_millis(&self) -> Option<[u8; 24]> {
        rfc3339_millis(self.0)
    }

    /// The time formatted by chrono, for any time.
    pub fn chrono_text(&self) -> String {
        self.0.to_rfc3339_opts(SecondsFormat::Millis, true)
    }
}

fn rfc3339_millis(time: DateTime<Utc>) -> Option<[u8; 24]> {
    // UTC as it is stored: `date_naive` and `time` would each first add the
    // (zero) offset to it, to get the local date and time.
    let utc = time.naive_utc();
    let date = utc.date();
    let year = u32::try_from(date.year()).ok().filter(|&year| year <= 9999)?;
    let clock = utc.time();
    // chrono shows a leap second as second 60.
    let nanos = clock.nanosecond();
    if nanos >= 1_000_000_000 {
        return None;
    }
    let mut out = *b"0000-00-00T00:00:00.000Z";
    put_digits(&mut out[0..4], year);
    put_digits(&mut out[5..7], date.month());
    put_digits(&mut out[8..10], date.day());
    put_digits(&mut out[11..13], clock.hour());
    put_digits(&mut out[14..16], clock.minute());
    put_digits(&mut out[17..19], clock.second());
    // Truncated, as chrono does.
    put_digits(&mut out[20..23], nanos / 1_000_000);
    Some(out)
}

/// Writes `value`'s last `out.len()` decimal digits into `out`, zero-padded.
fn put_digits(out: &mut [u8], mut value: u32) {
    for digit in out.iter_mut().rev() {
        // A digit: below 10, so it fits.
        *digit = b'0' + u8::try_from(value % 10).unwrap_or(0);
        value /= 10;
    }
}

/// The logged-in user, with a token.
#[derive(Serialize, Debug)]
pub struct UserView {
    /// E-mail address.
    pub email: String,
    /// A JWT for `Authorization: Token ...`.
    pub token: String,
    /// User name.
    pub username: String,
    /// Biography, or null.
    pub bio: Option<String>,
    /// Image URL, or null.
    pub image: Option<String>,
}

impl UserView {
    /// The view of `user`, with `token`.
    pub fn new(user: &User, token: String) -> Self {
        UserView {
            email: user.email.clone(),
            token,
            username: user.username.clone(),
            bio: user.bio.clone(),
            image: user.image.clone(),
        }
    }
}

/// A user as others see them.
#[derive(Debug, Clone)]
pub struct ProfileView {
    /// The user.
    pub user: User,
    /// Whether the requesting user follows them (false when anonymous).
    pub following: bool,
}

/// An article with its tags, favorites and author.
#[derive(Debug)]
pub struct ArticleView {
    /// The article.
    pub article: Article,
    /// Its tags, in alphabetical order.
    pub tags: Vec<String>,
    /// Whether the text is shown (single articles) or left out (lists).
    pub body: Body,
    /// Whether the requesting user favorited it.
    pub favorited: bool,
    /// How many users favorited it.
    pub favorites_count: i64,
    /// Its author.
    pub author: ProfileView,
}

/// A comment with its author.
#[derive(Debug)]
pub struct CommentView {
    /// The comment, tracked: a new comment's view is written after the
    /// commit that gives it its id.
    pub comment: Tracked<Comment>,
    /// Its author.
    pub author: ProfileView,
}

/// Whether article views carry the body (single articles do, lists don't).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Body {
    /// Include `body`.
    Included,
    /// Leave `body` out.
    Omitted,
}

/// An article with its author, as a join returns them
/// ([`Query::join`](orm_core::Query::join)): the page and its authors in one
/// statement.
pub type WithAuthor<T> = (Tracked<T>, Tracked<User>);

/// Views of a page's rows, in order: the page's statement brought each
/// article's author and [`Facts`](loaders::Facts) with it, so this reads no
/// more.
pub fn articles(rows: Vec<ArticleRow>, body: Body) -> Vec<ArticleView> {
    rows.into_iter().map(|row| article(row, body)).collect()
}

/// The view of one article's row.
pub fn article(
    (article, author, (favorites_count, favorited, following, tags)): ArticleRow,
    body: Body,
) -> ArticleView {
    ArticleView { article, tags, body, favorited, favorites_count, author: ProfileView { user: author, following } }
}

/// Views of `comments`, in order, as seen by `viewer`: the viewer's follows
/// and own row, one statement each at most, in one round trip. The authors
/// came with the comments.
pub async fn comments(
    session: &mut Session,
    comments: Vec<WithAuthor<Comment>>,
    viewer: Option<i64>,
) -> orm_core::Result<Vec<CommentView>> {
    if comments.is_empty() {
        return Ok(Vec::new());
    }
    let author_ids: Vec<i64> = comments.iter().map(|(_, author)| author.read().id).collect();
    let (following, _) =
        session.load_together((loaders::followed(viewer, &author_ids), loaders::viewer(viewer))).await?;
    Ok(comments
        .into_iter()
        .zip(&author_ids)
        .map(|((comment, author), author_id)| CommentView {
            comment,
            author: ProfileView { user: author.read().clone(), following: following.contains(author_id) },
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json_writer::WriteJson;
    use chrono::TimeZone;

    fn json(time: DateTime<Utc>) -> String {
        let mut out = Vec::new();
        Timestamp(time).write_json(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn timestamps_have_milliseconds_and_z() {
        let time = Utc.with_ymd_and_hms(2024, 5, 6, 7, 8, 9).unwrap();
        assert_eq!(json(time), r#""2024-05-06T07:08:09.000Z""#);
    }

    #[test]
    fn timestamps_are_the_bytes_chrono_writes() {
        let at = |year, month, day, hour, minute, second, nanos| {
            let time = Utc.with_ymd_and_hms(year, month, day, hour, minute, second).unwrap();
            time.with_nanosecond(nanos).unwrap()
        };
        let mut times = vec![
            at(2024, 5, 6, 7, 8, 9, 0),
            at(2024, 12, 31, 23, 59, 59, 999_999_999),
            at(2024, 2, 29, 0, 0, 0, 1_000),
            at(1970, 1, 1, 0, 0, 0, 0),
            at(1999, 12, 31, 23, 59, 59, 999_000_000),
            at(2000, 1, 1, 0, 0, 0, 123_456_789),
            at(0, 1, 1, 0, 0, 0, 5_000_000),
            at(9, 10, 11, 12, 13, 14, 99_999_999),
            at(999, 6, 30, 1, 2, 3, 100_000_000),
            at(9999, 12, 31, 23, 59, 59, 999_999_000),
            // Outside the four-digit years: chrono's own format.
            at(10000, 1, 1, 0, 0, 0, 0),
            at(-1, 1, 1, 0, 0, 0, 0),
            at(-44, 3, 15, 12, 0, 0, 0),
            // A leap second, which chrono shows as second 60.
            at(2016, 12, 31, 23, 59, 59, 1_500_000_000),
            DateTime::<Utc>::MIN_UTC,
            DateTime::<Utc>::MAX_UTC,
        ];
        // Every microsecond-ish step through a day's edges, as PostgreSQL
        // stores times to the microsecond.
        let start = at(2023, 12, 31, 23, 59, 58, 0);
        times.extend((0..5000).map(|step| start + chrono::Duration::microseconds(step * 997)));
        for time in times {
            let expected = serde_json::to_string(&time.to_rfc3339_opts(SecondsFormat::Millis, true)).unwrap();
            assert_eq!(json(time), expected, "{time:?}");
        }
    }
}
