//! One stage: a thread that consumes a batch, runs the plugin on it,
//! publishes what it returns and stores the offsets the broker has
//! acknowledged everything for.
//!
//! The hot loop is synchronous on purpose. librdkafka already does its
//! network I/O on its own threads; a stage thread that polls, calls the
//! plugin in place and enqueues records keeps the per-message cost to what
//! a hand-written rdkafka loop pays, with no task hand-off, channel or
//! future per message (the benchmark's B1 rung is that loop).

mod commit;
mod plan;
mod restore;
pub use restore::RestoreError;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError as RdKafkaError;
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders, OwnedMessage, Timestamp};
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use tokio_util::sync::CancellationToken;

use self::plan::{Results, payload_size};
use super::ack::{Delivery, Ledger, Tag, budget_bytes};
use super::changelog;
use super::events::{
    ConsumerReplaced, DeadLetterWithoutValue, InstanceRestarted, InternalEvent, MessageFailed,
    PluginCallFailed, PluginSwapped,
};
use super::lag::LagSampler;
use super::membership::STUCK_AFTER;
use super::rebalance::{Progress, Rebalancer, Shared, apply, store_offsets};
use super::reload::Swap;
use super::{StageControl, StageInfo, TopologyError, dead_letter};
use crate::config::{Limits, OnError, StageConfig};
use crate::kafka::{ConsumerOptions, KafkaClients, KafkaError, Refusal, fetch_one};
use crate::metrics::StageMetrics;
use crate::wasm::{
    BatchBuilder, CallError, CallErrorKind, Instance, Plugin, Runtime, StageContext,
    ValidatedResult,
};

/// How long a poll waits for the first message of a batch before the loop
/// looks at acknowledgements and the shutdown signal again.
const IDLE_POLL: Duration = Duration::from_millis(50);
/// Extra attempts a message alone gets after timing out, before it fails.
const TIMEOUT_RETRIES: u32 = 2;
/// A message's place: topic, partition, offset.
type Coordinates = (String, i32, i64);

/// How long a restore waits for a transaction a dead process left open in
/// the changelog: past the broker's `transaction.timeout.ms` (10 s).
const OPEN_TRANSACTION_PATIENCE: Duration = Duration::from_secs(30);
/// How long a changelog may stay unreadable before the stage gives up.
const RESTORE_PATIENCE: Duration = Duration::from_secs(30);
/// How often a stage resumes the partitions it is not restoring, in case
/// librdkafka lost a resume (see [`Stage::resume_ready`]).
const RESUME_EVERY: Duration = Duration::from_secs(1);
/// How long re-reading an input for its dead letter may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Room for weir's and the original headers on top of a record's key and
/// value (a reason is capped at [`crate::wasm::MAX_REASON_BYTES`]).
const HEADER_ALLOWANCE: usize = 64 << 10;

/// The largest record a stage may write: an output as large as its limits
/// allow, or a dead letter carrying the largest input it accepts (an
/// oversized input's dead letter falls back to no value).
pub fn max_record_bytes(config: &StageConfig) -> usize {
    let limits = &config.limits;
    limits
        .max_payload_bytes
        .max(limits.max_output_bytes_per_message)
        .saturating_add(HEADER_ALLOWANCE)
}

pub use super::ack::StageProducer;
pub type StageConsumer = BaseConsumer<Rebalancer>;

/// A stage's connections: Kafka both ways, and reloads.
pub struct StageIo {
    pub consumer: StageConsumer,
    pub producer: Arc<StageProducer>,
    /// What the consumer's rebalance callbacks share with the stage.
    pub shared: Arc<Shared>,
    /// For the consumer that re-reads an input whose output was refused.
    pub clients: KafkaClients,
    pub swaps: Receiver<Swap>,
    pub control: Arc<StageControl>,
    /// The producer's queue size, KiB.
    pub producer_queue_kb: usize,
    /// The consumer's group and settings, for a replacement.
    pub group: String,
    pub consumer_options: ConsumerOptions,
}

/// The header naming the reload generation that produced a record.
pub const GENERATION: &str = "weir.generation";

pub struct Stage {
    config: StageConfig,
    ctx: StageContext,
    runtime: Arc<Runtime>,
    plugin: Arc<Plugin>,
    /// The live instance; `None` after a failed call, until the next call
    /// makes a fresh one.
    instance: Option<Instance>,
    /// Why a fresh instance could not be made, if it could not: the host
    /// failing, not the message, so the stage stops instead of failing
    /// message after message through `on_error`.
    cannot_instantiate: Option<String>,
    /// Since when restoring state has failed, if it is failing.
    restore_failing_since: Option<Instant>,
    /// When the partitions not being restored were last resumed.
    resumed_at: Instant,
    /// When the transactional producer was last replaced after fatal
    /// errors (the last minute's).
    replaced_producers: Vec<Instant>,
    /// The producer's queue size, KiB, for a replacement.
    producer_queue_kb: usize,
    /// The consumer's group and settings, for a replacement.
    group: String,
    consumer_options: ConsumerOptions,
    consumer: Arc<StageConsumer>,
    producer: Arc<StageProducer>,
    shared: Arc<Shared>,
    clients: KafkaClients,
    /// Made on first use: reads back inputs whose outputs were refused.
    fetcher: Option<BaseConsumer>,
    /// Output topics, indexed like `ctx.outputs`.
    topics: Vec<String>,
    metrics: Arc<StageMetrics>,
    /// New plugin instances from reloads, taken between batches.
    swaps: Receiver<Swap>,
    /// The generation running, as the `weir.generation` header carries it.
    generation: String,
    control: Arc<StageControl>,
}

