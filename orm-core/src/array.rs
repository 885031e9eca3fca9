//! Array columns: a `Vec<T>` field maps to a one-dimensional `T[]` column,
//! and the filters that look inside one (`@>`, `<@`, `&&`, `= ANY`).
//!
//! A batched statement takes one array parameter per column
//! (`UNNEST($1::int8[], ...)`), but an array of arrays is no such thing:
//! PostgreSQL's arrays are rectangular, and `UNNEST` of a two-dimensional
//! array yields its elements, not its rows. So a batch of array values
//! travels as a `text[]` of their array literals (`{1,2,3}`), one per row,
//! which the statement casts back (`v.tags::int4[]`): the statement text
//! stays the same for any number of rows and any array lengths.
//! `docs/performance.md` measures this against the alternatives (JSON,
//! flattened elements with lengths) and against one statement per row.
//! A single row is bound as the array itself, in binary (`$1::int4[]`).

use std::fmt::Write;
use std::marker::PhantomData;

use crate::column::{Column, Condition};
use crate::column_value::IntoColumnValue;
use crate::entity::Entity;
use crate::expr::{Expr, ExprNode, SharedParam};
use crate::types::{ColumnType, Param};

/// A type that can be an element of an array column: a field of type
/// `Vec<T>` maps to a `T[]` column, `Option<Vec<T>>` to a nullable one.
///
/// Implemented for `i16`, `i32`, `i64`, `f32`, `f64`, `bool`, `String`,
/// [`uuid::Uuid`], [`std::net::IpAddr`], [`Interval`](crate::Interval),
/// `rust_decimal::Decimal` (feature `decimal`), `chrono`'s `NaiveDate`,
/// `NaiveDateTime`, `DateTime<Utc>` and `NaiveTime`, the `time` crate's
/// `Date`, `PrimitiveDateTime`, `OffsetDateTime` and `Time` (feature
/// `time`), enums deriving
/// [`DbEnum`](crate::DbEnum) (a `text[]` column, or an array of the
/// PostgreSQL enum type), and `Option<T>` of each: a `Vec<Option<i32>>`
/// holds NULL elements, which a `Vec<i32>` refuses when it reads them
/// ([`Error::Decode`](crate::Error::Decode)). `Vec<u8>` is `bytea`, not an
/// array. Arrays of more than one dimension are not supported: reading one
/// is an `Error::Decode`.
///
/// ```
/// use orm_core::{Database, Entity};
///
/// #[derive(Entity, Clone, Debug, PartialEq)]
/// struct Post {
///     #[orm(primary_key, generated)]
///     id: i64,
///     tags: Vec<String>,          // text[] NOT NULL
///     scores: Option<Vec<i32>>,   // int4[], nullable
/// }
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
/// # let test_db = orm_tests::TestDb::new().await;
/// # test_db.client().await.batch_execute("CREATE TABLE post (id bigserial PRIMARY KEY, tags text[] NOT NULL, scores int4[])").await?;
/// # let db = Database::connect(test_db.url())?;
///
/// assert_eq!(Post::META.columns[1].sql_type, "text[]");
/// let mut session = db.session();
/// session.add_all((0..1000).map(|n| Post { id: 0, tags: vec![format!("tag {n}"), "a \"quoted\" {one}".into()], scores: None }));
/// let stats = session.commit().await?;
/// assert_eq!(stats.statements, 1); // one INSERT for the thousand rows
///
/// let mut session = db.session();
/// let post = session.get_one::<Post>(7).await?;
/// assert_eq!(post.read().tags, ["tag 6", "a \"quoted\" {one}"]);
/// post.write().scores.get_or_insert_with(Vec::new).push(5); // a change like any other
/// session.commit().await?;
/// # Ok(()) }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be an element of an array column",
    label = "not an array element type",
    note = "array columns (`Vec<T>`) take integers, floats, bool, String, Uuid, IpAddr, Interval, Decimal (feature `decimal`), chrono's and time's (feature `time`) dates, times and timestamps, #[derive(DbEnum)] enums, and Option of any of them"
)]
pub trait ArrayElement: ColumnType {
    /// Appends the value as an element of a PostgreSQL array literal, in
    /// the text form the element type's input function reads back to the
    /// same value: how a batch sends array values (see the module docs).
    #[doc(hidden)]
    fn write_element(&self, out: &mut String);
}

