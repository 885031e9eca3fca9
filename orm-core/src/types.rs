//! Which Rust types can be entity fields, and the SQL type each one is sent as.

use std::error::Error as StdError;
use std::ops::{Deref, DerefMut};

use bytes::{Buf, BufMut, BytesMut};
use postgres_types::{FromSql, IsNull, Kind, ToSql, Type};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::int_batch::IntBatch;
use crate::text_batch::TextBatch;
use crate::text_decode::TextColumn;

/// A Rust type that can be stored in a column.
///
/// `SQL_TYPE` names the PostgreSQL type a batch of these values is cast to in
/// array parameters (`UNNEST($1::int8[])`), so one statement carries any number
/// of rows. `#[orm(sql_type = "...")]` on a field overrides it.
///
/// Implemented for `i16`, `i32`, `i64`, `f32`, `f64`, `bool`, `String`,
/// `Vec<u8>` (`bytea`), `Vec<T>` of an [`ArrayElement`](crate::ArrayElement)
/// (a `T[]` column), [`uuid::Uuid`], `chrono` timestamps, dates and times,
/// [`std::net::IpAddr`] (`inet`), [`Interval`](crate::Interval),
/// [`serde_json::Value`], [`Json<T>`] for any serde type, enums deriving
/// [`DbEnum`](crate::DbEnum) (as `text` or a PostgreSQL enum type),
/// `rust_decimal::Decimal` (`numeric`, feature `decimal`), the `time`
/// crate's `OffsetDateTime`, `PrimitiveDateTime`, `Date` and `Time`
/// (feature `time`), and `Option<T>` of each (a nullable column).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be stored in a column",
    label = "unsupported column type",
    note = "supported: integers, floats, bool, String, Vec<u8>, Vec<T> (arrays), Uuid, chrono dates and timestamps, IpAddr, orm_core::Interval, serde_json::Value, orm_core::Json<T>, #[derive(DbEnum)] enums, rust_decimal::Decimal (feature `decimal`), time's types (feature `time`), and Option of any of them"
)]
pub trait ColumnType: ToSql + for<'a> FromSql<'a> + Clone + PartialEq + Send + Sync + 'static {
    /// The PostgreSQL type name used in casts.
    const SQL_TYPE: &'static str;
    /// Whether the column accepts NULL (true for `Option<T>`).
    const NULLABLE: bool = false;
    /// The labels of the PostgreSQL enum type `SQL_TYPE` names, for a
    /// [`DbEnum`](crate::DbEnum) with `pg_type`; `None` for other types.
    /// [`create_table_sql`](crate::create_table_sql) creates the type from them.
    const ENUM_LABELS: Option<&'static [&'static str]> = None;
    /// The PostgreSQL type a batched statement's array parameter carries
    /// values of this type as, when it is not `SQL_TYPE` itself: `text` for
    /// array columns, whose values travel as their array literals and are
    /// cast back to `SQL_TYPE` in SQL (an array of arrays is not a
    /// one-dimensional array; see [`ArrayElement`](crate::ArrayElement)).
    /// `None`, the default, sends `SQL_TYPE[]`.
    const BATCH_TYPE: Option<&'static str> = None;
    /// The non-null type filters compare with: `T` for both `T` and `Option<T>`.
    type Value: ColumnType;

    /// Whether this value is SQL NULL (`None`); a flush skips the
    /// post-update of a reference that is NULL anyway.
    fn is_null(&self) -> bool {
        false
    }

    /// Changes the value in memory to the one the database stores for it,
    /// which a flush does to what it wrote, so that memory and a reload
    /// agree. Timestamps and times lose what is below a microsecond, as the
    /// driver drops it; other types are stored as they are.
    fn round_to_stored(&mut self) {}

    /// Whether `self` and `other` are the same value as the database
    /// stores it: what change detection compares with, so that a write
    /// that changes nothing sends nothing and one that changes the value
    /// is sent. `==`, except for floats, where NaN is itself and `-0.0` is
    /// not `0.0` (PostgreSQL keeps the sign).
    #[doc(hidden)]
    fn same_value(&self, other: &Self) -> bool {
        self == other
    }

    /// One column of a batch of rows as the one array parameter of a
    /// batched statement, of type `BATCH_TYPE[]` (default `SQL_TYPE[]`).
    #[doc(hidden)]
    fn batch_param<'a>(values: impl Iterator<Item = &'a Self>) -> Param {
        Box::new(values.cloned().collect::<Vec<Self>>())
    }

    /// [`batch_param`](Self::batch_param) of a nullable column, `None`
    /// standing for NULL.
    #[doc(hidden)]
    fn nullable_batch_param<'a>(values: impl Iterator<Item = Option<&'a Self>>) -> Param {
        Box::new(values.map(Option::<&Self>::cloned).collect::<Vec<Option<Self>>>())
    }

    // What `#[derive(Entity)]` calls, as methods of this trait rather than
    // functions bound on it: every use of an unsupported field type is then
    // the same error at the field, which the compiler reports once.

    /// Reads column `index` of `row`, naming entity and column on failure.
    #[doc(hidden)]
    fn decode_column(
        row: &tokio_postgres::Row,
        index: usize,
        entity: &'static str,
        column: &'static str,
    ) -> crate::Result<Self> {
        decode(row, index, entity, column)
    }

    /// [`decode_column`](Self::decode_column) of a nullable column of this
    /// type, `None` for NULL: what `Option<Self>` reads.
    #[doc(hidden)]
    fn decode_nullable_column(
        row: &tokio_postgres::Row,
        index: usize,
        entity: &'static str,
        column: &'static str,
    ) -> crate::Result<Option<Self>> {
        decode(row, index, entity, column)
    }

    /// Reads column `index` of `row`, an array of values of this type,
    /// naming entity and column on failure: a key column's values taken
    /// many at once.
    #[doc(hidden)]
    fn decode_array(
        row: &tokio_postgres::Row,
        index: usize,
        entity: &'static str,
        column: &'static str,
    ) -> crate::Result<Vec<Self>> {
        decode(row, index, entity, column)
    }

    /// Whether a field of this type can be read from a column of type `ty`.
    #[doc(hidden)]
    fn accepts_column(ty: &Type) -> bool {
        <Self as FromSql>::accepts(ty)
    }

    /// One value as a bind parameter.
    #[doc(hidden)]
    fn column_param(&self) -> Param {
        Box::new(self.clone())
    }

    /// Writes the value in the binary form of type `ty` to `out`, as a
    /// `COPY` field carries it, without copying it into a parameter first.
    #[doc(hidden)]
    fn write_value(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        self.to_sql_checked(ty, out)
    }
}

