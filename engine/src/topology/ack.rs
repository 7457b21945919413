//! Storing input offsets only once everything derived from them is
//! acknowledged by the broker.
//!
//! Every record a stage produces carries a [`Tag`] naming the input message
//! it came from. The producer's delivery callback queues the tag in
//! [`Deliveries`]; the stage thread drains the queue into its [`Ledger`],
//! which counts, per input partition and in offset order, the records each
//! input message still waits for. An offset is stored for commit only when
//! it and every earlier offset of its partition have nothing outstanding:
//! at-least-once, with no per-record allocation or channel.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rdkafka::ClientContext;
use rdkafka::message::OwnedMessage;
use rdkafka::producer::{DeliveryResult, ProducerContext};

use super::budget::Budget;

/// A stage's producer: its delivery reports go to the stage's [`Deliveries`].
pub type StageProducer = rdkafka::producer::ThreadedProducer<Deliveries>;

/// Which input message a produced record derives from, packed into the
/// producer's per-record opaque word: a ledger slot (one per input
/// partition), the input offset, and whether the record is a dead letter.
/// A changelog record's tag names instead its changelog partition and the
/// flush it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag(usize);

const OFFSET_BITS: u32 = 46;
const SLOT_BITS: u32 = 16;
const CHANGELOG_BIT: usize = 1 << (OFFSET_BITS + SLOT_BITS);
const DEAD_LETTER_BIT: usize = 1 << (OFFSET_BITS + SLOT_BITS + 1);
const MAX_SLOTS: usize = 1 << SLOT_BITS;

impl Tag {
    pub fn new(slot: u32, offset: i64, dead_letter: bool) -> Tag {
        debug_assert!((0..1 << OFFSET_BITS).contains(&offset));
        let mut word =
            ((slot as usize) << OFFSET_BITS) | (offset as usize & ((1 << OFFSET_BITS) - 1));
        if dead_letter {
            word |= DEAD_LETTER_BIT;
        }
        Tag(word)
    }

    /// A record of flush `seq` to changelog partition `partition`.
    pub fn changelog(partition: i32, seq: u64) -> Tag {
        let mut tag = Tag::new(
            partition as u32,
            (seq & ((1 << OFFSET_BITS) - 1)) as i64,
            false,
        );
        tag.0 |= CHANGELOG_BIT;
        tag
    }

    pub fn is_changelog(self) -> bool {
        self.0 & CHANGELOG_BIT != 0
    }

    pub fn slot(self) -> u32 {
        ((self.0 >> OFFSET_BITS) & (MAX_SLOTS - 1)) as u32
    }

    pub fn offset(self) -> i64 {
        (self.0 & ((1 << OFFSET_BITS) - 1)) as i64
    }

    pub fn dead_letter(self) -> bool {
        self.0 & DEAD_LETTER_BIT != 0
    }

    pub fn word(self) -> usize {
        self.0
    }

    /// The tag a record's opaque word carries.
    pub fn from_word(word: usize) -> Tag {
        Tag(word)
    }
}

/// What the broker said about one record.
pub struct Delivery {
    pub tag: Tag,
    /// Where the broker put the record (-1 if it refused it).
    pub offset: i64,
    /// The error and the record, for a re-send.
    pub failed: Option<(rdkafka::error::KafkaError, OwnedMessage)>,
}

/// The producer context: queues delivery reports for the stage thread,
/// and gives the bytes of each record that is done with back to the
/// process's [`Budget`].
pub struct Deliveries {
    queue: Mutex<Queue>,
    budget: Arc<Budget>,
    /// What this producer holds of the budget; given back whole when it is
    /// dropped, so records purged with it never count against the rest.
    held: AtomicU64,
}

#[derive(Default)]
struct Queue {
    reports: Vec<Delivery>,
    /// Records acknowledged per topic since the last drain. A stage writes
    /// to a handful of topics, so a scan beats hashing.
    by_topic: Vec<(String, u64)>,
}

/// Enqueues a record that must go now, whatever the budget (which it
/// counts against, so that its delivery report gives back what it took),
/// waiting while the producer's queue is full. Every record a stage's
/// producer sends goes through this or the stage's own `send`: a delivery
/// report gives bytes back for every record.
pub fn enqueue(
    producer: &rdkafka::producer::ThreadedProducer<Deliveries>,
    mut record: rdkafka::producer::BaseRecord<'_, [u8], [u8], usize>,
) -> Result<(), rdkafka::error::KafkaError> {
    use rdkafka::producer::Producer;
    let deliveries = producer.context();
    let bytes = budget_bytes(record.key, record.payload);
    deliveries.take_anyway(bytes);
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((e, r)) => {
                if e != rdkafka::error::KafkaError::MessageProduction(
                    rdkafka::types::RDKafkaErrorCode::QueueFull,
                ) {
                    deliveries.release(bytes);
                    return Err(e);
                }
                record = r;
                let _ = producer.flush(std::time::Duration::from_millis(10));
            }
        }
    }
}

