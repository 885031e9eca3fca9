//! The `time` crate's dates, times and timestamps as column types (feature
//! `time`), stored as chrono's are.

use time::{Date, Duration, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

use crate::array::{
    write_date_element, write_time_element, write_timestamp_element, ArrayElement, DateParts, TimeParts,
};
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

impl From<Date> for DateParts {
    fn from(date: Date) -> Self {
        DateParts { year: date.year(), month: u32::from(u8::from(date.month())), day: u32::from(date.day()) }
    }
}

impl From<Time> for TimeParts {
    fn from(time: Time) -> Self {
        TimeParts {
            hour: u32::from(time.hour()),
            minute: u32::from(time.minute()),
            second: u32::from(time.second()),
            microsecond: time.microsecond(),
        }
    }
}

impl ArrayElement for Date {
    fn write_element(&self, out: &mut String) {
        write_date_element(out, &(*self).into());
    }
}

impl ArrayElement for Time {
    fn write_element(&self, out: &mut String) {
        let mut stored = *self;
        stored.round_to_stored();
        write_time_element(out, &stored.into());
    }
}

impl ArrayElement for PrimitiveDateTime {
    fn write_element(&self, out: &mut String) {
        let mut stored = *self;
        stored.round_to_stored();
        write_timestamp_element(out, &stored.date().into(), &stored.time().into(), "");
    }
}

impl ArrayElement for OffsetDateTime {
    /// In UTC with an explicit offset, as chrono's `DateTime<Utc>`, so the
    /// session's `TimeZone` setting does not matter.
    fn write_element(&self, out: &mut String) {
        let mut stored = *self;
        stored.round_to_stored();
        write_timestamp_element(out, &stored.date().into(), &stored.time().into(), "+00");
    }
}
