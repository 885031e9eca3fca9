//! [`Interval`]: a PostgreSQL `interval`, field for field.

use std::error::Error as StdError;

use bytes::{Buf, BufMut, BytesMut};
use postgres_types::{accepts, to_sql_checked, FromSql, IsNull, ToSql, Type};

use crate::types::ColumnType;

/// A PostgreSQL `interval`: months, days and microseconds, kept apart as
/// PostgreSQL keeps them, because none converts exactly into another (a
/// month is 28 to 31 days, a day 23 to 25 hours across a daylight saving
/// change). `'1 mon 2 days 03:00:00'` is `Interval { months: 1, days: 2,
/// microseconds: 3 * 3_600_000_000 }`.
///
/// ```
/// use orm_core::{Database, Entity, Interval};
///
/// #[derive(Entity, Clone, Debug, PartialEq)]
/// struct Plan {
///     #[orm(primary_key)]
///     name: String,
///     billed_every: Interval,
/// }
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
/// # let test_db = orm_tests::TestDb::new().await;
/// # test_db.client().await.batch_execute("CREATE TABLE plan (name text PRIMARY KEY, billed_every interval NOT NULL)").await?;
/// # let db = Database::connect(test_db.url())?;
/// let mut session = db.session();
/// session.add(Plan { name: "monthly".into(), billed_every: Interval::months(1) });
/// session.commit().await?;
/// let text: String = db.session().query_rows("SELECT billed_every::text FROM plan", &[]).await?[0].get(0);
/// assert_eq!(text, "1 mon");
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Interval {
    /// Whole months (a year is 12).
    pub months: i32,
    /// Whole days.
    pub days: i32,
    /// The rest, in microseconds.
    pub microseconds: i64,
}

impl Interval {
    /// An interval of `months` months.
    pub fn months(months: i32) -> Self {
        Interval { months, ..Interval::default() }
    }

    /// An interval of `days` days.
    pub fn days(days: i32) -> Self {
        Interval { days, ..Interval::default() }
    }

    /// An interval of `microseconds` microseconds.
    pub fn microseconds(microseconds: i64) -> Self {
        Interval { microseconds, ..Interval::default() }
    }
}

impl ToSql for Interval {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        // PostgreSQL's binary form: time, then days, then months.
        out.put_i64(self.microseconds);
        out.put_i32(self.days);
        out.put_i32(self.months);
        Ok(IsNull::No)
    }

    accepts!(INTERVAL);
    to_sql_checked!();
}

impl<'a> FromSql<'a> for Interval {
    fn from_sql(_: &Type, mut raw: &'a [u8]) -> Result<Self, Box<dyn StdError + Sync + Send>> {
        if raw.len() != 16 {
            return Err(format!("an interval is 16 bytes, not {}", raw.len()).into());
        }
        let microseconds = raw.get_i64();
        let days = raw.get_i32();
        let months = raw.get_i32();
        Ok(Interval { months, days, microseconds })
    }

    accepts!(INTERVAL);
}

impl ColumnType for Interval {
    const SQL_TYPE: &'static str = "interval";
    type Value = Self;
}