type Fate<'r> = plan::Fate<'r, ValidatedResult>;

/// The stage is stopping and a record could not be enqueued.
struct Stopping;

impl Stage {
    pub(super) fn new(
        config: StageConfig,
        ctx: StageContext,
        runtime: Arc<Runtime>,
        plugin: Arc<Plugin>,
        instance: Instance,
        io: StageIo,
        generation: u64,
    ) -> Self {
        let StageIo {
            consumer,
            producer,
            shared,
            clients,
            swaps,
            control,
            producer_queue_kb,
            group,
            consumer_options,
        } = io;
        let topics = ctx
            .outputs
            .iter()
            .map(|o| config.outputs[o].clone())
            .collect();
        let metrics = runtime.metrics().stage(&config.name);
        Stage {
            config,
            ctx,
            runtime,
            plugin,
            instance: Some(instance),
            cannot_instantiate: None,
            restore_failing_since: None,
            resumed_at: Instant::now(),
            replaced_producers: Vec::new(),
            producer_queue_kb,
            group,
            consumer_options,
            consumer: Arc::new(consumer),
            producer,
            shared,
            clients,
            fetcher: None,
            topics,
            metrics,
            swaps,
            generation: generation.to_string(),
            control,
        }
    }

    fn lag_sampler(&self) -> LagSampler {
        LagSampler::spawn(
            &self.config.name,
            self.consumer.clone(),
            self.config.inputs.clone(),
            self.metrics.clone(),
        )
    }

    /// Replaces the group consumer with a new one, with new connections,
    /// that joins the group afresh. The old one is closed first (what it
    /// still held is revoked as in any rebalance), so the two are never in
    /// the group together.
    fn replace_consumer(&mut self) -> Result<(), TopologyError> {
        let fresh = self.clients.consumer(
            &self.group,
            &self.config.name,
            &self.consumer_options,
            Rebalancer {
                shared: self.shared.clone(),
            },
        )?;
        let old = std::mem::replace(&mut self.consumer, Arc::new(fresh));
        match Arc::try_unwrap(old) {
            // Closing waits for librdkafka to finish giving up the old
            // assignment, which a consumer stuck out of its group (waiting
            // for an unassign to complete) may never do: with nothing left
            // assigned, and so nothing for its callbacks to revoke, it is
            // closed on a thread of its own rather than block the stage.
            Ok(old) if old.assignment().map_or(true, |a| a.count() == 0) => {
                let closing = std::thread::Builder::new()
                    .name(format!("weir-close-{}", self.config.name))
                    .spawn(move || drop(old));
                if let Err(e) = closing {
                    tracing::warn!(stage = self.config.name, error = %e, "old consumer closed in place");
                }
            }
            Ok(old) => drop(old),
            // Held elsewhere still: it closes when the last holder lets go.
            Err(_) => tracing::warn!(stage = self.config.name, "old consumer still shared"),
        }
        self.shared.membership.reset();
        self.subscribe()
    }

