//! The views' JSON written by hand: the same bytes as `serde_json` wrote for
//! the `Serialize` derives the views had when they held copies of the rows'
//! strings, for the responses that carry articles, comments and profiles.
//!
//! `serde_json` scans every key and value byte by byte for characters to
//! escape and writes each in several small writes: a page of 20 articles
//! cost 101,000 instructions to serialize, 5,000 an article, most of it
//! escaping constant keys. Here keys are constant bytes, and a string is
//! copied whole unless it holds a character JSON must escape, straight from
//! the row the view holds.

use axum::body::Bytes;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use orm_core::axum::AfterCommit;

use crate::views::{ArticleView, Body, CommentView, ProfileView, Timestamp};

/// The buffer a response is written into at the start: a page of 20
/// articles is about 9 KiB.
const INITIAL_CAPACITY: usize = 16 * 1024;

/// A value that writes itself as JSON, byte for byte as `serde_json` writes
/// its `Serialize` form.
pub trait WriteJson {
    /// Appends the JSON of `self` to `out`.
    fn write_json(&self, out: &mut Vec<u8>);
}

/// A response whose body is `T` written as JSON (`Content-Type:
/// application/json`).
pub struct JsonView<T>(pub T);

impl<T: WriteJson> IntoResponse for JsonView<T> {
    fn into_response(self) -> Response {
        ([(CONTENT_TYPE, HeaderValue::from_static("application/json"))], Bytes::from(to_json(&self.0))).into_response()
    }
}

impl<T: WriteJson + Send + 'static> JsonView<T> {
    /// The response with `status`, its JSON written once the request's
    /// session has committed: for a view of rows the commit inserts, whose
    /// generated keys it shows without a flush (a round trip) of its own.
    pub fn after_commit(self, status: StatusCode) -> AfterCommit<impl FnOnce() -> Vec<u8> + Send + 'static> {
        AfterCommit::new(status, HeaderValue::from_static("application/json"), move || to_json(&self.0))
    }
}

fn to_json(view: &impl WriteJson) -> Vec<u8> {
    let mut body = Vec::with_capacity(INITIAL_CAPACITY);
    view.write_json(&mut body);
    body
}

/// `text` as a JSON string, escaped as `serde_json` escapes it: `"` and `\`
/// with a backslash, the control characters below U+0020 as `\b`, `\t`,
/// `\n`, `\f`, `\r` or `\u00XX`, everything else as it is.
pub fn write_str(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    // Nearly every string has nothing to escape: found so eight bytes at a
    // time, and copied whole. (A match per byte, below, took about five
    // instructions a byte, and a vectorized pass over the bytes still
    // handled the short strings most fields are one byte at a time.)
    if !any_needs_escape(bytes) {
        out.reserve(bytes.len() + 2);
        out.push(b'"');
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    out.push(b'"');
    let mut start = 0;
    for (at, &byte) in bytes.iter().enumerate() {
        let escape: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            0x0c => b"\\f",
            b'\r' => b"\\r",
            0x00..=0x1f => {
                out.extend_from_slice(&bytes[start..at]);
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(byte >> 4)]);
                out.push(HEX[usize::from(byte & 0xf)]);
                start = at + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..at]);
        out.extend_from_slice(escape);
        start = at + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Whether JSON needs `byte` escaped: `"`, `\` and the control characters.
fn needs_escape(byte: u8) -> bool {
    byte < 0x20 || byte == b'"' || byte == b'\\'
}

/// Whether any byte of `bytes` needs escaping ([`needs_escape`]), read as
/// 64-bit words: each word whole, then the last eight bytes (overlapping
/// the words already read), or, for fewer than eight, byte by byte.
fn any_needs_escape(bytes: &[u8]) -> bool {
    let Some(last) = bytes.len().checked_sub(8) else {
        return bytes.iter().any(|&byte| needs_escape(byte));
    };
    bytes.chunks_exact(8).chain(bytes.get(last..)).any(|chunk| {
        // Eight bytes each, so the conversion cannot fail; were it to,
        // `true` sends the string to the byte-by-byte path, always right.
        <[u8; 8]>::try_from(chunk).map_or(true, |word| word_needs_escape(u64::from_le_bytes(word)))
    })
}

/// Whether any of the eight bytes of `word` needs escaping, with the
/// classic bit tricks: `(x - 0x01..) & !x & 0x80..` is non-zero exactly
/// when some byte of `x` is zero, and with `0x20..` in place of `0x01..`
/// when some byte is below 0x20 (a borrow can only flag a byte above one
/// that is truly zero or below, so the answer for the word is exact). A
/// byte equal to `"` or `\` is a zero byte of `word ^ (byte * 0x01..)`.
fn word_needs_escape(word: u64) -> bool {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGH: u64 = u64::from_le_bytes([0x80; 8]);
    let below_space = word.wrapping_sub(ONES * 0x20) & !word;
    let quote = word ^ (ONES * u64::from(b'"'));
    let backslash = word ^ (ONES * u64::from(b'\\'));
    let zero_in = |x: u64| x.wrapping_sub(ONES) & !x;
    (below_space | zero_in(quote) | zero_in(backslash)) & HIGH != 0
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn write_option_str(out: &mut Vec<u8>, text: Option<&str>) {
    match text {
        Some(text) => write_str(out, text),
        None => out.extend_from_slice(b"null"),
    }
}

fn write_bool(out: &mut Vec<u8>, value: bool) {
    out.extend_from_slice(if value { b"true" } else { b"false" });
}

fn write_i64(out: &mut Vec<u8>, value: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// `[item, ...]`.
pub fn write_list<T: WriteJson>(out: &mut Vec<u8>, items: &[T]) {
    out.push(b'[');
    for (index, item) in items.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        item.write_json(out);
    }
    out.push(b']');
}

impl WriteJson for Timestamp {
    fn write_json(&self, out: &mut Vec<u8>) {
        match self.rfc3339_millis() {
            Some(bytes) => {
                // Digits and punctuation: nothing to escape.
                out.push(b'"');
                out.extend_from_slice(&bytes);
                out.push(b'"');
            }
            None => write_str(out, &self.chrono_text()),
        }
    }
}

/// The tags, in the order given (the views sort them).
fn write_tag_list(out: &mut Vec<u8>, tags: &[String]) {
    out.push(b'[');
    for (index, tag) in tags.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        write_str(out, tag);
    }
    out.push(b']');
}

