//! Conversions between chrono times and protobuf timestamps, and from protobuf durations.

use chrono::{DateTime, Utc};

pub fn to_timestamp(time: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// `None` for a timestamp outside chrono's range or with invalid nanoseconds.
pub fn from_timestamp(timestamp: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    let nanos = u32::try_from(timestamp.nanos).ok()?;
    DateTime::from_timestamp(timestamp.seconds, nanos)
}

/// A non-negative protobuf duration as a `std::time::Duration`; `None` for a negative one or
/// invalid nanoseconds. (prost-types' own conversion negates `i64::MIN` and panics.)
pub fn from_duration(duration: &prost_types::Duration) -> Option<std::time::Duration> {
    let seconds = u64::try_from(duration.seconds).ok()?;
    let nanos = u32::try_from(duration.nanos)
        .ok()
        .filter(|nanos| *nanos < 1_000_000_000)?;
    Some(std::time::Duration::new(seconds, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_non_negative_well_formed_durations_convert() {
        let duration = |seconds, nanos| prost_types::Duration { seconds, nanos };
        assert_eq!(from_duration(&duration(90, 5)), Some(std::time::Duration::new(90, 5)));
        assert_eq!(from_duration(&duration(i64::MIN, 0)), None);
        assert_eq!(from_duration(&duration(-1, 0)), None);
        assert_eq!(from_duration(&duration(1, -1)), None);
        assert_eq!(from_duration(&duration(1, 1_000_000_000)), None);
    }

    #[test]
    fn timestamps_round_trip() {
        let now = Utc::now();
        assert_eq!(from_timestamp(&to_timestamp(now)), Some(now));
        assert_eq!(from_timestamp(&prost_types::Timestamp { seconds: 0, nanos: -1 }), None);
    }
}