    /// Takes the newest plugin instance a reload prepared, between batches:
    /// no batch ever runs on half of one version and half of another.
    fn take_swaps(&mut self) {
        while let Ok(swap) = self.swaps.try_recv() {
            let started = Instant::now();
            self.config = swap.config;
            self.ctx = swap.ctx;
            self.plugin = swap.plugin;
            self.instance = Some(swap.instance);
            self.generation = swap.generation.to_string();
            PluginSwapped {
                stage: &self.config.name,
                generation: swap.generation,
                digest: &self.plugin.digest,
                change_to_live: swap.requested_at.elapsed(),
                pause: started.elapsed(),
            }
            .emit(&self.metrics);
        }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub(super) fn info(&self) -> StageInfo {
        StageInfo {
            name: self.config.name.clone(),
            plugin: self.config.plugin.display().to_string(),
            plugin_digest: self.plugin.digest.clone(),
            inputs: self.config.inputs.clone(),
            outputs: self.config.outputs.clone(),
            dead_letter: self.config.dead_letter.clone(),
            instances: 1,
        }
    }

    pub(super) fn subscribe(&self) -> Result<(), TopologyError> {
        let topics: Vec<&str> = self.config.inputs.iter().map(String::as_str).collect();
        self.consumer.subscribe(&topics).map_err(|source| {
            KafkaError::Subscribe {
                stage: self.config.name.clone(),
                topics: self.config.inputs.clone(),
                source,
            }
            .into()
        })
    }

    /// Runs until `stop` fires or the stage fails, then lets what is in
    /// flight be acknowledged and commits: a clean stop loses nothing and
    /// repeats nothing.
    ///
    /// `pipeline` fires when the whole process stops. Until then a stopping
    /// stage (removed, rebuilt or replayed) finishes its batch and waits for
    /// every record of it, however long the broker takes: its keyed state
    /// already reflects those messages, so a replacement that re-read them
    /// would treat them as done and never publish their records. Only a
    /// process that is going away gives up after its drain timeout
    /// ([`StageControl::drain_timeout`]); what is unacknowledged then is
    /// not committed, so it is consumed again after a restart.
    pub fn run(
        mut self,
        stop: CancellationToken,
        pipeline: CancellationToken,
    ) -> Result<(), TopologyError> {
        let mut consumer = self.consumer.clone();
        let shared = self.shared.clone();
        // Stopped (dropped) when `run` returns, before the consumer is.
        let mut lag = self.lag_sampler();
        let mut deliveries = Vec::new();
        if shared.lock().txn.is_some() {
            // Fences any earlier incarnation of this stage and process, and
            // aborts what it left open.
            if let Err(e) = self.producer.init_transactions(Duration::from_secs(60)) {
                return Err(TopologyError::StageFailed {
                    stage: self.config.name.clone(),
                    reason: format!("cannot initialise its transactional producer: {e}"),
                });
            }
        }
        tracing::info!(stage = self.config.name, inputs = ?self.config.inputs, "stage running");
        let result = loop {
            if stop.is_cancelled() {
                break Ok(());
            }
            self.take_swaps();
            if let Err(e) = self.restore_pending(&pipeline) {
                break Err(e);
            }
            if self.resumed_at.elapsed() >= RESUME_EVERY {
                self.resume_ready();
            }
            // Paused by the operator: no polling, but acknowledgements keep
            // settling and offsets committing. A pause longer than the
            // consumer's max.poll.interval.ms leaves the group; the next
            // poll rejoins from the committed offsets.
            if self.control.paused.load(Ordering::Relaxed) {
                if let Err(e) = self.settle(&mut deliveries, &pipeline, false) {
                    break Err(e);
                }
                // Statistics wait in the queue meanwhile; what they said
                // before the pause is stale.
                shared.membership.reset();
                std::thread::sleep(IDLE_POLL);
                continue;
            }
            // Only while polling: statistics arrive with the polls.
            if let Some((gone, state)) = shared.membership.out_for(STUCK_AFTER) {
                ConsumerReplaced {
                    stage: &self.config.name,
                    out_for: gone,
                    state: &state,
                }
                .emit(&self.metrics);
                drop(lag);
                drop(consumer);
                let replaced = self.replace_consumer();
                consumer = self.consumer.clone();
                lag = self.lag_sampler();
                if let Err(e) = replaced {
                    break Err(e);
                }
                continue;
            }
            let batch = self.next_batch(&consumer);
            if !batch.is_empty() {
                let mut progress = shared.lock();
                match self.handle(&batch, &mut progress, &stop, &pipeline) {
                    Ok(()) => {}
                    Err(StageError::Stopping) => break Ok(()),
                    Err(StageError::Failed(e)) => break Err(e),
                }
            }
            drop(batch);
            if let Err(e) = self.settle(&mut deliveries, &pipeline, false) {
                break Err(e);
            }
        };
        // A failed stage commits what was acknowledged before the failure,
        // and nothing after it; what it waits for may never come, so it
        // waits no longer than a stopping process does.
        let drained = self.drain(&mut deliveries, &pipeline, result.is_err());
        let result = result.and(drained);
        match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) | Err(RdKafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => tracing::warn!(stage = self.config.name, error = %e, "final commit failed"),
        }
        // The state this stage held is its changelog's now; whoever owns
        // the partitions next restores it from there.
        {
            let mut progress = shared.lock();
            if let Some(changelog) = &mut progress.changelog {
                let owned: Vec<i32> = changelog.owned().collect();
                for p in owned {
                    changelog.release(&*shared.store, p, true);
                }
            }
        }
        tracing::info!(stage = self.config.name, "stage stopped");
        result
    }