impl WriteJson for ProfileView {
    fn write_json(&self, out: &mut Vec<u8>) {
        let user = &self.user;
        out.extend_from_slice(b"{\"username\":");
        write_str(out, &user.username);
        out.extend_from_slice(b",\"bio\":");
        write_option_str(out, user.bio.as_deref());
        out.extend_from_slice(b",\"image\":");
        write_option_str(out, user.image.as_deref());
        out.extend_from_slice(b",\"following\":");
        write_bool(out, self.following);
        out.push(b'}');
    }
}

impl WriteJson for ArticleView {
    fn write_json(&self, out: &mut Vec<u8>) {
        {
            let article = &self.article;
            out.extend_from_slice(b"{\"slug\":");
            write_str(out, &article.slug);
            out.extend_from_slice(b",\"title\":");
            write_str(out, &article.title);
            out.extend_from_slice(b",\"description\":");
            write_str(out, &article.description);
            if self.body == Body::Included {
                out.extend_from_slice(b",\"body\":");
                write_str(out, &article.body);
            }
            out.extend_from_slice(b",\"tagList\":");
            write_tag_list(out, &self.tags);
            out.extend_from_slice(b",\"createdAt\":");
            Timestamp(article.created_at).write_json(out);
            out.extend_from_slice(b",\"updatedAt\":");
            Timestamp(article.updated_at).write_json(out);
        }
        out.extend_from_slice(b",\"favorited\":");
        write_bool(out, self.favorited);
        out.extend_from_slice(b",\"favoritesCount\":");
        write_i64(out, self.favorites_count);
        out.extend_from_slice(b",\"author\":");
        self.author.write_json(out);
        out.push(b'}');
    }
}

