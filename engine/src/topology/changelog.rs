//! A stage's changelog: the compacted topic its keyed state is written to
//! and restored from.
//!
//! Partition p of the changelog holds the state of input partition p (of
//! every input: keyed state is scoped by partition number). Changes are not
//! written as they happen: each partition's changed keys are taken every
//! commit interval ([`crate::state::StateStore::take_changes`]), so a hot
//! key costs one record per interval, and written as one *flush*.
//!
//! Ordering is what makes this at-least-once without losing an answer:
//! 1. A flush is taken: the changed keys with their values now, and for
//!    each input partition the last message whose effects they include.
//! 2. It is written only once every record those messages produced is
//!    acknowledged. A plugin that drops a message it has seen before (by
//!    an id it keeps in state) must never find a message in the changelog
//!    whose output was lost.
//! 3. Once the broker has acknowledged all of the flush, those messages'
//!    offsets may be stored ([`Ledger::set_durable`]).
//!
//! After a crash, the state restored is that of a flush, and the messages
//! after it are consumed again from the last commit; those between the
//! commit and the flush find their own effects already in the state.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError as RdKafkaError;
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::BaseRecord;
use rdkafka::{Message, Offset, TopicPartitionList};

use super::ack::{Ledger, Tag};
use crate::state::{Change, EXPIRES_HEADER, Scope, StateStore, decode_expiry};

/// The topic settings weir creates a changelog with. Compaction keeps the
/// latest value of each key; `delete` with unlimited retention deletes
/// nothing by age or size but lets a replay delete the records before it.
pub const TOPIC_CONFIG: &[(&str, &str)] = &[
    ("cleanup.policy", "compact,delete"),
    ("retention.ms", "-1"),
    ("retention.bytes", "-1"),
];

/// One flush of a partition's changes.
#[derive(Debug)]
struct Flush {
    seq: u64,
    /// (ledger slot, last offset) of every input partition it covers.
    marks: Vec<(u32, i64)>,
    /// The changes, until written; then how many are unacknowledged.
    state: FlushState,
}

#[derive(Debug)]
enum FlushState {
    Waiting(Vec<Change>),
    Sent { left: usize },
}

#[derive(Debug, Default)]
struct Part {
    next_seq: u64,
    flush: Option<Flush>,
    /// A flush is due (the interval ran out while one was in flight).
    due: bool,
    /// The changelog's end after the last record this process wrote or
    /// read: a partition that comes back with the changelog still there
    /// has nothing to restore.
    end: i64,
}

/// The flush state of a stage's owned partitions.
#[derive(Debug)]
pub struct Changelog {
    pub topic: String,
    stage: std::sync::Arc<str>,
    interval: Duration,
    next_tick: Instant,
    parts: BTreeMap<i32, Part>,
    /// Partitions revoked but not yet known to be gone, with the end their
    /// changelog had: if one is assigned back with the same end, its state
    /// in memory is still right.
    suspended: HashMap<i32, i64>,
    /// Records written, for metrics.
    pub written: u64,
}

/// What went wrong writing a changelog.
#[derive(Debug, thiserror::Error)]
#[error("cannot write keyed state to the changelog topic {topic}: {source}")]
pub struct ChangelogError {
    pub topic: String,
    #[source]
    pub source: RdKafkaError,
}

impl Changelog {
    pub fn new(topic: String, stage: &str, interval: Duration) -> Self {
        Changelog {
            topic,
            stage: stage.into(),
            interval,
            next_tick: Instant::now() + interval,
            parts: BTreeMap::new(),
            suspended: HashMap::new(),
            written: 0,
        }
    }

    fn scope(&self, partition: i32) -> Scope {
        Scope {
            stage: self.stage.clone(),
            partition,
        }
    }

