//! Who in a consumer group holds a partition, from the group's own
//! description: answers "which process serves this state?".

use std::time::Duration;

use rdkafka::consumer::Consumer;

use super::client::{KafkaClients, KafkaError};

/// A member of a consumer group, as the coordinator describes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Member {
    pub client_id: String,
    /// The address the broker sees it connect from.
    pub host: String,
}

/// The member of `group` whose assignment holds partition `partition` of
/// any of its topics, if the group knows one.
pub fn partition_owner(
    clients: &KafkaClients,
    group: &str,
    partition: i32,
) -> Result<Option<Member>, KafkaError> {
    let consumer = clients.fetcher()?;
    let list = consumer
        .client()
        .fetch_group_list(Some(group), Duration::from_secs(5))
        .map_err(|source| KafkaError::Metadata {
            bootstrap: clients.bootstrap.clone(),
            source,
        })?;
    Ok(list
        .groups()
        .iter()
        .flat_map(|g| g.members())
        .find(|m| {
            m.assignment()
                .and_then(assigned_partitions)
                .is_some_and(|ps| ps.contains(&partition))
        })
        .map(|m| Member {
            client_id: m.client_id().to_string(),
            host: m.client_host().trim_start_matches('/').to_string(),
        }))
}

/// The partition numbers in a consumer-protocol assignment (version,
/// then per topic its name and partitions, then user data); `None` if it
/// is not one.
fn assigned_partitions(bytes: &[u8]) -> Option<Vec<i32>> {
    let mut r = Reader(bytes);
    let _version = r.i16()?;
    let topics = r.i32()?;
    let mut out = Vec::new();
    for _ in 0..topics.max(0) {
        let len = r.i16()?;
        r.take(len.max(0) as usize)?;
        let n = r.i32()?;
        for _ in 0..n.max(0) {
            out.push(r.i32()?);
        }
    }
    Some(out)
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }

    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_consumer_protocol_assignment_is_read() {
        let mut b = vec![0, 1]; // version 1
        b.extend(2i32.to_be_bytes());
        for (topic, parts) in [("orders", &[0i32, 2][..]), ("returns", &[0i32, 2][..])] {
            b.extend((topic.len() as i16).to_be_bytes());
            b.extend(topic.as_bytes());
            b.extend((parts.len() as i32).to_be_bytes());
            for p in parts {
                b.extend(p.to_be_bytes());
            }
        }
        b.extend((-1i32).to_be_bytes()); // no user data
        assert_eq!(assigned_partitions(&b), Some(vec![0, 2, 0, 2]));
        assert_eq!(assigned_partitions(&b[..9]), None);
        assert_eq!(assigned_partitions(&[]), None);
    }
}
