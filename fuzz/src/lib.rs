//! What the fuzz targets share: the checks every accepted event must pass on its way to
//! storage (`intake`), the checks every planned query must pass (`planning`), and the
//! differential harness that answers one query on every path and tier (`differential`).
//!
//! The checks panic with a message naming the broken rule: libFuzzer records a panic as a
//! crash, with the input that caused it.

pub mod differential;
pub mod intake;
pub mod planning;

/// The fixed instant the targets receive events and plan queries at, so a crash input
/// replays the same way on any day. Its nanoseconds are not a whole millisecond, as a
/// server's clock reading is not.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    use chrono::TimeZone;
    chrono::Utc
        .with_ymd_and_hms(2026, 11, 21, 12, 0, 0)
        .single()
        .expect("a valid instant")
        + chrono::Duration::nanoseconds(123_456_789)
}