    /// The partitions whose state this process holds and keeps in the
    /// changelog.
    pub fn owned(&self) -> impl Iterator<Item = i32> + '_ {
        self.parts.keys().copied()
    }

    pub fn owns(&self, partition: i32) -> bool {
        self.parts.contains_key(&partition)
    }

    /// A partition restored (or kept) with the changelog at `end`.
    pub fn adopt(&mut self, partition: i32, end: i64) {
        self.suspended.remove(&partition);
        self.parts.insert(
            partition,
            Part {
                end,
                ..Part::default()
            },
        );
    }

    /// Whether a partition assigned again still has the state this process
    /// left it with, the changelog's end being `end` now.
    pub fn still_current(&self, partition: i32, end: i64) -> bool {
        self.suspended.get(&partition) == Some(&end)
    }

    /// A revoked partition: its state is kept in memory in case it comes
    /// back unchanged, unless `lost` (another process may already be
    /// writing it).
    pub fn release(&mut self, store: &dyn StateStore, partition: i32, lost: bool) {
        let part = self.parts.remove(&partition);
        match part {
            Some(p) if !lost && p.flush.is_none() && !store.has_changes(&self.scope(partition)) => {
                self.suspended.insert(partition, p.end);
            }
            _ => store.drop_partition(&self.scope(partition)),
        }
    }

    /// Drops the state of revoked partitions that were not assigned back
    /// (`assigned` is the whole assignment now).
    pub fn drop_suspended(&mut self, store: &dyn StateStore, assigned: &BTreeSet<i32>) {
        let gone: Vec<i32> = self
            .suspended
            .keys()
            .copied()
            .filter(|p| !assigned.contains(p))
            .collect();
        for partition in gone {
            self.suspended.remove(&partition);
            store.drop_partition(&self.scope(partition));
        }
    }

    /// Forgets whether a partition's state in memory is current: it is
    /// being restored from the changelog.
    pub fn forget_suspended(&mut self, partition: i32) {
        self.suspended.remove(&partition);
    }

    /// Whether any flush is taken and not yet acknowledged, or changes wait.
    pub fn pending(&self, store: &dyn StateStore, partitions: Option<&[i32]>) -> bool {
        self.parts
            .iter()
            .filter(|(p, _)| partitions.is_none_or(|ps| ps.contains(p)))
            .any(|(&p, part)| part.flush.is_some() || store.has_changes(&self.scope(p)))
    }

    /// Takes and writes flushes: every partition when the interval has run
    /// out, or `force`d ones (revoked, stopping) at once. `send` enqueues a
    /// record.
    pub fn step(
        &mut self,
        ledger: &mut Ledger,
        store: &dyn StateStore,
        force: Option<&[i32]>,
        mut send: impl FnMut(BaseRecord<'_, [u8], [u8], usize>) -> Result<(), RdKafkaError>,
    ) -> Result<(), ChangelogError> {
        let now = Instant::now();
        let tick = now >= self.next_tick;
        if tick {
            self.next_tick = now + self.interval;
        }
        for (&partition, part) in self.parts.iter_mut() {
            let forced = force.is_some_and(|ps| ps.contains(&partition));
            part.due |= tick || forced;
            if part.due && part.flush.is_none() {
                part.due = false;
                let scope = Scope {
                    stage: self.stage.clone(),
                    partition,
                };
                let marks = ledger.marks(partition);
                let changes = store.take_changes(&scope);
                if changes.is_empty() {
                    // Nothing changed: the messages wait only for their
                    // own records.
                    for &(slot, offset) in &marks {
                        ledger.set_durable(slot, offset);
                    }
                    continue;
                }
                part.flush = Some(Flush {
                    seq: part.next_seq,
                    marks,
                    state: FlushState::Waiting(changes),
                });
                part.next_seq += 1;
            }
            let Some(flush) = &mut part.flush else {
                continue;
            };
            let FlushState::Waiting(changes) = &flush.state else {
                continue;
            };
            if !flush
                .marks
                .iter()
                .all(|&(slot, offset)| ledger.acked_through(slot, offset))
            {
                continue;
            }
            let tag = Tag::changelog(partition, flush.seq);
            for change in changes {
                send(record(&self.topic, partition, tag, change)).map_err(|source| {
                    ChangelogError {
                        topic: self.topic.clone(),
                        source,
                    }
                })?;
            }
            self.written += changes.len() as u64;
            flush.state = FlushState::Sent {
                left: changes.len(),
            };
        }
        Ok(())
    }

    /// Takes the changes of `partitions` and sends them at once (under
    /// exactly-once, where the transaction orders them with the outputs).
    pub fn write_all(
        &mut self,
        store: &dyn StateStore,
        partitions: &[i32],
        mut send: impl FnMut(BaseRecord<'_, [u8], [u8], usize>) -> Result<(), RdKafkaError>,
    ) -> Result<(), RdKafkaError> {
        for &partition in partitions {
            let changes = store.take_changes(&self.scope(partition));
            let tag = Tag::changelog(partition, 0);
            for change in &changes {
                send(record(&self.topic, partition, tag, change))?;
            }
            self.written += changes.len() as u64;
        }
        Ok(())
    }

    /// One changelog record acknowledged at `offset`.
    pub fn ack(&mut self, ledger: &mut Ledger, tag: Tag, offset: i64) {
        let partition = tag.slot() as i32;
        let Some(part) = self.parts.get_mut(&partition) else {
            return;
        };
        part.end = part.end.max(offset + 1);
        let Some(flush) = &mut part.flush else {
            return;
        };
        if (flush.seq & ((1 << 46) - 1)) as i64 != tag.offset() {
            return;
        }
        if let FlushState::Sent { left } = &mut flush.state {
            *left = left.saturating_sub(1);
            if *left == 0 {
                for &(slot, offset) in &flush.marks {
                    ledger.set_durable(slot, offset);
                }
                part.flush = None;
            }
        }
    }
}

/// The changelog record of one change.
fn record<'a>(
    topic: &'a str,
    partition: i32,
    tag: Tag,
    change: &'a Change,
) -> BaseRecord<'a, [u8], [u8], usize> {
    let mut record = BaseRecord::with_opaque_to(topic, tag.word())
        .partition(partition)
        .key(change.key.as_slice());
    if let Some(value) = &change.value {
        record = record.payload(value.as_slice());
    }
    if let Some(at) = change.expires_at_ms {
        let at = at.to_string();
        record = record.headers(OwnedHeaders::new().insert(Header {
            key: EXPIRES_HEADER,
            value: Some(at.as_str()),
        }));
    }
    record
}

