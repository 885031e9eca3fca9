//! The `time` crate's dates, times and timestamps as column types (feature
//! `time`), stored as chrono's are.

use time::{Date, Duration, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

use crate::types::ColumnType;

/// The driver's epoch for timestamps.
const EPOCH: PrimitiveDateTime = PrimitiveDateTime::new(
    match Date::from_ordinal_date(2000, 1) {
        Ok(date) => date,
        Err(_) => Date::MIN,
    },
    Time::MIDNIGHT,
);

/// `value` as the whole microseconds from `base` the driver sends
/// (truncated toward zero), turned back into a value.
fn whole_microseconds(value: PrimitiveDateTime, base: PrimitiveDateTime) -> PrimitiveDateTime {
    i64::try_from((value - base).whole_microseconds())
        .ok()
        .and_then(|micros| base.checked_add(Duration::microseconds(micros)))
        .unwrap_or(value)
}

impl ColumnType for PrimitiveDateTime {
    const SQL_TYPE: &'static str = "timestamp";
    type Value = Self;

    fn round_to_stored(&mut self) {
        *self = whole_microseconds(*self, EPOCH);
    }
}

impl ColumnType for OffsetDateTime {
    const SQL_TYPE: &'static str = "timestamptz";
    type Value = Self;

    /// Also moves the value to UTC, the offset it is read back with (the
    /// same instant, so equal either way).
    fn round_to_stored(&mut self) {
        let utc = self.to_offset(UtcOffset::UTC);
        *self = whole_microseconds(PrimitiveDateTime::new(utc.date(), utc.time()), EPOCH).assume_utc();
    }
}

impl ColumnType for Date {
    const SQL_TYPE: &'static str = "date";
    type Value = Self;
}

impl ColumnType for Time {
    const SQL_TYPE: &'static str = "time";
    type Value = Self;

    fn round_to_stored(&mut self) {
        let micros = self.nanosecond() / 1_000 * 1_000;
        *self = self.replace_nanosecond(micros).unwrap_or(*self);
    }
}