/// Reads column `index` of `row` as a `V`, naming entity and column on
/// failure: what every `decode_*` method of [`ColumnType`] does.
fn decode<'a, V: FromSql<'a>>(
    row: &'a tokio_postgres::Row,
    index: usize,
    entity: &'static str,
    column: &'static str,
) -> crate::Result<V> {
    row.try_get::<_, V>(index).map_err(|source| crate::Error::Decode { entity, column, source })
}

macro_rules! column_types {
    ($($rust:ty => $sql:literal),* $(,)?) => {
        $(impl ColumnType for $rust {
            const SQL_TYPE: &'static str = $sql;
            type Value = Self;
        })*
    };
}

/// Integer columns bind a batch as one buffer of big-endian values,
/// written in one pass (see [`IntBatch`]).
macro_rules! int_column_types {
    ($($rust:ty => $sql:literal),* $(,)?) => {
        $(impl ColumnType for $rust {
            const SQL_TYPE: &'static str = $sql;
            type Value = Self;

            fn batch_param<'a>(values: impl Iterator<Item = &'a Self>) -> Param {
                Box::new(IntBatch(values.copied().collect()))
            }
        })*
    };
}

int_column_types! {
    i16 => "int2",
    i32 => "int4",
    i64 => "int8",
}

/// Floats compare as the database stores them (see
/// [`ColumnType::same_value`]): bit for bit, any NaN the same as another.
macro_rules! float_column_types {
    ($($rust:ty => $sql:literal),* $(,)?) => {
        $(impl ColumnType for $rust {
            const SQL_TYPE: &'static str = $sql;
            type Value = Self;

            fn same_value(&self, other: &Self) -> bool {
                self.to_bits() == other.to_bits() || (self.is_nan() && other.is_nan())
            }
        })*
    };
}