/// What a record counts against the budget: its key and value.
pub fn budget_bytes(key: Option<&[u8]>, value: Option<&[u8]>) -> u64 {
    (key.map_or(0, <[u8]>::len) + value.map_or(0, <[u8]>::len)) as u64
}

impl Deliveries {
    pub fn new(budget: Arc<Budget>) -> Self {
        Deliveries {
            queue: Mutex::default(),
            budget,
            held: AtomicU64::new(0),
        }
    }

    /// Takes `n` bytes of the budget for a record about to be enqueued;
    /// false when the budget is spent.
    pub fn take(&self, n: u64) -> bool {
        let taken = self.budget.try_take(n);
        if taken {
            self.held.fetch_add(n, Ordering::Relaxed);
        }
        taken
    }

    /// Takes `n` bytes of the budget whether or not they fit (see
    /// [`Budget::take`]).
    pub fn take_anyway(&self, n: u64) {
        self.budget.take(n);
        self.held.fetch_add(n, Ordering::Relaxed);
    }

    /// Gives back what [`Deliveries::take`] took for a record that is done
    /// with (acknowledged, refused, or never enqueued).
    pub fn release(&self, n: u64) {
        self.held.fetch_sub(n, Ordering::Relaxed);
        self.budget.give_back(n);
    }
    /// Moves every queued report into `into` (which should be empty), and
    /// adds the acknowledged records per topic to `by_topic`.
    pub fn drain(&self, into: &mut Vec<Delivery>, by_topic: &mut Vec<(String, u64)>) {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::swap(&mut queue.reports, into);
        for (topic, n) in queue.by_topic.iter_mut().filter(|(_, n)| *n > 0) {
            match by_topic.iter_mut().find(|(t, _)| t == topic) {
                Some((_, total)) => *total += *n,
                None => by_topic.push((topic.clone(), *n)),
            }
            *n = 0;
        }
    }
}

impl ClientContext for Deliveries {}

impl Drop for Deliveries {
    fn drop(&mut self) {
        self.budget.give_back(self.held.load(Ordering::Relaxed));
    }
}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: usize) {
        let m = match result {
            Ok(m) | Err((_, m)) => m,
        };
        self.release(budget_bytes(
            rdkafka::Message::key(m),
            rdkafka::Message::payload(m),
        ));
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let failed = match result {
            Ok(m) => {
                let topic = rdkafka::Message::topic(m);
                match queue.by_topic.iter_mut().find(|(t, _)| t == topic) {
                    Some((_, n)) => *n += 1,
                    None => queue.by_topic.push((topic.to_string(), 1)),
                }
                None
            }
            Err((e, m)) => Some((e.clone(), m.detach())),
        };
        queue.reports.push(Delivery {
            tag: Tag(opaque),
            offset: if failed.is_none() {
                rdkafka::Message::offset(m)
            } else {
                -1
            },
            failed,
        });
    }
}

/// Input messages of one partition still waiting for their records.
#[derive(Debug)]
struct PartitionLedger {
    topic: String,
    partition: i32,
    /// (offset, records not yet acknowledged), in offset order.
    pending: VecDeque<(i64, u32)>,
    last_pushed: i64,
    /// How many entries at the front of `pending` have nothing left to
    /// wait for.
    acked: usize,
    /// The last offset whose state changes are in the changelog: later
    /// ones are not stored, however acknowledged (`i64::MAX` for a stage
    /// without a changelog).
    durable: i64,
}

impl PartitionLedger {
    /// Extends the acknowledged prefix.
    fn catch_up(&mut self) {
        while self.pending.get(self.acked).is_some_and(|e| e.1 == 0) {
            self.acked += 1;
        }
    }
}

/// Outstanding records per input message, for every input partition.
#[derive(Debug, Default)]
pub struct Ledger {
    slots: Vec<Option<PartitionLedger>>,
    by_partition: HashMap<(String, i32), u32>,
    cursor: usize,
    /// Whether offsets also wait for the changelog (see `durable`).
    hold: bool,
}