impl WriteJson for CommentView {
    fn write_json(&self, out: &mut Vec<u8>) {
        {
            let comment = self.comment.read();
            out.extend_from_slice(b"{\"id\":");
            write_i64(out, comment.id);
            out.extend_from_slice(b",\"createdAt\":");
            Timestamp(comment.created_at).write_json(out);
            out.extend_from_slice(b",\"updatedAt\":");
            Timestamp(comment.updated_at).write_json(out);
            out.extend_from_slice(b",\"body\":");
            write_str(out, &comment.body);
        }
        out.extend_from_slice(b",\"author\":");
        self.author.write_json(out);
        out.push(b'}');
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
    use orm_core::{Database, Session};
    use serde::Serialize;

    use super::*;
    use crate::entities::{Article, Comment, User};

    fn written<T: WriteJson>(value: &T) -> String {
        let mut out = Vec::new();
        value.write_json(&mut out);
        String::from_utf8(out).unwrap()
    }

    fn written_str(text: &str) -> String {
        let mut out = Vec::new();
        write_str(&mut out, text);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let mut every_ascii: String = (0u8..0x80).map(char::from).collect();
        every_ascii.push_str("é日本語\u{2028}🦀\"\\");
        for text in [every_ascii.as_str(), "", "plain", "\"", "a\\b", "\u{1f}x\u{7f}", "tab\there\r\n"] {
            assert_eq!(written_str(text), serde_json::to_string(text).unwrap(), "{text:?}");
        }
    }

    #[test]
    fn escapes_are_found_at_every_place_of_a_word() {
        let specials = [0x00, 0x08, 0x0a, 0x1f, b'"', b'\\'];
        let harmless = [b'a', b' ', 0x7f, b'!', b'#', b'[', b']', 0x21, 0x5b, 0x5d];
        for len in 0..=24 {
            for filler in harmless {
                let plain = String::from_utf8(vec![filler; len]).unwrap();
                assert!(!any_needs_escape(plain.as_bytes()), "{plain:?}");
                assert_eq!(written_str(&plain), serde_json::to_string(&plain).unwrap());
                for at in 0..len {
                    for special in specials {
                        let mut bytes = vec![filler; len];
                        bytes[at] = special;
                        let text = String::from_utf8(bytes).unwrap();
                        assert!(any_needs_escape(text.as_bytes()), "{text:?}");
                        assert_eq!(written_str(&text), serde_json::to_string(&text).unwrap(), "{text:?}");
                    }
                }
            }
        }
        // Multi-byte characters, whose bytes are all 0x80 or above, beside
        // and around the characters to escape.
        for text in
            ["日本語の文字列です", "é\"", "\u{1f980}\n\u{1f980}", "ÿÿÿÿÿÿÿÿ\u{0}", "\u{80}\u{7ff}\u{800}\u{ffff}"]
        {
            assert_eq!(written_str(text), serde_json::to_string(text).unwrap(), "{text:?}");
        }
        // Every byte value at every place of a 16-byte string.
        for byte in 0u8..0x80 {
            for at in 0..16 {
                let mut bytes = vec![b'x'; 16];
                bytes[at] = byte;
                let text = String::from_utf8(bytes).unwrap();
                assert_eq!(any_needs_escape(text.as_bytes()), needs_escape(byte), "{text:?}");
                assert_eq!(written_str(&text), serde_json::to_string(&text).unwrap(), "{text:?}");
            }
        }
    }

    /// A view's JSON as the views wrote it before they were written by
    /// hand: owned copies of the rows' strings, serialized by `serde_json`,
    /// times formatted by chrono.
    #[derive(Serialize)]
    struct ProfileShape {
        username: String,
        bio: Option<String>,
        image: Option<String>,
        following: bool,
    }

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct ArticleShape {
        slug: String,
        title: String,
        description: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        body: Option<String>,
        tag_list: Vec<String>,
        created_at: String,
        updated_at: String,
        favorited: bool,
        favorites_count: i64,
        author: ProfileShape,
    }

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct CommentShape {
        id: i64,
        created_at: String,
        updated_at: String,
        body: String,
        author: ProfileShape,
    }

    fn chrono_text(time: DateTime<Utc>) -> String {
        time.to_rfc3339_opts(SecondsFormat::Millis, true)
    }

    fn profile_shape(view: &ProfileView) -> ProfileShape {
        let user = &view.user;
        ProfileShape {
            username: user.username.clone(),
            bio: user.bio.clone(),
            image: user.image.clone(),
            following: view.following,
        }
    }

    fn article_shape(view: &ArticleView) -> ArticleShape {
        let article = &view.article;
        ArticleShape {
            slug: article.slug.clone(),
            title: article.title.clone(),
            description: article.description.clone(),
            body: (view.body == Body::Included).then(|| article.body.clone()),
            tag_list: view.tags.clone(),
            created_at: chrono_text(article.created_at),
            updated_at: chrono_text(article.updated_at),
            favorited: view.favorited,
            favorites_count: view.favorites_count,
            author: profile_shape(&view.author),
        }
    }

    fn comment_shape(view: &CommentView) -> CommentShape {
        let comment = view.comment.read();
        CommentShape {
            id: comment.id,
            created_at: chrono_text(comment.created_at),
            updated_at: chrono_text(comment.updated_at),
            body: comment.body.clone(),
            author: profile_shape(&view.author),
        }
    }

    /// A session that only tracks rows made here: nothing connects.
    fn session() -> Session {
        Database::connect("postgres://nobody@127.0.0.1:1/none").unwrap().session()
    }

    /// The strings the views show, with characters to escape, non-ASCII
    /// text, empty strings and long ones.
    const TEXTS: [&str; 7] = [
        "",
        "jake \"the\" dog",
        "How to \\ train",
        "d\u{0}\u{1f}",
        "line\nbreak\ttab\r",
        "日本語 é 🦀",
        "a much longer text, past a word or two",
    ];

    fn users() -> Vec<User> {
        let mut users = Vec::new();
        for (at, username) in TEXTS.iter().enumerate() {
            let text = |shift: usize| TEXTS[(at + shift) % TEXTS.len()].to_owned();
            users.push(User {
                id: i64::try_from(at).unwrap(),
                username: (*username).to_owned(),
                email: text(1),
                password_hash: text(2),
                bio: (at % 2 == 0).then(|| text(3)),
                image: (at % 3 == 0).then(|| text(4)),
            });
        }
        users
    }

    fn times() -> [DateTime<Utc>; 4] {
        [
            Utc.with_ymd_and_hms(2024, 5, 6, 7, 8, 9).unwrap(),
            Utc.with_ymd_and_hms(12_345, 1, 2, 3, 4, 5).unwrap(),
            Utc.with_ymd_and_hms(1999, 12, 31, 23, 59, 59).unwrap() + chrono::Duration::microseconds(999_999),
            Utc.with_ymd_and_hms(-44, 3, 15, 12, 0, 0).unwrap(),
        ]
    }

    #[test]
    fn profiles_are_the_bytes_of_their_old_serialize() {
        for user in users() {
            for following in [false, true] {
                let view = ProfileView { user: user.clone(), following };
                assert_eq!(written(&view), serde_json::to_string(&profile_shape(&view)).unwrap());
            }
        }
    }

    #[test]
    fn articles_are_the_bytes_of_their_old_serialize() {
        let users = users();
        let times = times();
        let mut views = Vec::new();
        for (at, text) in TEXTS.iter().enumerate() {
            let other = |shift: usize| TEXTS[(at + shift) % TEXTS.len()].to_owned();
            let article = Article {
                id: i64::try_from(at).unwrap(),
                slug: (*text).to_owned(),
                title: other(1),
                description: other(2),
                body: other(3),
                author_id: 0,
                created_at: times[at % times.len()],
                updated_at: times[(at + 1) % times.len()],
            };
            // None, one, several, with characters to escape.
            let tag_count = [0, 1, 3, 8, 9, 2, 20][at];
            let tags: Vec<String> = (0..tag_count).map(|k| format!("{}{}", TEXTS[k % TEXTS.len()], 20 - k)).collect();
            for body in [Body::Included, Body::Omitted] {
                for (favorited, favorites_count) in [(false, 0), (true, -3), (at % 2 == 0, i64::MAX), (true, i64::MIN)]
                {
                    let author = ProfileView { user: users[at % users.len()].clone(), following: at % 3 == 0 };
                    let view = ArticleView {
                        article: article.clone(),
                        tags: tags.clone(),
                        body,
                        favorited,
                        favorites_count,
                        author,
                    };
                    assert_eq!(written(&view), serde_json::to_string(&article_shape(&view)).unwrap());
                    views.push(view);
                }
            }
        }
        // A list, as the pages write theirs.
        let mut list = Vec::new();
        write_list(&mut list, &views);
        let shapes: Vec<ArticleShape> = views.iter().map(article_shape).collect();
        assert_eq!(String::from_utf8(list).unwrap(), serde_json::to_string(&shapes).unwrap());
        let mut empty = Vec::new();
        write_list::<ArticleView>(&mut empty, &[]);
        assert_eq!(empty, b"[]");
    }

    #[test]
    fn comments_are_the_bytes_of_their_old_serialize() {
        let mut session = session();
        let users = users();
        let times = times();
        let mut views = Vec::new();
        for (at, text) in TEXTS.iter().enumerate() {
            for id in [0, 42, -1, i64::MAX] {
                let comment = session.add(Comment {
                    id,
                    article_id: 1,
                    author_id: 0,
                    body: (*text).to_owned(),
                    created_at: times[at % times.len()],
                    updated_at: times[(at + 3) % times.len()],
                });
                let author = ProfileView { user: users[(at + 1) % users.len()].clone(), following: at % 2 == 1 };
                let view = CommentView { comment, author };
                assert_eq!(written(&view), serde_json::to_string(&comment_shape(&view)).unwrap());
                views.push(view);
            }
        }
        let mut list = Vec::new();
        write_list(&mut list, &views);
        let shapes: Vec<CommentShape> = views.iter().map(comment_shape).collect();
        assert_eq!(String::from_utf8(list).unwrap(), serde_json::to_string(&shapes).unwrap());
    }
}