float_column_types! {
    f32 => "float4",
    f64 => "float8",
}

column_types! {
    bool => "bool",
    Vec<u8> => "bytea",
    uuid::Uuid => "uuid",
    chrono::NaiveDate => "date",
    serde_json::Value => "jsonb",
    std::net::IpAddr => "inet",
}

// Text columns bind a batch into one buffer rather than a `String` per
// row (see `TextBatch`).
impl ColumnType for String {
    const SQL_TYPE: &'static str = "text";
    type Value = Self;

    fn batch_param<'a>(values: impl Iterator<Item = &'a Self>) -> Param {
        Box::new(TextBatch::new(values.map(|value| Some(value.as_str()))))
    }

    fn nullable_batch_param<'a>(values: impl Iterator<Item = Option<&'a Self>>) -> Param {
        Box::new(TextBatch::new(values.map(|value| value.map(String::as_str))))
    }

    fn decode_column(
        row: &tokio_postgres::Row,
        index: usize,
        entity: &'static str,
        column: &'static str,
    ) -> crate::Result<Self> {
        decode(row, index, entity, column).map(|TextColumn(text)| text)
    }

    fn decode_nullable_column(
        row: &tokio_postgres::Row,
        index: usize,
        entity: &'static str,
        column: &'static str,
    ) -> crate::Result<Option<Self>> {
        decode(row, index, entity, column).map(|text: Option<TextColumn>| text.map(|TextColumn(text)| text))
    }
}

#[cfg(feature = "decimal")]
column_types! {
    rust_decimal::Decimal => "numeric",
}

impl<T: ColumnType<Value = T>> ColumnType for Option<T> {
    const SQL_TYPE: &'static str = T::SQL_TYPE;
    const NULLABLE: bool = true;
    const ENUM_LABELS: Option<&'static [&'static str]> = T::ENUM_LABELS;
    const BATCH_TYPE: Option<&'static str> = T::BATCH_TYPE;
    type Value = T;

    fn is_null(&self) -> bool {
        self.is_none()
    }

    fn round_to_stored(&mut self) {
        if let Some(value) = self {
            value.round_to_stored();
        }
    }

    fn same_value(&self, other: &Self) -> bool {
        match (self, other) {
            (Some(value), Some(other)) => value.same_value(other),
            (value, other) => value.is_none() && other.is_none(),
        }
    }

    fn batch_param<'a>(values: impl Iterator<Item = &'a Self>) -> Param {
        T::nullable_batch_param(values.map(Option::as_ref))
    }

    fn decode_column(
        row: &tokio_postgres::Row,
        index: usize,
        entity: &'static str,
        column: &'static str,
    ) -> crate::Result<Self> {
        T::decode_nullable_column(row, index, entity, column)
    }
}

/// `value` as a count of whole microseconds from `base`, the way the
/// driver sends it (truncated toward zero), turned back into a value.
fn whole_microseconds<T>(
    value: T,
    base: T,
    since: impl Fn(T, T) -> chrono::TimeDelta,
    add: impl Fn(T, chrono::TimeDelta) -> Option<T>,
) -> T
where
    T: Copy,
{
    since(value, base)
        .num_microseconds()
        .and_then(|micros| add(base, chrono::TimeDelta::microseconds(micros)))
        .unwrap_or(value)
}

/// The driver's epoch for timestamps.
fn postgres_epoch() -> Option<chrono::NaiveDateTime> {
    chrono::NaiveDate::from_ymd_opt(2000, 1, 1).and_then(|date| date.and_hms_opt(0, 0, 0))
}

impl ColumnType for chrono::NaiveDateTime {
    const SQL_TYPE: &'static str = "timestamp";
    type Value = Self;