impl Ledger {
    /// The slot for a partition whose next message has `offset`. A message
    /// at or before one already pushed means the partition was re-read (a
    /// rebalance, a seek): its old entries are forgotten under a new slot,
    /// so late acknowledgements for them cannot count for the new ones.
    pub fn slot(&mut self, topic: &str, partition: i32, offset: i64) -> u32 {
        if let Some(&slot) = self.by_partition.get(&(topic.to_string(), partition)) {
            match &self.slots[slot as usize] {
                Some(p) if offset > p.last_pushed => return slot,
                _ => self.slots[slot as usize] = None,
            }
        }
        let entry = PartitionLedger {
            topic: topic.to_string(),
            partition,
            pending: VecDeque::new(),
            last_pushed: -1,
            acked: 0,
            durable: if self.hold { -1 } else { i64::MAX },
        };
        // A forgotten slot is reused only once all 2^16 are taken, so a
        // late acknowledgement cannot land on a new owner of its slot.
        let slot = if self.slots.len() < MAX_SLOTS {
            self.slots.push(Some(entry));
            self.slots.len() - 1
        } else {
            let free = (0..MAX_SLOTS)
                .map(|i| (self.cursor + i) % MAX_SLOTS)
                .find(|&i| self.slots[i].is_none())
                .unwrap_or_else(|| panic!("more than {MAX_SLOTS} input partitions in one stage"));
            self.cursor = free + 1;
            self.slots[free] = Some(entry);
            free
        } as u32;
        self.by_partition
            .insert((topic.to_string(), partition), slot);
        slot
    }

    /// Records that the message at `offset` produced `records` records.
    pub fn push(&mut self, slot: u32, offset: i64, records: u32) {
        if let Some(p) = &mut self.slots[slot as usize] {
            p.pending.push_back((offset, records));
            p.last_pushed = offset;
        }
    }

    /// Counts one acknowledged record; false if it belongs to no pending
    /// message (its partition was re-read since).
    pub fn ack(&mut self, tag: Tag) -> bool {
        let Some(Some(p)) = self.slots.get_mut(tag.slot() as usize) else {
            return false;
        };
        match p.pending.binary_search_by_key(&tag.offset(), |e| e.0) {
            Ok(i) if p.pending[i].1 > 0 => {
                p.pending[i].1 -= 1;
                true
            }
            _ => false,
        }
    }

    /// A ledger whose offsets also wait until the state changes of their
    /// messages are in the changelog ([`Ledger::set_durable`]).
    pub fn holding() -> Self {
        Ledger {
            hold: true,
            ..Ledger::default()
        }
    }