impl<T: ArrayElement> ColumnType for Vec<T> {
    const SQL_TYPE: &'static str = ArrayTypeName::<T>::NAME;
    const BATCH_TYPE: Option<&'static str> = Some("text");
    const ENUM_LABELS: Option<&'static [&'static str]> = T::ENUM_LABELS;
    type Value = Self;

    fn round_to_stored(&mut self) {
        for element in self {
            element.round_to_stored();
        }
    }

    fn same_value(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().zip(other).all(|(value, other)| value.same_value(other))
    }

    fn batch_param<'a>(values: impl Iterator<Item = &'a Self>) -> Param {
        Self::nullable_batch_param(values.map(Some))
    }

    fn nullable_batch_param<'a>(values: impl Iterator<Item = Option<&'a Self>>) -> Param {
        Box::new(values.map(|array| array.map(|array| array_literal(array))).collect::<Vec<Option<String>>>())
    }
}

/// `array` as a PostgreSQL array literal: `{}`, `{1,2,3}`, `{"a b",NULL}`.
fn array_literal<T: ArrayElement>(array: &[T]) -> String {
    let mut literal = String::with_capacity(2 + 8 * array.len());
    literal.push('{');
    for (n, element) in array.iter().enumerate() {
        if n > 0 {
            literal.push(',');
        }
        element.write_element(&mut literal);
    }
    literal.push('}');
    literal
}

/// The longest element type name an array type can be named from.
/// PostgreSQL's identifiers are at most 63 bytes; a schema, a dot and
/// quotes take this to 131.
const MAX_TYPE_NAME: usize = 160;

/// `T::SQL_TYPE` followed by `[]`, built at compile time: `SQL_TYPE` is a
/// constant, and a constant cannot concatenate strings of a generic type
/// other than through a buffer of fixed size.
struct ArrayTypeName<T>(PhantomData<T>);

impl<T: ColumnType> ArrayTypeName<T> {
    const BYTES: [u8; MAX_TYPE_NAME] = with_brackets(T::SQL_TYPE);
    const NAME: &'static str = prefix(&Self::BYTES, T::SQL_TYPE.len() + 2);
}

const fn with_brackets(name: &str) -> [u8; MAX_TYPE_NAME] {
    let name = name.as_bytes();
    assert!(name.len() + 2 <= MAX_TYPE_NAME, "the element type's name is too long for an array type");
    let mut out = [0; MAX_TYPE_NAME];
    let mut i = 0;
    while i < name.len() {
        out[i] = name[i];
        i += 1;
    }
    out[i] = b'[';
    out[i + 1] = b']';
    out
}