    fn round_to_stored(&mut self) {
        if let Some(epoch) = postgres_epoch() {
            *self = whole_microseconds(
                *self,
                epoch,
                chrono::NaiveDateTime::signed_duration_since,
                chrono::NaiveDateTime::checked_add_signed,
            );
        }
    }
}

impl ColumnType for chrono::DateTime<chrono::Utc> {
    const SQL_TYPE: &'static str = "timestamptz";
    type Value = Self;

    fn round_to_stored(&mut self) {
        let mut utc = self.naive_utc();
        utc.round_to_stored();
        *self = utc.and_utc();
    }
}

impl ColumnType for chrono::NaiveTime {
    const SQL_TYPE: &'static str = "time";
    type Value = Self;

    fn round_to_stored(&mut self) {
        let midnight = chrono::NaiveTime::MIN;
        *self = whole_microseconds(*self, midnight, chrono::NaiveTime::signed_duration_since, |time, delta| {
            Some(time + delta)
        });
    }
}

/// A field stored as `jsonb`, serialized with serde.
///
/// Wrap any `Serialize + DeserializeOwned` type (that is also `Clone`,
/// `PartialEq` and `Debug`, like every field) to store it in one `jsonb` or
/// `json` column. It dereferences to the inner value, and a change to the
/// inner value is a change to the column:
///
/// ```
/// use orm_core::{Database, Entity, Json};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, Clone, PartialEq, Debug)]
/// struct Settings {
///     theme: String,
///     shortcuts: Vec<String>,
/// }
///
/// #[derive(Entity, Clone, Debug, PartialEq)]
/// struct Profile {
///     #[orm(primary_key)]
///     user: String,
///     settings: Json<Settings>,
/// }
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
/// # let test_db = orm_tests::TestDb::new().await;
/// # test_db.client().await.batch_execute("CREATE TABLE profile (\"user\" text PRIMARY KEY, settings jsonb NOT NULL)").await?;
/// # let db = Database::connect(test_db.url())?;
///
/// let mut session = db.session();
/// let settings = Json(Settings { theme: "dark".into(), shortcuts: vec![] });
/// session.add(Profile { user: "ann".into(), settings });
/// session.commit().await?;
///
/// let mut session = db.session();
/// let ann = session.get_one::<Profile>("ann".to_owned()).await?;
/// assert_eq!(ann.read().settings.theme, "dark"); // derefs to the inner value
/// ann.write().settings.shortcuts.push("ctrl-k".into());
/// session.commit().await?; // UPDATE profile SET settings = ...
///
/// let stored: serde_json::Value =
///     db.session().query_rows("SELECT settings FROM profile", &[]).await?[0].get(0);
/// assert_eq!(stored, serde_json::json!({ "theme": "dark", "shortcuts": ["ctrl-k"] }));
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Json<T>(pub T);

impl<T> Deref for Json<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> DerefMut for Json<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

impl<T: Serialize + std::fmt::Debug> ToSql for Json<T> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        postgres_types::Json(&self.0).to_sql(ty, out)
    }

    fn accepts(ty: &Type) -> bool {
        <postgres_types::Json<&T> as ToSql>::accepts(ty)
    }

    postgres_types::to_sql_checked!();
}

impl<'a, T: DeserializeOwned> FromSql<'a> for Json<T> {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn StdError + Sync + Send>> {
        postgres_types::Json::<T>::from_sql(ty, raw).map(|json| Json(json.0))
    }

    fn accepts(ty: &Type) -> bool {
        <postgres_types::Json<T> as FromSql>::accepts(ty)
    }
}

impl<T> ColumnType for Json<T>
where
    T: Serialize + DeserializeOwned + Clone + PartialEq + std::fmt::Debug + Send + Sync + 'static,
{
    const SQL_TYPE: &'static str = "jsonb";
    type Value = Self;
}

/// A boxed bind parameter: one value, or one array of a column's values.
pub type Param = Box<dyn ToSql + Sync + Send>;

/// Borrows boxed parameters the way tokio-postgres takes them.
pub(crate) fn param_refs(params: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect()
}