/// What a restore read.
#[derive(Debug, Default, Clone, Copy)]
pub struct Restored {
    pub records: u64,
    /// Where each partition's changelog ended.
    pub partitions: usize,
}

/// Reads changelog partitions into `store`, from their beginning to their
/// end as of now (`partitions` gives each one's low and high watermarks), calling `between` about every 100 ms so the caller can
/// keep its group membership alive and learn of partitions revoked
/// meanwhile (it returns the partitions to give up).
pub fn restore(
    consumer: &BaseConsumer,
    topic: &str,
    stage: &str,
    partitions: &BTreeMap<i32, (i64, i64)>,
    store: &dyn StateStore,
    mut between: impl FnMut() -> Vec<i32>,
) -> Result<Restored, RdKafkaError> {
    // A partition with nothing in it (never written, or emptied by a
    // replay) is not read at all.
    let mut remaining: BTreeMap<i32, i64> = partitions
        .iter()
        .filter(|(_, (low, high))| high > low)
        .map(|(p, (_, high))| (*p, *high))
        .collect();
    let mut restored = Restored {
        records: 0,
        partitions: partitions.len(),
    };
    if remaining.is_empty() {
        return Ok(restored);
    }
    let mut tpl = TopicPartitionList::new();
    for &p in remaining.keys() {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let stage: std::sync::Arc<str> = stage.into();
    let mut last_check = Instant::now();
    while !remaining.is_empty() {
        if last_check.elapsed() >= Duration::from_millis(100) {
            last_check = Instant::now();
            for p in between() {
                remaining.remove(&p);
            }
            continue;
        }
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(m)) => {
                let partition = m.partition();
                if !remaining.contains_key(&partition) {
                    continue;
                }
                if let Some(key) = m.key() {
                    let expires_at_ms = m.headers().and_then(|h| {
                        h.iter()
                            .find(|h| h.key == EXPIRES_HEADER)
                            .and_then(|h| decode_expiry(h.value))
                    });
                    store.restore(
                        &Scope {
                            stage: stage.clone(),
                            partition,
                        },
                        Change {
                            key: key.to_vec(),
                            value: m.payload().map(<[u8]>::to_vec),
                            expires_at_ms,
                        },
                    );
                    restored.records += 1;
                }
                if remaining
                    .get(&partition)
                    .is_some_and(|end| m.offset() + 1 >= *end)
                {
                    remaining.remove(&partition);
                }
            }
            Some(Err(RdKafkaError::PartitionEOF(p))) => {
                remaining.remove(&p);
            }
            Some(Err(e)) => return Err(e),
        }
    }
    let _ = consumer.unassign();
    Ok(restored)
}