    /// Waits up to [`IDLE_POLL`] for one message, then takes whatever else
    /// arrives within `max_wait`, up to `max_messages`. A rebalance during
    /// the polls drops the messages of revoked partitions, and ends the
    /// batch when partitions wait to be restored.
    fn next_batch<'c>(&self, consumer: &'c StageConsumer) -> Vec<BorrowedMessage<'c>> {
        let max = self.config.batch.max_messages;
        let mut batch = Vec::new();
        let first = self.poll(consumer, IDLE_POLL);
        if self.take(&mut batch, first) || batch.is_empty() {
            return batch;
        }
        batch.reserve(max.min(1024));
        let deadline = Instant::now() + self.config.batch.max_wait;
        while batch.len() < max {
            // Messages already fetched come back without waiting.
            let next = match self.poll(consumer, Duration::ZERO) {
                Some(m) => Some(m),
                None => {
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    self.poll(consumer, deadline - now)
                }
            };
            let more = next.is_some();
            if self.take(&mut batch, next) || !more {
                break;
            }
        }
        batch
    }

    /// Adds what a poll returned to `batch`, minding a rebalance the poll
    /// ran: the messages polled *before* it of revoked partitions are
    /// dropped (their new owner reads them from the commit), and those of
    /// partitions waiting for their state are set aside, to be read again
    /// once it is restored. The message of the poll itself is kept like
    /// any other: librdkafka discards what it had fetched for a revoked
    /// partition, so it comes from a partition held now, and dropping it
    /// would skip it while the offsets after it commit. True if partitions
    /// wait to be restored.
    fn take<'c>(
        &self,
        batch: &mut Vec<BorrowedMessage<'c>>,
        polled: Option<BorrowedMessage<'c>>,
    ) -> bool {
        if !self.shared.rebalanced.swap(false, Ordering::AcqRel) {
            batch.extend(polled);
            return false;
        }
        let mut progress = self.shared.lock();
        let revoked = std::mem::take(&mut progress.revoked);
        let before = batch.len();
        batch.retain(|m| {
            !revoked
                .iter()
                .any(|(t, p)| t == m.topic() && *p == m.partition())
        });
        if batch.len() < before {
            tracing::debug!(
                stage = self.config.name,
                dropped = before - batch.len(),
                "messages of revoked partitions dropped before processing"
            );
        }
        batch.extend(polled);
        if progress.restoring.is_empty() {
            return false;
        }
        let progress = &mut *progress;
        batch.retain(|m| {
            let waits = progress.restoring.contains(&m.partition());
            if waits {
                progress.rewind_to(m.topic(), m.partition(), m.offset());
            }
            !waits
        });
        true
    }

    fn poll<'c>(
        &self,
        consumer: &'c StageConsumer,
        timeout: Duration,
    ) -> Option<BorrowedMessage<'c>> {
        match consumer.poll(timeout)? {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::warn!(stage = self.config.name, error = %e, "consume error");
                None
            }
        }
    }

    fn handle(
        &mut self,
        messages: &[BorrowedMessage<'_>],
        progress: &mut Progress,
        stop: &CancellationToken,
        abandon: &CancellationToken,
    ) -> Result<(), StageError> {
        if let Some(txn) = &mut progress.txn
            && let Err(fatal) = txn.begin(&self.producer)
        {
            // The batch is read again from the committed offsets.
            return self
                .replace_producer(progress, &fatal)
                .map_err(StageError::Failed);
        }
        // The slow-consumer fault: a sleep per consumed message, in slices,
        // so that a stop or a cleared fault does not wait it out.
        let slow = self.control.slow_consumer_ms.load(Ordering::Relaxed);
        if slow > 0 {
            let until =
                Instant::now() + Duration::from_millis(slow.saturating_mul(messages.len() as u64));
            while !stop.is_cancelled() && self.control.slow_consumer_ms.load(Ordering::Relaxed) > 0
            {
                let now = Instant::now();
                if now >= until {
                    break;
                }
                std::thread::sleep((until - now).min(IDLE_POLL));
            }
        }
        let started = Instant::now();
        StageMetrics::add(&self.metrics.consumed, messages.len() as u64);
        StageMetrics::add(&self.metrics.batches, 1);
        let limit = self.config.limits.max_payload_bytes;
        // Each run has a ledger slot of its own: a partition that went back
        // to its last commit mid-poll is settled from there.
        for plan::Run {
            topic,
            partition,
            messages: group,
        } in plan::runs(messages)
        {
            let slot = progress.ledger.slot(topic, partition, group[0].offset());
            // Inputs whose records an aborted transaction could not publish
            // fail this time, as they would have at least once.
            let poisoned: HashMap<i64, String> = match &progress.txn {
                Some(txn) if !txn.poisoned.is_empty() => group
                    .iter()
                    .filter_map(|m| {
                        let at = (topic.to_string(), partition, m.offset());
                        Some((m.offset(), txn.poisoned.get(&at)?.clone()))
                    })
                    .collect(),
                _ => HashMap::new(),
            };
            let refused: Vec<_> = group
                .iter()
                .map(|m| plan::refused_before_call(*m, limit, &poisoned))
                .collect();
            let admitted: Vec<&BorrowedMessage<'_>> = group
                .iter()
                .zip(&refused)
                .filter(|(_, refused)| refused.is_none())
                .map(|(m, _)| *m)
                .collect();
            let results = (!admitted.is_empty()).then(|| self.process(topic, partition, &admitted));
            if let Some(why) = self.cannot_instantiate.take() {
                return Err(StageError::Failed(TopologyError::StageFailed {
                    stage: self.config.name.clone(),
                    reason: format!(
                        "cannot make a fresh plugin instance: {why}; this is not a failure of \
                         the message, so on_error does not apply"
                    ),
                }));
            }
            let mut admitted_fates = results
                .as_ref()
                .map(|r| plan::fates(r, admitted.len()))
                .unwrap_or_default()
                .into_iter();
            for (m, refused) in group.iter().zip(refused) {
                let fate = match refused {
                    Some((kind, reason)) => Fate::Failed { kind, reason },
                    None => admitted_fates
                        .next()
                        .expect("process returns one fate per admitted message"),
                };
                let sent = self.publish(m, fate, slot, abandon)?;
                progress.ledger.push(slot, m.offset(), sent);
            }
            if let (Some(txn), Some(last)) = (&mut progress.txn, group.last()) {
                txn.processed(topic, partition, last.offset(), group.len() as u64);
            }
        }
        self.metrics.batch_duration.record(started.elapsed());
        Ok(())
    }

    /// Runs the plugin on one partition's messages. If the call fails the
    /// instance is replaced and the messages are retried one at a time, so
    /// only a message that fails on its own is dead-lettered.
    fn process(
        &mut self,
        topic: &str,
        partition: i32,
        group: &[&BorrowedMessage<'_>],
    ) -> Results<ValidatedResult> {
        plan::isolate(group.len(), |one| {
            let (messages, n) = match one {
                None => (group, group.len()),
                Some(i) => (std::slice::from_ref(&group[i]), 1),
            };
            let bytes: usize = messages.iter().map(|m| payload_size(*m) + 64).sum();
            let mut builder = BatchBuilder::new(topic, partition, n, bytes);
            for m in messages {
                push(&mut builder, m);
            }
            let result = self.call(&builder, n);
            if let Err(e) = &result {
                self.note_failure(e, n);
            }
            result
        })
    }

    fn note_failure(&self, e: &CallError, messages: usize) {
        PluginCallFailed {
            stage: &self.config.name,
            kind: e.kind,
            messages,
            error: &e.message,
        }
        .emit(&self.metrics);
    }

    /// One plugin call on `inputs` messages, on a fresh instance if the
    /// last call failed. After a failure the instance's memory may be
    /// inconsistent, so it is dropped. A result with a message over the
    /// stage's output limits is refused with its state writes, so that a
    /// message failed for its outputs leaves no state behind; the call's
    /// messages are then tried one at a time like after a trap.
    fn call(
        &mut self,
        builder: &BatchBuilder,
        inputs: usize,
    ) -> Result<ValidatedResult, CallError> {
        let mut instance = match self.instance.take() {
            Some(i) => i,
            None => {
                InstanceRestarted {
                    stage: &self.config.name,
                }
                .emit(&self.metrics);
                self.runtime
                    .instantiate(&self.plugin, &self.ctx)
                    .map_err(|e| {
                        let message = crate::wasm::cap_reason(&e.to_string()).into_owned();
                        self.cannot_instantiate.get_or_insert(message.clone());
                        CallError {
                            stage: self.config.name.clone(),
                            kind: CallErrorKind::Trap,
                            message,
                        }
                    })?
            }
        };
        let (limits, outputs) = (&self.config.limits, self.topics.len());
        let result = instance.process_with(builder.batch(), |r| {
            let result = ValidatedResult::new(r, inputs, outputs);
            match (0..inputs).find_map(|i| over_output_limits(limits, &result, i)) {
                Some(reason) => Err(reason),
                None => Ok(result),
            }
        });
        self.metrics.memory_seen(instance.memory_high_water());
        if matches!(&result, Err(e) if e.kind == CallErrorKind::OutputLimit) {
            // The plugin is fine; only its answer was refused.
            self.instance = Some(instance);
            return result;
        }
        let result = result?;
        self.instance = Some(instance);
        Ok(result)
    }

    /// Enqueues the records of one input message; returns how many.
    fn publish(
        &self,
        m: &BorrowedMessage<'_>,
        fate: Fate<'_>,
        slot: u32,
        abandon: &CancellationToken,
    ) -> Result<u32, StageError> {
        let timestamp = m.timestamp().to_millis();
        let tag = Tag::new(slot, m.offset(), false);
        let (kind, reason) = match fate {
            Fate::Processed(result, i) => match result.outcome(i) {
                Ok(outputs) => {
                    // Over the output limits it would not be here: `call`
                    // refuses such a result.
                    let mut sent = 0;
                    for o in outputs {
                        let mut record =
                            BaseRecord::with_opaque_to(&self.topics[o.target], tag.word());
                        if let Some(key) = o.key.or_else(|| m.key()) {
                            record = record.key(key);
                        }
                        if let Some(value) = o.value {
                            record = record.payload(value);
                        }
                        if let Some(ts) = timestamp {
                            record = record.timestamp(ts);
                        }
                        // Every output says which plugin build and which
                        // generation made it.
                        let mut owned = OwnedHeaders::new_with_capacity(o.headers().count() + 2);
                        for (key, value) in o.headers() {
                            owned = owned.insert(Header {
                                key,
                                value: Some(value),
                            });
                        }
                        owned = owned
                            .insert(Header {
                                key: dead_letter::PLUGIN_DIGEST,
                                value: Some(self.plugin.digest.as_str()),
                            })
                            .insert(Header {
                                key: GENERATION,
                                value: Some(self.generation.as_str()),
                            });
                        record = record.headers(owned);
                        match self.send(record, abandon)? {
                            Ok(()) => sent += 1,
                            // The producer will never take this record (too
                            // large, say): the input fails like any bad
                            // message, so it is neither lost nor stuck.
                            Err(e) if Refusal::of(&e).is_the_records() => {
                                let reason = format!(
                                    "cannot publish output to {}: {e}",
                                    self.topics[o.target]
                                );
                                return Ok(sent
                                    + self.fail(
                                        m,
                                        dead_letter::KIND_PRODUCE_ERROR,
                                        &reason,
                                        slot,
                                        abandon,
                                    )?);
                            }
                            Err(e) => {
                                return Err(StageError::Failed(self.platform_failure(
                                    &self.topics[o.target],
                                    m,
                                    &e,
                                )));
                            }
                        }
                    }
                    return Ok(sent);
                }
                Err(reason) if result.is_invalid(i) => {
                    (dead_letter::KIND_DECODE, reason.to_string())
                }
                Err(reason) => (dead_letter::KIND_PLUGIN_ERROR, reason.to_string()),
            },
            Fate::Failed { kind, reason } => (kind, reason),
        };
        self.fail(m, kind, &reason, slot, abandon)
    }

    /// Handles a failed message as the stage's `on_error` says. Returns the
    /// records enqueued for it (0 when skipped); halting fails the stage
    /// before the message is marked done, so nothing is committed past it.
    fn fail(
        &self,
        m: &impl Message,
        kind: &str,
        reason: &str,
        slot: u32,
        abandon: &CancellationToken,
    ) -> Result<u32, StageError> {
        let stage = self.config.name.as_str();
        let (topic, partition, offset) = (m.topic(), m.partition(), m.offset());
        MessageFailed {
            stage,
            topic,
            partition,
            offset,
            kind,
            policy: &self.config.on_error,
            reason,
        }
        .emit(&self.metrics);
        match self.config.on_error {
            OnError::DeadLetter => self.dead_letter(m, kind, reason, slot, abandon),
            OnError::Skip => Ok(0),
            OnError::Halt => Err(StageError::Failed(TopologyError::StageFailed {
                stage: stage.to_string(),
                reason: format!(
                    "on_error = \"halt\": {topic}/{partition}@{offset} failed ({kind}): {reason}"
                ),
            })),
        }
    }

    /// Sends `m` to the dead-letter topic with the reason in its headers.
    /// A dead letter too large to publish goes without its value (the
    /// original stays in its input topic, at the coordinates the headers
    /// name); one the topic refuses anyway stops the stage, since nothing
    /// may be committed past a message that went nowhere.
    fn dead_letter(
        &self,
        m: &impl Message,
        kind: &str,
        reason: &str,
        slot: u32,
        abandon: &CancellationToken,
    ) -> Result<u32, StageError> {
        let headers = dead_letter::headers(m, &self.config.name, &self.plugin.digest, kind, reason);
        let tag = Tag::new(slot, m.offset(), true);
        let record = dead_letter_record(&self.config.dead_letter, tag, m, m.payload(), headers);
        let error = match self.send(record, abandon)? {
            Ok(()) => return Ok(1),
            Err(e) if Refusal::of(&e) == Refusal::TooLarge && m.payload().is_some() => e,
            Err(e) => return Err(StageError::Failed(self.dead_letter_refused(m, &e))),
        };
        let headers = dead_letter::headers(m, &self.config.name, &self.plugin.digest, kind, reason);
        self.dead_letter_without_value(m, m, headers, tag, &error, abandon)
            .map(|()| 1)
    }

    /// Sends `letter` (a dead letter, or the message it is made of) to the
    /// dead-letter topic without its value, which was too large to publish,
    /// with `headers` and the value's size; `input` names the message in
    /// the error if the topic refuses even that.
    fn dead_letter_without_value(
        &self,
        letter: &impl Message,
        input: &impl Message,
        headers: OwnedHeaders,
        tag: Tag,
        error: &RdKafkaError,
        abandon: &CancellationToken,
    ) -> Result<(), StageError> {
        DeadLetterWithoutValue {
            stage: &self.config.name,
            topic: input.topic(),
            partition: input.partition(),
            offset: input.offset(),
            size: payload_len(letter),
            error,
        }
        .emit(&self.metrics);
        let headers = dead_letter::without_value(headers, payload_len(letter));
        let record = dead_letter_record(&self.config.dead_letter, tag, letter, None, headers);
        match self.send(record, abandon)? {
            Ok(()) => Ok(()),
            Err(e) => Err(StageError::Failed(self.dead_letter_refused(input, &e))),
        }
    }

    fn dead_letter_refused(&self, m: &impl Message, e: &RdKafkaError) -> TopologyError {
        TopologyError::StageFailed {
            stage: self.config.name.clone(),
            reason: format!(
                "the dead-letter topic {} refuses {}/{}@{}: {e}",
                self.config.dead_letter,
                m.topic(),
                m.partition(),
                m.offset(),
            ),
        }
    }

    /// An output topic or the producer fails whatever the record: skipping
    /// or dead-lettering would treat every record after this one the same
    /// way, so the stage stops with the cause, committing nothing past it.
    fn platform_failure(&self, topic: &str, m: &impl Message, e: &RdKafkaError) -> TopologyError {
        TopologyError::StageFailed {
            stage: self.config.name.clone(),
            reason: format!(
                "cannot publish to {topic} (for {}/{}@{}): {e}; this is not a failure of the \
                 message, so on_error does not apply",
                m.topic(),
                m.partition(),
                m.offset(),
            ),
        }
    }

    /// Enqueues a record, waiting while the producer's queue is full. The
    /// inner error is one the broker would never accept.
    fn send(
        &self,
        mut record: BaseRecord<'_, [u8], [u8], usize>,
        abandon: &CancellationToken,
    ) -> Result<Result<(), RdKafkaError>, Stopping> {
        let deliveries = self.producer.context();
        let bytes = budget_bytes(record.key, record.payload);
        let mut waited: Option<Instant> = None;
        let result = loop {
            // The process's budget first: while the broker is slow or away,
            // the stage waits here instead of buffering without bound.
            if !deliveries.take(bytes) {
                if abandon.is_cancelled() {
                    break Err(Stopping);
                }
                waited.get_or_insert_with(Instant::now);
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            match self.producer.send(record) {
                Ok(()) => break Ok(Ok(())),
                Err((e, r)) => {
                    deliveries.release(bytes);
                    if e != RdKafkaError::MessageProduction(RDKafkaErrorCode::QueueFull) {
                        break Ok(Err(e));
                    }
                    if abandon.is_cancelled() {
                        break Err(Stopping);
                    }
                    waited.get_or_insert_with(Instant::now);
                    record = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        };
        if let Some(since) = waited {
            StageMetrics::add(
                &self.metrics.backpressure_ms,
                since.elapsed().as_millis() as u64,
            );
        }
        result
    }

    /// Applies the broker's acknowledgements, handles the records it
    /// refused for good, writes the state changes that are due to the
    /// changelog (all of them when `force`d), and stores the offsets that
    /// are complete.
    fn settle(
        &mut self,
        scratch: &mut Vec<Delivery>,
        abandon: &CancellationToken,
        force: bool,
    ) -> Result<(), TopologyError> {
        let shared = self.shared.clone();
        let mut progress = shared.lock();
        apply(&shared, &self.producer, &mut progress, scratch);
        if progress.txn.is_some() {
            return self.settle_transaction(&mut progress, force);
        }
        let mut failure = None;
        for d in std::mem::take(&mut progress.deferred) {
            // Once the stage is failing, later refusals only matter for
            // the log: nothing past the first is committed.
            let Some((error, record)) = d.failed else {
                continue;
            };
            if failure.is_some() {
                continue;
            }
            let outcome = if d.tag.is_changelog() {
                Err(self.changelog_failure(&changelog::ChangelogError {
                    topic: record.topic().to_string(),
                    source: error,
                }))
            } else {
                self.refused(&mut progress.ledger, d.tag, &error, &record, abandon)
            };
            if let Err(e) = outcome {
                failure.get_or_insert(e);
            }
        }
        let progress = &mut *progress;
        if failure.is_none()
            && let Some(changelog) = &mut progress.changelog
        {
            let all: Vec<i32>;
            let force = if force {
                all = changelog.owned().collect();
                Some(all.as_slice())
            } else {
                None
            };
            let written = changelog.written;
            let sent = changelog.step(&mut progress.ledger, &*shared.store, force, |r| match self
                .send(r, abandon)
            {
                Ok(result) => result,
                Err(Stopping) => Err(RdKafkaError::Canceled),
            });
            StageMetrics::add(&self.metrics.changelog_records, changelog.written - written);
            if let Err(e) = sent
                && !matches!(e.source, RdKafkaError::Canceled)
            {
                failure = Some(self.changelog_failure(&e));
            }
        }
        store_offsets(&*self.consumer, &self.metrics, &mut progress.ledger);
        failure.map_or(Ok(()), Err)
    }

    /// The changelog refused a record: nothing past it may be committed,
    /// and the state it carried would be lost, so the stage stops.
    fn changelog_failure(&self, e: &changelog::ChangelogError) -> TopologyError {
        TopologyError::StageFailed {
            stage: self.config.name.clone(),
            reason: format!("{e}; this is not a failure of a message, so on_error does not apply"),
        }
    }

    /// A record the broker refused for good (the producer retries what is
    /// retriable itself). An output refused for what it is fails its input
    /// message with kind `produce_error`; a dead letter too large goes again
    /// without its value; anything else stops the stage.
    fn refused(
        &mut self,
        ledger: &mut Ledger,
        tag: Tag,
        error: &RdKafkaError,
        record: &OwnedMessage,
        abandon: &CancellationToken,
    ) -> Result<(), TopologyError> {
        let Some((topic, partition)) = ledger.source(tag.slot()) else {
            // Its partition was re-read since: the record is produced again.
            return Ok(());
        };
        let (topic, partition) = (topic.to_string(), partition);
        let refusal = Refusal::of(error);
        tracing::warn!(stage = self.config.name, topic = record.topic(), source_topic = topic, source_partition = partition, source_offset = tag.offset(), error = %error, "record refused by the broker");
        // Coordinates of the input, for messages and headers.
        let input = OwnedMessage::new(
            None,
            None,
            topic.clone(),
            Timestamp::NotAvailable,
            partition,
            tag.offset(),
            None,
        );
        if tag.dead_letter() {
            if refusal != Refusal::TooLarge || record.payload().is_none() {
                return Err(self.dead_letter_refused(&input, error));
            }
            let headers = record.headers().cloned().unwrap_or_else(OwnedHeaders::new);
            return match self
                .dead_letter_without_value(record, &input, headers, tag, error, abandon)
            {
                // Stopping: the input is consumed again after a restart.
                Ok(()) | Err(StageError::Stopping) => Ok(()),
                Err(StageError::Failed(e)) => Err(e),
            };
        }
        if !refusal.is_the_records() {
            return Err(self.platform_failure(record.topic(), &input, error));
        }
        let reason = format!("{} refused an output record: {error}", record.topic());
        // The failed record is replaced in the ledger by the dead letter,
        // which carries the same input offset; skipping settles it.
        let original = match self.config.on_error {
            OnError::DeadLetter => self.reread(&topic, partition, tag.offset()),
            _ => None,
        };
        let m = original.as_ref().unwrap_or(&input);
        let reason = if original.is_none() && self.config.on_error == OnError::DeadLetter {
            format!(
                "{reason}; the input could not be read again, so its dead letter has no key or value"
            )
        } else {
            reason
        };
        match self.fail(
            m,
            dead_letter::KIND_PRODUCE_ERROR,
            &reason,
            tag.slot(),
            abandon,
        ) {
            Ok(0) => {
                ledger.ack(tag);
                Ok(())
            }
            Ok(_) | Err(StageError::Stopping) => Ok(()),
            Err(StageError::Failed(e)) => Err(e),
        }
    }

    /// The input at these coordinates, read again with a consumer outside
    /// the stage's group.
    fn reread(&mut self, topic: &str, partition: i32, offset: i64) -> Option<OwnedMessage> {
        if self.fetcher.is_none() {
            match self.clients.fetcher() {
                Ok(c) => self.fetcher = Some(c),
                Err(e) => {
                    tracing::warn!(stage = self.config.name, error = %e, "cannot re-read inputs");
                    return None;
                }
            }
        }
        let fetcher = self.fetcher.as_ref()?;
        match fetch_one(fetcher, topic, partition, offset, FETCH_TIMEOUT) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(stage = self.config.name, topic, partition, offset, error = %e, "cannot re-read an input");
                None
            }
        }
    }

    /// On stop: waits for what is in flight and writes the state changes
    /// left; once the process is going away (or the stage has failed), up
    /// to its drain timeout from then.
    fn drain(
        &mut self,
        scratch: &mut Vec<Delivery>,
        abandon: &CancellationToken,
        failed: bool,
    ) -> Result<(), TopologyError> {
        let mut deadline = None;
        let mut waiting_since = Instant::now();
        loop {
            let _ = self.producer.flush(Duration::from_millis(100));
            self.settle(scratch, abandon, true)?;
            let outstanding = {
                let progress = self.shared.lock();
                let changes = progress
                    .changelog
                    .as_ref()
                    .is_some_and(|c| c.pending(&*self.shared.store, None));
                progress.ledger.outstanding() + usize::from(changes)
            };
            if outstanding == 0 {
                return Ok(());
            }
            if waiting_since.elapsed() >= Duration::from_secs(10) {
                tracing::warn!(
                    stage = self.config.name,
                    unacknowledged = outstanding,
                    "stopping: still waiting for the broker to acknowledge records"
                );
                waiting_since = Instant::now();
            }
            if !failed && !abandon.is_cancelled() {
                continue;
            }
            if Instant::now()
                >= *deadline.get_or_insert_with(|| Instant::now() + self.control.drain_timeout())
            {
                tracing::warn!(
                    stage = self.config.name,
                    unacknowledged = outstanding,
                    "stopping with messages unacknowledged; they will be consumed again"
                );
                return Ok(());
            }
        }
    }
}

/// Why the records of input `i` exceed the stage's output limits, if
/// they do: one message must not flood a topic.
fn over_output_limits(limits: &Limits, result: &ValidatedResult, i: usize) -> Option<String> {
    let (mut count, mut bytes) = (0usize, 0usize);
    for o in result.outcome(i).ok()? {
        count += 1;
        bytes += o.key.map_or(0, <[u8]>::len) + o.value.map_or(0, <[u8]>::len);
        bytes += o.headers().map(|(k, v)| k.len() + v.len()).sum::<usize>();
    }
    if count > limits.max_outputs_per_message {
        Some(format!(
            "{count} output records for one message; max_outputs_per_message is {}",
            limits.max_outputs_per_message
        ))
    } else if bytes > limits.max_output_bytes_per_message {
        Some(format!(
            "{bytes} bytes of output for one message; max_output_bytes_per_message is {}",
            limits.max_output_bytes_per_message
        ))
    } else {
        None
    }
}

/// A dead letter of `m` with `value` (its own, or none when too large).
fn dead_letter_record<'a>(
    topic: &'a str,
    tag: Tag,
    m: &'a impl Message,
    value: Option<&'a [u8]>,
    headers: OwnedHeaders,
) -> BaseRecord<'a, [u8], [u8], usize> {
    let mut record = BaseRecord::with_opaque_to(topic, tag.word()).headers(headers);
    if let Some(key) = m.key() {
        record = record.key(key);
    }
    if let Some(value) = value {
        record = record.payload(value);
    }
    if let Some(ts) = m.timestamp().to_millis() {
        record = record.timestamp(ts);
    }
    record
}

enum StageError {
    Stopping,
    Failed(TopologyError),
}

impl From<Stopping> for StageError {
    fn from(_: Stopping) -> Self {
        StageError::Stopping
    }
}

fn payload_len(m: &impl Message) -> usize {
    m.payload().map_or(0, <[u8]>::len)
}

fn push(builder: &mut BatchBuilder, m: &BorrowedMessage<'_>) {
    let headers = m.headers();
    let iter = headers
        .into_iter()
        .flat_map(|h| h.iter())
        .map(|h| (h.key, h.value));
    builder.push(
        m.offset(),
        m.timestamp().to_millis(),
        m.key(),
        m.payload(),
        iter,
    );
}