/// One array parameter made of several arrays of the same element type,
/// sent as their concatenation.
///
/// A flush binds a large batch a chunk of rows at a time, yielding to the
/// runtime between chunks (see `flush::plan::Binding`), and each chunk's
/// values are one array of the column's own type; this sends them as the
/// one array the statement takes, in order. Each chunk is encoded by its own
/// `ToSql`, so its type is checked as a whole array's would be, and only the
/// binary array framing (PostgreSQL's `array_send` format) is rewritten.
#[derive(Debug)]
pub(crate) struct ArrayChunks(pub(crate) Vec<Param>);

/// Bytes of a one-dimensional binary array's header: dimensions, NULL flag
/// and element OID, then the dimension's length and lower bound.
pub(crate) const ARRAY_HEADER: usize = 20;

impl ToSql for ArrayChunks {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        let Kind::Array(element) = ty.kind() else {
            return Err(format!("an array of rows cannot be sent as {ty}").into());
        };
        let start = out.len();
        out.put_i32(1);
        out.put_i32(0);
        out.put_u32(element.oid());
        out.put_i32(0);
        out.put_i32(1);
        let mut length: i32 = 0;
        let mut has_nulls = false;
        for (index, part) in self.0.iter().enumerate() {
            // Each chunk is encoded in place, its header over the last
            // bytes written so far (at least the array's own header),
            // which are put back once the header is read: a chunk costs
            // no copy of its elements, where a buffer of its own cost one
            // of the whole batch.
            let at = out.len() - ARRAY_HEADER;
            let mut covered = [0_u8; ARRAY_HEADER];
            covered.copy_from_slice(&out[at..]);
            out.truncate(at);
            if let IsNull::Yes = part.to_sql_checked(ty, out)? {
                return Err("a chunk of an array parameter encoded as NULL".into());
            }
            let mut header = &out[at..];
            let dimensions = header.try_get_i32()?;
            if dimensions == 0 {
                out.truncate(at);
                out.extend_from_slice(&covered);
                continue;
            }
            if dimensions != 1 || out.len() - at < ARRAY_HEADER {
                return Err("a chunk of an array parameter is not a one-dimensional array".into());
            }
            has_nulls |= header.try_get_i32()? != 0;
            header.advance(4);
            length = length.checked_add(header.try_get_i32()?).ok_or("an array parameter has too many elements")?;
            out[at..at + ARRAY_HEADER].copy_from_slice(&covered);
            if index == 0 {
                // Chunks are alike in size: room for all of them at once
                // rather than a copy of the whole at every doubling.
                out.reserve((out.len() - start - ARRAY_HEADER) * (self.0.len() - 1));
            }
        }
        out[start + 4..start + 8].copy_from_slice(&i32::from(has_nulls).to_be_bytes());
        out[start + 12..start + 16].copy_from_slice(&length.to_be_bytes());
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        // Each chunk checks the element type when it is encoded.
        matches!(ty.kind(), Kind::Array(_))
    }

    postgres_types::to_sql_checked!();
}

/// A parameter already encoded for the type its statement takes, so that
/// the driver, which encodes parameters in the poll that sends them, only
/// copies its bytes.
#[derive(Debug)]
pub(crate) struct Encoded {
    ty: Type,
    /// `None` for NULL.
    bytes: Option<BytesMut>,
}

/// Encoded parameters longer than this end a poll of the flush (see
/// `SessionConnection::run_batch`): 100,000 text values take milliseconds.
pub(crate) const YIELD_AFTER_BYTES: usize = 64 * 1024;

/// What the parameters of one batch are encoded into before each is split
/// off as an [`Encoded`]: they share its allocations, where a buffer of
/// their own each cost an allocation per parameter and, for an array of
/// keys, a reallocation every time it doubled.
pub(crate) struct EncodeBuffer {
    buffer: BytesMut,
}

impl EncodeBuffer {
    /// The first allocation: a request's statements' parameters, a few
    /// keys or an array of a page's keys, fit in it.
    const INITIAL_CAPACITY: usize = 1024;