/// The changelog topics of a pipeline's stages with `state = "changelog"`,
/// as weir creates them when missing: as many partitions as the stage's
/// inputs have (`layout` gives a topic's partitions and replicas, `None`
/// if unknown; one partition if no input is known), and the inputs'
/// replication.
pub fn topics(
    config: &crate::config::PipelineConfig,
    layout: &dyn Fn(&str) -> Option<(i32, i32)>,
) -> Vec<crate::config::TopicConfig> {
    config
        .stages
        .iter()
        .filter(|s| s.state == crate::config::StateBackend::Changelog)
        .map(|s| {
            let (partitions, replication) = s
                .inputs
                .iter()
                .filter_map(|t| layout(t))
                .max()
                .unwrap_or((1, 1));
            crate::config::TopicConfig {
                name: config.kafka.changelog_topic(&s.name),
                partitions: Some(partitions),
                replication_factor: replication,
                config: TOPIC_CONFIG
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            }
        })
        .collect()
}

/// Checks that every stage with keyed state has co-partitioned inputs and
/// creates the missing changelog topics (`embedded`: the development
/// broker, whose topics `weir run` creates through its own API).
pub async fn ensure(
    clients: &crate::kafka::KafkaClients,
    config: &crate::config::PipelineConfig,
    embedded: bool,
) -> Result<(), super::TopologyError> {
    let inputs: Vec<String> = config
        .stages
        .iter()
        .flat_map(|s| s.inputs.iter().cloned())
        .collect();
    // Topics created a moment ago may not be in the metadata yet: wait a
    // little for every input, then go by what pipeline.toml declares.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut layouts = loop {
        let clients = clients.clone();
        let wanted = inputs.clone();
        let layouts =
            tokio::task::spawn_blocking(move || crate::kafka::topic_layouts(&clients, &wanted))
                .await
                .map_err(|e| super::TopologyError::StageFailed {
                    stage: "*".into(),
                    reason: e.to_string(),
                })??;
        if inputs.iter().all(|t| layouts.contains_key(t)) || std::time::Instant::now() >= deadline {
            break layouts;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for t in &config.topics {
        if let Some(p) = t.partitions {
            layouts
                .entry(t.name.clone())
                .or_insert((p, t.replication_factor.max(1)));
        }
    }
    crate::config::check_copartitioned(config, &|t| layouts.get(t).map(|l| l.0))?;
    if embedded {
        return Ok(());
    }
    let wanted = topics(config, &|t| layouts.get(t).copied());
    crate::kafka::ensure_topics(clients, &wanted).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{MemoryState, StateStore};

    fn store() -> std::sync::Arc<MemoryState> {
        let s = std::sync::Arc::new(MemoryState::default());
        s.track_changes("inventory");
        s
    }

    fn scope(p: i32) -> Scope {
        Scope {
            stage: "inventory".into(),
            partition: p,
        }
    }

    /// A record that would have been sent: partition, key, value, opaque.
    type Sent = (i32, Vec<u8>, Option<Vec<u8>>, usize);

    /// Enqueues nothing; collects what would be sent.
    fn collect(
        into: &mut Vec<Sent>,
    ) -> impl FnMut(BaseRecord<'_, [u8], [u8], usize>) -> Result<(), RdKafkaError> + '_ {
        move |r| {
            into.push((
                r.partition.unwrap(),
                r.key.unwrap().to_vec(),
                r.payload.map(<[u8]>::to_vec),
                r.delivery_opaque,
            ));
            Ok(())
        }
    }

    #[test]
    fn a_flush_is_written_after_its_outputs_and_stores_offsets_once_acknowledged() {
        let store = store();
        let mut ledger = Ledger::holding();
        let mut c = Changelog::new(
            "app-inventory-changelog".into(),
            "inventory",
            Duration::ZERO,
        );
        c.adopt(0, 0);
        let slot = ledger.slot("orders", 0, 10);
        // Offset 10 produced one answer, still in flight; it reserved stock.
        ledger.push(slot, 10, 1);
        store.set(&scope(0), b"stock", b"299", None);
        let mut sent = Vec::new();
        c.step(&mut ledger, &*store, None, collect(&mut sent))
            .unwrap();
        assert!(sent.is_empty(), "the answer is not acknowledged yet");
        // Later writes do not leak into the flush already taken.
        store.set(&scope(0), b"stock", b"298", None);
        ledger.ack(Tag::new(slot, 10, false));
        c.step(&mut ledger, &*store, None, collect(&mut sent))
            .unwrap();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].0, 0);
        assert_eq!(sent[0].2.as_deref(), Some(&b"299"[..]));
        let mut stored = Vec::new();
        ledger.advance(|_, _, o, _| stored.push(o));
        assert!(stored.is_empty(), "the flush is not acknowledged yet");
        c.ack(&mut ledger, Tag::from_word(sent[0].3), 41);
        ledger.advance(|_, _, o, _| stored.push(o));
        assert_eq!(stored, vec![10]);
        // The second write goes in the next flush.
        assert!(c.pending(&*store, None));
        sent.clear();
        c.step(&mut ledger, &*store, None, collect(&mut sent))
            .unwrap();
        assert_eq!(sent[0].2.as_deref(), Some(&b"298"[..]));
    }

    #[test]
    fn a_partition_that_changed_nothing_stores_its_offsets_without_a_flush() {
        let store = store();
        let mut ledger = Ledger::holding();
        let mut c = Changelog::new("t".into(), "inventory", Duration::ZERO);
        c.adopt(1, 0);
        let slot = ledger.slot("orders", 1, 0);
        ledger.push(slot, 0, 0);
        let mut sent = Vec::new();
        c.step(&mut ledger, &*store, None, collect(&mut sent))
            .unwrap();
        assert!(sent.is_empty());
        let mut stored = Vec::new();
        ledger.advance(|_, _, o, _| stored.push(o));
        assert_eq!(stored, vec![0]);
    }

    #[test]
    fn a_revoked_partition_is_kept_only_if_it_comes_back_unchanged() {
        let store = store();
        let mut c = Changelog::new("t".into(), "inventory", Duration::from_secs(60));
        c.adopt(0, 5);
        c.adopt(1, 7);
        store.set(&scope(0), b"k", b"v", None);
        store.set(&scope(1), b"k", b"v", None);
        let _ = store.take_changes(&scope(0));
        let _ = store.take_changes(&scope(1));
        c.release(&*store, 0, false);
        c.release(&*store, 1, true);
        assert!(c.still_current(0, 5));
        assert!(!c.still_current(0, 6), "someone wrote to it meanwhile");
        assert!(store.get(&scope(0), b"k").is_some());
        assert_eq!(
            store.get(&scope(1), b"k"),
            None,
            "a lost partition is dropped"
        );
        c.drop_suspended(&*store, &BTreeSet::new());
        assert_eq!(store.get(&scope(0), b"k"), None);
    }
}