    /// The live slots of input partition number `partition` (one per
    /// input topic) and the last offset pushed to each.
    pub fn marks(&self, partition: i32) -> Vec<(u32, i64)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                let p = p.as_ref()?;
                (p.partition == partition && p.last_pushed >= 0)
                    .then_some((i as u32, p.last_pushed))
            })
            .collect()
    }

    /// Whether every message of `slot` up to `offset` has all its records
    /// acknowledged (a slot gone since counts as done: its partition is
    /// read again from its last commit).
    pub fn acked_through(&mut self, slot: u32, offset: i64) -> bool {
        let Some(Some(p)) = self.slots.get_mut(slot as usize) else {
            return true;
        };
        p.catch_up();
        p.pending.get(p.acked).is_none_or(|e| e.0 > offset)
    }

    /// The state changes of `slot`'s messages up to `offset` are in the
    /// changelog: their offsets may be stored.
    pub fn set_durable(&mut self, slot: u32, offset: i64) {
        if let Some(Some(p)) = self.slots.get_mut(slot as usize) {
            p.durable = p.durable.max(offset);
        }
    }

    /// Forgets every slot of input partition number `partition` (revoked):
    /// late acknowledgements for them count for nothing.
    pub fn forget(&mut self, partition: i32) {
        for slot in self.slots.iter_mut() {
            if slot.as_ref().is_some_and(|p| p.partition == partition) {
                let p = slot.take().expect("checked");
                self.by_partition.remove(&(p.topic, p.partition));
            }
        }
    }

    /// Pops every fully acknowledged (and, when holding, durable) prefix
    /// and calls `store(topic, partition, last offset, messages)` once per
    /// partition that moved.
    pub fn advance(&mut self, mut store: impl FnMut(&str, i32, i64, u64)) {
        for p in self.slots.iter_mut().flatten() {
            let mut last = None;
            let mut n = 0;
            p.catch_up();
            while let Some(&(offset, _)) = p.pending.front() {
                if p.acked == 0 || offset > p.durable {
                    break;
                }
                p.pending.pop_front();
                p.acked -= 1;
                last = Some(offset);
                n += 1;
            }
            if let Some(last) = last {
                store(&p.topic, p.partition, last, n);
            }
        }
    }

    /// The input partition a slot stands for, while it is live.
    pub fn source(&self, slot: u32) -> Option<(&str, i32)> {
        let p = self.slots.get(slot as usize)?.as_ref()?;
        Some((p.topic.as_str(), p.partition))
    }

    /// Input messages still waiting for acknowledgements.
    pub fn outstanding(&self) -> usize {
        self.slots.iter().flatten().map(|p| p.pending.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(ledger: &mut Ledger) -> Vec<(String, i32, i64, u64)> {
        let mut out = Vec::new();
        ledger.advance(|t, p, o, n| out.push((t.to_string(), p, o, n)));
        out
    }

    #[test]
    fn tags_round_trip() {
        let t = Tag::new(65_535, (1 << 46) - 1, true);
        assert_eq!(
            (t.slot(), t.offset(), t.dead_letter(), t.is_changelog()),
            (65_535, (1 << 46) - 1, true, false)
        );
        let t = Tag::new(3, 42, false);
        assert_eq!((t.slot(), t.offset(), t.dead_letter()), (3, 42, false));
        let t = Tag::changelog(7, 9);
        assert_eq!(
            (t.slot(), t.offset(), t.dead_letter(), t.is_changelog()),
            (7, 9, false, true)
        );
    }

    #[test]
    fn a_holding_ledger_stores_offsets_only_once_durable() {
        let mut l = Ledger::holding();
        let a = l.slot("orders", 0, 0);
        let b = l.slot("returns", 0, 0);
        let other = l.slot("orders", 1, 0);
        l.push(a, 0, 1);
        l.push(a, 1, 0);
        l.push(b, 0, 0);
        l.push(other, 0, 0);
        assert_eq!(l.marks(0), vec![(a, 1), (b, 0)]);
        assert!(!l.acked_through(a, 1), "offset 0 waits for its output");
        assert!(l.acked_through(b, 0));
        l.ack(Tag::new(a, 0, false));
        assert!(l.acked_through(a, 1));
        assert_eq!(stored(&mut l), vec![], "acknowledged, not yet durable");
        l.set_durable(a, 0);
        assert_eq!(stored(&mut l), vec![("orders".into(), 0, 0, 1)]);
        l.set_durable(a, 1);
        l.set_durable(b, 0);
        assert_eq!(
            stored(&mut l),
            vec![("orders".into(), 0, 1, 1), ("returns".into(), 0, 0, 1)]
        );
        // Revoked: late acknowledgements and marks are ignored.
        l.push(a, 2, 1);
        l.forget(0);
        assert!(!l.ack(Tag::new(a, 2, false)));
        assert!(l.acked_through(a, 2));
        assert_eq!(l.marks(0), vec![]);
        assert_eq!(l.outstanding(), 1, "partition 1's message waits");
        assert_eq!(l.source(other), Some(("orders", 1)));
    }

    #[test]
    fn an_offset_is_stored_only_after_it_and_all_before_it_are_acknowledged() {
        let mut l = Ledger::default();
        let s = l.slot("in", 0, 10);
        l.push(s, 10, 2);
        l.push(s, 11, 1);
        l.push(s, 12, 0); // filtered out: nothing to wait for
        assert!(l.ack(Tag::new(s, 11, false)));
        assert_eq!(stored(&mut l), vec![]);
        assert!(l.ack(Tag::new(s, 10, false)));
        assert_eq!(stored(&mut l), vec![]);
        assert!(l.ack(Tag::new(s, 10, true)));
        assert_eq!(stored(&mut l), vec![("in".into(), 0, 12, 3)]);
        assert_eq!(l.outstanding(), 0);
    }

    #[test]
    fn partitions_advance_independently() {
        let mut l = Ledger::default();
        let a = l.slot("in", 0, 0);
        let b = l.slot("in", 1, 0);
        l.push(a, 0, 1);
        l.push(b, 0, 1);
        l.ack(Tag::new(b, 0, false));
        assert_eq!(stored(&mut l), vec![("in".into(), 1, 0, 1)]);
        assert_eq!(l.outstanding(), 1);
    }

    #[test]
    fn a_reread_partition_ignores_acknowledgements_of_its_old_entries() {
        let mut l = Ledger::default();
        let old = l.slot("in", 0, 5);
        l.push(old, 5, 1);
        l.push(old, 6, 1);
        // A rebalance hands the partition back from the last commit.
        let new = l.slot("in", 0, 5);
        assert_ne!(old, new);
        l.push(new, 5, 1);
        assert!(!l.ack(Tag::new(old, 5, false)));
        assert_eq!(stored(&mut l), vec![]);
        assert!(l.ack(Tag::new(new, 5, false)));
        assert_eq!(stored(&mut l), vec![("in".into(), 0, 5, 1)]);
    }

    #[test]
    fn a_duplicate_acknowledgement_is_not_counted_twice() {
        let mut l = Ledger::default();
        let s = l.slot("in", 0, 0);
        l.push(s, 0, 1);
        l.push(s, 1, 1);
        assert!(l.ack(Tag::new(s, 0, false)));
        assert!(!l.ack(Tag::new(s, 0, false)));
        assert_eq!(stored(&mut l), vec![("in".into(), 0, 0, 1)]);
    }
}