    pub(crate) fn new() -> Self {
        EncodeBuffer { buffer: BytesMut::with_capacity(Self::INITIAL_CAPACITY) }
    }
}

impl Encoded {
    /// `param` encoded as `ty` into `buffer`, or `None` if it cannot be: it
    /// is then left to the driver, which fails its statement the way it
    /// always did.
    pub(crate) fn new(param: &Param, ty: &Type, buffer: &mut EncodeBuffer) -> Option<Encoded> {
        let written = param.to_sql_checked(ty, &mut buffer.buffer);
        // Only this parameter's bytes are in the buffer: the ones before
        // were split off.
        let bytes = buffer.buffer.split();
        match written {
            Ok(IsNull::No) => Some(Encoded { ty: ty.clone(), bytes: Some(bytes) }),
            Ok(IsNull::Yes) => Some(Encoded { ty: ty.clone(), bytes: None }),
            Err(_) => None,
        }
    }

    /// How many bytes it encoded to.
    pub(crate) fn len(&self) -> usize {
        self.bytes.as_ref().map_or(0, BytesMut::len)
    }
}

impl ToSql for Encoded {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        if *ty != self.ty {
            return Err(format!("a parameter encoded as {} cannot be sent as {ty}", self.ty).into());
        }
        match &self.bytes {
            Some(bytes) => {
                out.extend_from_slice(bytes);
                Ok(IsNull::No)
            }
            None => Ok(IsNull::Yes),
        }
    }

    fn accepts(_: &Type) -> bool {
        // Checked against the type it was encoded for, in `to_sql`.
        true
    }

    postgres_types::to_sql_checked!();
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `param` encoded as `ty`, which must not be NULL.
    pub(crate) fn encoded(param: &dyn ToSql, ty: &Type) -> BytesMut {
        let mut out = BytesMut::new();
        assert!(matches!(param.to_sql_checked(ty, &mut out).unwrap(), IsNull::No));
        out
    }

    #[test]
    fn array_chunks_encode_as_one_array() {
        let whole = vec![Some("a".to_owned()), None, Some("c".to_owned()), Some("d".to_owned())];
        let chunks = ArrayChunks(vec![
            Box::new(whole[..1].to_vec()),
            Box::new(Vec::<Option<String>>::new()),
            Box::new(whole[1..3].to_vec()),
            Box::new(whole[3..].to_vec()),
        ]);
        assert_eq!(encoded(&chunks, &Type::TEXT_ARRAY), encoded(&whole, &Type::TEXT_ARRAY));
        let numbers = ArrayChunks(vec![Box::new(vec![1_i64, 2]), Box::new(vec![3_i64])]);
        assert_eq!(encoded(&numbers, &Type::INT8_ARRAY), encoded(&vec![1_i64, 2, 3], &Type::INT8_ARRAY));
        // Empty chunks first and last, and chunks shorter than a header.
        let short = ArrayChunks(vec![
            Box::new(Vec::<i16>::new()),
            Box::new(vec![1_i16]),
            Box::new(vec![2_i16]),
            Box::new(Vec::<i16>::new()),
        ]);
        assert_eq!(encoded(&short, &Type::INT2_ARRAY), encoded(&vec![1_i16, 2], &Type::INT2_ARRAY));
        let none = ArrayChunks(vec![Box::new(Vec::<i16>::new()), Box::new(Vec::<i16>::new())]);
        let mut empty = encoded(&vec![0_i16], &Type::INT2_ARRAY);
        empty.truncate(ARRAY_HEADER);
        empty[12..16].copy_from_slice(&0_i32.to_be_bytes());
        assert_eq!(encoded(&none, &Type::INT2_ARRAY), empty);
    }

    #[test]
    fn array_chunks_check_the_element_type() {
        let chunks = ArrayChunks(vec![Box::new(vec![1_i64]), Box::new(vec![2_i64])]);
        assert!(chunks.to_sql_checked(&Type::TEXT_ARRAY, &mut BytesMut::new()).is_err());
        assert!(chunks.to_sql_checked(&Type::INT8, &mut BytesMut::new()).is_err());
    }
}
