//! Time in the domain: microseconds since the Unix epoch, converted from and to protobuf.

use prost_types::Timestamp;

/// Microseconds since the Unix epoch, UTC.
pub type Micros = i64;

pub fn from_timestamp(timestamp: &Timestamp) -> Micros {
    timestamp.seconds.saturating_mul(1_000_000) + i64::from(timestamp.nanos / 1_000)
}

pub fn to_timestamp(micros: Micros) -> Timestamp {
    Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1_000) as i32,
    }
}

/// A timestamp field's value, or `default` when unset.
pub(crate) fn or_default(timestamp: Option<&Timestamp>, default: Micros) -> Micros {
    timestamp.map_or(default, from_timestamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_at_microsecond_precision() {
        for micros in [0, 1, 1_764_000_000_123_456, -1_500_000] {
            assert_eq!(from_timestamp(&to_timestamp(micros)), micros);
        }
    }
}
