//! How a state change is written to a changelog record: the key as the
//! record key, the value as the record value (none for a tombstone), and a
//! wall-clock deadline, if the key has one, in a header. The value is kept
//! as the plugin wrote it, so that other Kafka tools can read a changelog.

/// The header carrying a key's expiry, milliseconds since the Unix epoch,
/// as decimal text.
pub const EXPIRES_HEADER: &str = "weir.expires.ms";

/// The deadline a changelog record's expiry header carries, if it has a
/// valid one.
pub fn decode_expiry(header: Option<&[u8]>) -> Option<i64> {
    std::str::from_utf8(header?).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_headers_round_trip_and_bad_ones_are_ignored() {
        assert_eq!(
            decode_expiry(Some(b"1700000000123")),
            Some(1_700_000_000_123)
        );
        assert_eq!(decode_expiry(Some(b"soon")), None);
        assert_eq!(decode_expiry(None), None);
    }
}