const fn prefix(bytes: &'static [u8; MAX_TYPE_NAME], len: usize) -> &'static str {
    match std::str::from_utf8(bytes.split_at(len).0) {
        Ok(name) => name,
        Err(_) => panic!("a type name is not UTF-8"),
    }
}

/// Appends `text` double-quoted, with `"` and `\` escaped: a quoted
/// element is taken as it is, so commas, braces, spaces and the word NULL
/// are text like any other.
#[doc(hidden)]
pub fn write_quoted(out: &mut String, text: &str) {
    out.push('"');
    let mut rest = text;
    while let Some(at) = rest.find(['"', '\\']) {
        out.push_str(&rest[..at]);
        out.push('\\');
        out.push_str(&rest[at..=at]);
        rest = &rest[at + 1..];
    }
    out.push_str(rest);
    out.push('"');
}

macro_rules! displayed_elements {
    ($($ty:ty),*) => {$(
        impl ArrayElement for $ty {
            fn write_element(&self, out: &mut String) {
                let _ = write!(out, "{self}");
            }
        }
    )*};
}

// `inet` and `numeric` read back what Rust displays: `::1`, `10.0.0.1`,
// `-12.50` (the scale kept).
displayed_elements!(i16, i32, i64, uuid::Uuid, std::net::IpAddr);

#[cfg(feature = "decimal")]
displayed_elements!(rust_decimal::Decimal);

impl ArrayElement for crate::Interval {
    /// `"+1 mons +2 days -03:04:05.000006"`: months and days apart, as the
    /// type keeps them, and the rest as a time of day, exact to the
    /// microsecond however many hours it spans. Every part carries its
    /// sign: under `IntervalStyle = sql_standard` a leading `-` with no
    /// other explicit sign negates every part.
    fn write_element(&self, out: &mut String) {
        let sign = if self.microseconds < 0 { "-" } else { "+" };
        let rest = self.microseconds.unsigned_abs();
        let (hours, minutes) = (rest / 3_600_000_000, rest / 60_000_000 % 60);
        let (seconds, micros) = (rest / 1_000_000 % 60, rest % 1_000_000);
        let _ = write!(
            out,
            "\"{:+} mons {:+} days {sign}{hours:02}:{minutes:02}:{seconds:02}.{micros:06}\"",
            self.months, self.days
        );
    }
}

macro_rules! float_elements {
    ($($ty:ty),*) => {$(
        impl ArrayElement for $ty {
            /// Rust prints the shortest decimal that reads back to the same
            /// float, which PostgreSQL's input (`strtod`) does read back.
            fn write_element(&self, out: &mut String) {
                if self.is_nan() {
                    out.push_str("NaN");
                } else if self.is_infinite() {
                    out.push_str(if *self > 0.0 { "Infinity" } else { "-Infinity" });
                } else if *self != 0.0 && !(1e-5..1e16).contains(&self.abs()) {
                    // 1e300 in exponent form, not as 301 digits.
                    let _ = write!(out, "{self:e}");
                } else {
                    let _ = write!(out, "{self}");
                }
            }
        }
    )*};
}

float_elements!(f32, f64);

impl ArrayElement for bool {
    fn write_element(&self, out: &mut String) {
        out.push(if *self { 't' } else { 'f' });
    }
}

impl ArrayElement for String {
    fn write_element(&self, out: &mut String) {
        write_quoted(out, self);
    }
}

impl<T: ArrayElement + ColumnType<Value = T>> ArrayElement for Option<T> {
    fn write_element(&self, out: &mut String) {
        match self {
            Some(value) => value.write_element(out),
            None => out.push_str("NULL"),
        }
    }
}

/// A calendar date as [`write_date`] writes it: a proleptic Gregorian
/// year (0 is 1 BC), month and day, from chrono's or the `time` crate's
/// date alike.
pub(crate) struct DateParts {
    pub(crate) year: i32,
    pub(crate) month: u32,
    pub(crate) day: u32,
}

/// A time of day to the microsecond as [`write_time`] writes it; second
/// 60 is a leap second.
pub(crate) struct TimeParts {
    pub(crate) hour: u32,
    pub(crate) minute: u32,
    pub(crate) second: u32,
    pub(crate) microsecond: u32,
}

impl From<chrono::NaiveDate> for DateParts {
    fn from(date: chrono::NaiveDate) -> Self {
        use chrono::Datelike;
        DateParts { year: date.year(), month: date.month(), day: date.day() }
    }
}

impl From<chrono::NaiveTime> for TimeParts {
    /// A leap second (chrono's nanoseconds past 999,999,999) becomes
    /// second 60, which PostgreSQL takes as the next minute's first.
    fn from(time: chrono::NaiveTime) -> Self {
        use chrono::Timelike;
        let nanos = time.nanosecond();
        let (second, nanos) = if nanos >= 1_000_000_000 { (60, nanos - 1_000_000_000) } else { (time.second(), nanos) };
        TimeParts { hour: time.hour(), minute: time.minute(), second, microsecond: nanos / 1000 }
    }
}

/// Appends a date's year, month and day as PostgreSQL reads them,
/// returning whether the year is before the common era: PostgreSQL has
/// no year zero and writes those years with a `BC` suffix (`0044-03-15
/// BC` is year -43), and takes years past 9999 with more digits.
fn write_date(out: &mut String, date: &DateParts) -> bool {
    let (year, bc) = if date.year > 0 { (date.year, false) } else { (1 - date.year, true) };
    let _ = write!(out, "{year:04}-{:02}-{:02}", date.month, date.day);
    bc
}

/// Appends a time of day to the microsecond, as the driver sends it.
fn write_time(out: &mut String, time: &TimeParts) {
    let _ = write!(out, "{:02}:{:02}:{:02}.{:06}", time.hour, time.minute, time.second, time.microsecond);
}

/// Appends a date as an array element.
pub(crate) fn write_date_element(out: &mut String, date: &DateParts) {
    out.push('"');
    if write_date(out, date) {
        out.push_str(" BC");
    }
    out.push('"');
}

/// Appends a time of day, already brought to the microsecond, as an
/// array element.
pub(crate) fn write_time_element(out: &mut String, time: &TimeParts) {
    out.push('"');
    write_time(out, time);
    out.push('"');
}

/// Appends a timestamp, already brought to the microsecond the way the
/// driver brings a single value, with `offset` after the time.
pub(crate) fn write_timestamp_element(out: &mut String, date: &DateParts, time: &TimeParts, offset: &str) {
    out.push('"');
    let bc = write_date(out, date);
    out.push(' ');
    write_time(out, time);
    out.push_str(offset);
    if bc {
        out.push_str(" BC");
    }
    out.push('"');
}

impl ArrayElement for chrono::NaiveDate {
    fn write_element(&self, out: &mut String) {
        write_date_element(out, &(*self).into());
    }
}

impl ArrayElement for chrono::NaiveTime {
    fn write_element(&self, out: &mut String) {
        let mut stored = *self;
        stored.round_to_stored();
        write_time_element(out, &stored.into());
    }
}

/// Appends a chrono timestamp, first brought to the microsecond.
fn write_chrono_timestamp(out: &mut String, timestamp: chrono::NaiveDateTime, offset: &str) {
    let mut stored = timestamp;
    stored.round_to_stored();
    write_timestamp_element(out, &stored.date().into(), &stored.time().into(), offset);
}

impl ArrayElement for chrono::NaiveDateTime {
    fn write_element(&self, out: &mut String) {
        write_chrono_timestamp(out, *self, "");
    }
}

impl ArrayElement for chrono::DateTime<chrono::Utc> {
    /// In UTC with an explicit offset, so the session's `TimeZone` setting
    /// does not matter.
    fn write_element(&self, out: &mut String) {
        write_chrono_timestamp(out, self.naive_utc(), "+00");
    }
}

impl<E, T: ArrayElement> Expr<E, Vec<T>> {
    /// `expression @> $1`: the array holds every one of `values` (all of
    /// them for an empty list). Duplicates and order do not matter.
    pub fn contains<I>(self, values: I) -> Condition<E>
    where
        I: IntoIterator,
        I::Item: IntoColumnValue<T::Value>,
    {
        Condition::compare_expr(self.node, "@>", elements(values))
    }

    /// `expression <@ $1`: every element of the array is one of `values`
    /// (so an empty array is contained by anything).
    ///
    /// On an expression rather than a column, for instance one that reads
    /// a NULL array as an empty one:
    ///
    /// ```
    /// # use orm_core::{Database, Entity};
    /// #[derive(Entity, Clone, Debug, PartialEq)]
    /// struct Post {
    ///     #[orm(primary_key, generated)]
    ///     id: i64,
    ///     scores: Option<Vec<i32>>,
    /// }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
    /// # let test_db = orm_tests::TestDb::new().await;
    /// # test_db.client().await.batch_execute("CREATE TABLE post (id bigserial PRIMARY KEY, scores int4[]);
    /// #     INSERT INTO post (scores) VALUES ('{1,2}'), (NULL), ('{3}')").await?;
    /// # let db = Database::connect(test_db.url())?;
    /// let mut session = db.session();
    /// let low = Post::SCORES.coalesce(Vec::new()).contained_by([1, 2]); // coalesce(t."scores", $1) <@ $2
    /// assert_eq!(session.query::<Post>().filter(low).count().await?, 2);
    /// assert_eq!(session.query::<Post>().filter(Post::SCORES.contained_by([1, 2])).count().await?, 1);
    /// # Ok(()) }
    /// ```
    pub fn contained_by<I>(self, values: I) -> Condition<E>
    where
        I: IntoIterator,
        I::Item: IntoColumnValue<T::Value>,
    {
        Condition::compare_expr(self.node, "<@", elements(values))
    }

    /// `expression && $1`: the array and `values` have an element in
    /// common (none for an empty list).
    pub fn overlaps<I>(self, values: I) -> Condition<E>
    where
        I: IntoIterator,
        I::Item: IntoColumnValue<T::Value>,
    {
        Condition::compare_expr(self.node, "&&", elements(values))
    }

    /// `$1 = ANY(expression)`: one of the array's elements is `value`.
    #[doc(alias = "any")]
    pub fn has(self, value: impl IntoColumnValue<T::Value>) -> Condition<E> {
        let value = ExprNode::Value(SharedParam::new(value.into_column_value()));
        Condition::compare_expr(value, "=", ExprNode::Call { function: "ANY", args: vec![self.node] })
    }
}

/// `values` as one array parameter of the element type. A NULL element
/// never matches in `@>`, `<@`, `&&` or `= ANY`, so the values are plain
/// `T::Value`s also for a column of `Option<T>` elements.
fn elements<V: ColumnType, I>(values: I) -> ExprNode
where
    I: IntoIterator,
    I::Item: IntoColumnValue<V>,
{
    let values: Vec<V> = values.into_iter().map(IntoColumnValue::into_column_value).collect();
    ExprNode::Value(SharedParam::new(values))
}

/// The filters on an array column: each a shortcut for the same method of
/// [`Expr`], on the column. The values are the element type, exactly (see
/// [`IntoColumnValue`]), so a text array does not compare with numbers.
///
/// ```
/// # use orm_core::{Database, Entity, Tracked};
/// #[derive(Entity, Clone, Debug, PartialEq)]
/// struct Post {
///     #[orm(primary_key, generated)]
///     id: i64,
///     title: String,
///     tags: Vec<String>,
/// }
/// # fn titles(found: &[Tracked<Post>]) -> Vec<String> { found.iter().map(|p| p.read().title.clone()).collect() }
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
/// # let test_db = orm_tests::TestDb::new().await;
/// # test_db.client().await.batch_execute("CREATE TABLE post (id bigserial PRIMARY KEY, title text NOT NULL, tags text[] NOT NULL);
/// #     INSERT INTO post (title, tags) VALUES ('tea', '{drinks,hot}'), ('lemonade', '{drinks,cold}'), ('scones', '{}')").await?;
/// # let db = Database::connect(test_db.url())?;
/// let mut session = db.session();
/// let hot = session.query::<Post>().filter(Post::TAGS.has("hot")).all().await?; // $1 = ANY(t."tags")
/// assert_eq!(titles(&hot), ["tea"]);
///
/// let both = session.query::<Post>().filter(Post::TAGS.contains(["drinks", "cold"])).all().await?; // t."tags" @> $1
/// let either = session.query::<Post>().filter(Post::TAGS.overlaps(["hot", "cold"])).count().await?; // &&
/// let within = session.query::<Post>().filter(Post::TAGS.contained_by(["drinks", "hot"])).count().await?; // <@
/// assert_eq!((titles(&both), either, within), (vec!["lemonade".to_owned()], 2, 2)); // tea, and scones' empty array
/// # Ok(()) }
/// ```
impl<E: Entity, T: ArrayElement> Column<E, Vec<T>> {
    /// `column @> $1`, see [`Expr::contains`].
    pub fn contains<I>(self, values: I) -> Condition<E>
    where
        I: IntoIterator,
        I::Item: IntoColumnValue<T::Value>,
    {
        self.expr().contains(values)
    }

    /// `column <@ $1`, see [`Expr::contained_by`].
    pub fn contained_by<I>(self, values: I) -> Condition<E>
    where
        I: IntoIterator,
        I::Item: IntoColumnValue<T::Value>,
    {
        self.expr().contained_by(values)
    }

    /// `column && $1`, see [`Expr::overlaps`].
    pub fn overlaps<I>(self, values: I) -> Condition<E>
    where
        I: IntoIterator,
        I::Item: IntoColumnValue<T::Value>,
    {
        self.expr().overlaps(values)
    }

    /// `$1 = ANY(column)`, see [`Expr::has`].
    #[doc(alias = "any")]
    pub fn has(self, value: impl IntoColumnValue<T::Value>) -> Condition<E> {
        self.expr().has(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn literal<T: ArrayElement>(values: &[T]) -> String {
        array_literal(values)
    }

    #[test]
    fn type_names_append_brackets() {
        assert_eq!(<Vec<i32>>::SQL_TYPE, "int4[]");
        assert_eq!(<Vec<Option<String>>>::SQL_TYPE, "text[]");
        assert_eq!(<Option<Vec<f64>>>::SQL_TYPE, "float8[]");
        assert_eq!(<Vec<u8>>::SQL_TYPE, "bytea");
    }

    #[test]
    fn text_is_quoted_and_escaped() {
        let texts = ["", "a,b", "{x}", "NULL", " padded ", "say \"hi\"", "back\\slash", "\\\""].map(String::from);
        assert_eq!(literal(&texts), r#"{"","a,b","{x}","NULL"," padded ","say \"hi\"","back\\slash","\\\""}"#);
        assert_eq!(literal::<String>(&[]), "{}");
        assert_eq!(literal(&[Some("x".to_owned()), None]), r#"{"x",NULL}"#);
    }

    #[test]
    fn numbers_read_back_exactly() {
        assert_eq!(literal(&[i64::MIN, 0, i64::MAX]), "{-9223372036854775808,0,9223372036854775807}");
        assert_eq!(
            literal(&[f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.0, 0.1, 5e-324, -1e300, 123_456.75]),
            "{NaN,Infinity,-Infinity,-0,0.1,5e-324,-1e300,123456.75}"
        );
        assert_eq!(literal(&[0.1_f32, f32::MAX]), "{0.1,3.4028235e38}");
        assert_eq!(literal(&[true, false]), "{t,f}");
    }

    #[test]
    fn addresses_and_intervals_in_postgres_form() {
        let addresses: [std::net::IpAddr; 2] = ["10.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
        assert_eq!(literal(&addresses), "{10.0.0.1,::1}");
        let interval = |months, days, microseconds| crate::Interval { months, days, microseconds };
        assert_eq!(
            literal(&[
                interval(14, -3, 100 * 3_600_000_000 + 61_000_007),
                interval(0, 0, -1),
                interval(0, 0, i64::MIN)
            ]),
            r#"{"+14 mons -3 days +100:01:01.000007","+0 mons +0 days -00:00:00.000001","+0 mons +0 days -2562047788:00:54.775808"}"#
        );
    }

    #[test]
    fn dates_and_times_in_postgres_form() {
        let date = |y, m, d| chrono::NaiveDate::from_ymd_opt(y, m, d).unwrap();
        assert_eq!(
            literal(&[date(2024, 2, 29), date(-43, 3, 15), date(12345, 1, 1)]),
            r#"{"2024-02-29","0044-03-15 BC","12345-01-01"}"#
        );
        // Before 2000, the driver's truncation toward its epoch rounds up.
        let at = date(1999, 12, 31).and_hms_nano_opt(23, 59, 59, 123_456_789).unwrap();
        assert_eq!(literal(&[at]), r#"{"1999-12-31 23:59:59.123457"}"#);
        assert_eq!(literal(&[at.and_utc()]), r#"{"1999-12-31 23:59:59.123457+00"}"#);
        assert_eq!(literal(&[at.time()]), r#"{"23:59:59.123456"}"#);
        let bc = date(-43, 3, 15).and_hms_opt(12, 0, 0).unwrap();
        assert_eq!(literal(&[bc.and_utc()]), r#"{"0044-03-15 12:00:00.000000+00 BC"}"#);
    }
}
