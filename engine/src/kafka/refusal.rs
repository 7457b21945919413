//! Telling a record the broker will never take from a platform that is
//! failing.
//!
//! The producer is idempotent with an unbounded `message.timeout.ms`, so
//! librdkafka retries every retriable error itself, in order, for as long
//! as it takes: a delivery report with an error is final. What is left to
//! decide is whose fault it is. A record refused for what it is (too large,
//! invalid for a compacted topic) is a message failure, handled like any
//! other by the stage's `on_error`. Anything else (authorization, a topic
//! that is gone, a fatal producer state, a timeout the user configured) is
//! the platform failing: it is never skipped or dead-lettered silently,
//! because every record after it would meet the same fate.

use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

/// Whose fault a final produce error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The broker refuses this record and would refuse it again.
    Record,
    /// The record is too large for the producer or the topic: a dead
    /// letter can still go out without its value.
    TooLarge,
    /// The destination or the client is failing, whatever the record.
    Platform,
}

impl Refusal {
    pub fn of(error: &KafkaError) -> Refusal {
        match error.rdkafka_error_code() {
            Some(code) => Refusal::of_code(code),
            None => Refusal::Platform,
        }
    }

    pub fn of_code(code: RDKafkaErrorCode) -> Refusal {
        use RDKafkaErrorCode as C;
        match code {
            C::MessageSizeTooLarge | C::MessageBatchTooLarge | C::InvalidMessageSize => {
                Refusal::TooLarge
            }
            // A null key on a compacted topic, a timestamp out of the
            // topic's range, a record the broker cannot parse.
            C::InvalidRecord | C::InvalidTimestamp | C::InvalidMessage => Refusal::Record,
            _ => Refusal::Platform,
        }
    }

    /// A refusal for what the record is, not where it goes.
    pub fn is_the_records(self) -> bool {
        self != Refusal::Platform
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::types::RDKafkaErrorCode as C;

    #[test]
    fn size_and_validity_are_the_records_fault_and_the_rest_the_platforms() {
        assert_eq!(Refusal::of_code(C::MessageSizeTooLarge), Refusal::TooLarge);
        assert_eq!(Refusal::of_code(C::InvalidRecord), Refusal::Record);
        for code in [
            C::TopicAuthorizationFailed,
            C::UnknownTopicOrPartition,
            C::UnknownTopic,
            C::Fatal,
            C::MessageTimedOut,
            C::OutOfOrderSequenceNumber,
        ] {
            assert_eq!(Refusal::of_code(code), Refusal::Platform, "{code:?}");
        }
        let local = KafkaError::MessageProduction(C::MessageSizeTooLarge);
        assert!(Refusal::of(&local).is_the_records());
        assert!(!Refusal::of(&KafkaError::Canceled).is_the_records());
    }
}
