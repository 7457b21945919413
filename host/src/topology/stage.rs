//! One stage: a thread that consumes a batch, runs the plugin on it,
//! publishes what it returns and stores the offsets the broker has
//! acknowledged everything for.
//!
//! The hot loop is synchronous on purpose. librdkafka already does its
//! network I/O on its own threads; a stage thread that polls, calls the
//! plugin in place and enqueues records keeps the per-message cost to what
//! a hand-written rdkafka loop pays, with no task hand-off, channel or
//! future per message (the benchmark's B1 rung is that loop).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError as RdKafkaError;
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use tokio_util::sync::CancellationToken;

use super::ack::{Deliveries, Delivery, Ledger, Tag};
use super::lag::LagSampler;
use super::reload::Swap;
use super::{StageControl, StageInfo, TopologyError, dead_letter};
use crate::config::{OnError, StageConfig};
use crate::kafka::KafkaError;
use crate::metrics::StageMetrics;
use crate::wasm::{
    BatchBuilder, BatchResult, CallError, CallErrorKind, Instance, Plugin, Runtime, StageContext,
    ValidatedResult,
};

/// How long a poll waits for the first message of a batch before the loop
/// looks at acknowledgements and the shutdown signal again.
const IDLE_POLL: Duration = Duration::from_millis(50);
/// How long a clean stop waits for the broker to acknowledge what is in
/// flight. Whatever is still unacknowledged then is not committed, so it is
/// consumed again after a restart.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
const RETRY_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Extra attempts a message alone gets after timing out, before it fails.
const TIMEOUT_RETRIES: u32 = 2;
const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(10);

pub type StageProducer = ThreadedProducer<Deliveries>;

/// A stage's connections: Kafka both ways, and reloads.
pub struct StageIo {
    pub consumer: BaseConsumer,
    pub producer: StageProducer,
    pub swaps: Receiver<Swap>,
    pub control: Arc<StageControl>,
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
    consumer: Arc<BaseConsumer>,
    producer: StageProducer,
    /// Output topics, indexed like `ctx.outputs`.
    topics: Vec<String>,
    metrics: Arc<StageMetrics>,
    /// New plugin instances from reloads, taken between batches.
    swaps: Receiver<Swap>,
    /// The generation running, as the `weir.generation` header carries it.
    generation: String,
    control: Arc<StageControl>,
}

/// What became of one input message.
enum Fate<'r> {
    Processed(&'r ValidatedResult, usize),
    Failed { kind: &'static str, reason: String },
}

/// A record the broker refused, waiting to be sent again.
struct Retry {
    due: Instant,
    backoff: Duration,
    tag: Tag,
    record: OwnedMessage,
}

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
            swaps,
            control,
        } = io;
        let topics = ctx
            .outputs
            .iter()
            .map(|o| config.outputs[o].clone())
            .collect();
        let metrics = runtime.metrics.stage(&config.name);
        Stage {
            config,
            ctx,
            runtime,
            plugin,
            instance: Some(instance),
            consumer: Arc::new(consumer),
            producer,
            topics,
            metrics,
            swaps,
            generation: generation.to_string(),
            control,
        }
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
            let change_to_live_ms = swap.requested_at.elapsed().as_millis() as u64;
            let swap_pause_us = started.elapsed().as_micros() as u64;
            StageMetrics::add(&self.metrics.swaps, 1);
            let relaxed = std::sync::atomic::Ordering::Relaxed;
            self.metrics
                .last_change_to_live_ms
                .store(change_to_live_ms, relaxed);
            self.metrics
                .last_swap_pause_us
                .store(swap_pause_us, relaxed);
            tracing::info!(
                stage = self.config.name,
                generation = swap.generation,
                digest = &self.plugin.digest[..12],
                change_to_live_ms,
                swap_pause_us,
                "plugin swapped in"
            );
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

    /// Runs until `shutdown` fires or the stage fails, then lets what is in
    /// flight be acknowledged and commits: a clean stop loses nothing and
    /// repeats nothing.
    pub fn run(mut self, shutdown: CancellationToken) -> Result<(), TopologyError> {
        let consumer = self.consumer.clone();
        // Stopped (dropped) when `run` returns, before the consumer is.
        let _lag = LagSampler::spawn(
            &self.config.name,
            consumer.clone(),
            self.config.inputs.clone(),
            self.metrics.clone(),
        );
        let mut ledger = Ledger::default();
        let mut retries = Vec::new();
        let mut deliveries = Vec::new();
        tracing::info!(stage = self.config.name, inputs = ?self.config.inputs, "stage running");
        let result = loop {
            if shutdown.is_cancelled() {
                break Ok(());
            }
            self.take_swaps();
            // Paused by the operator: no polling, but acknowledgements keep
            // settling and offsets committing. A pause longer than the
            // consumer's max.poll.interval.ms leaves the group; the next
            // poll rejoins from the committed offsets.
            if self.control.paused.load(Ordering::Relaxed) {
                self.settle(&mut ledger, &mut retries, &mut deliveries);
                std::thread::sleep(IDLE_POLL);
                continue;
            }
            let batch = self.next_batch(&consumer);
            if !batch.is_empty() {
                match self.handle(&batch, &mut ledger, &shutdown) {
                    Ok(()) => {}
                    Err(StageError::Stopping) => break Ok(()),
                    Err(StageError::Failed(e)) => break Err(e),
                }
            }
            drop(batch);
            self.settle(&mut ledger, &mut retries, &mut deliveries);
        };
        self.drain(&mut ledger, &mut retries, &mut deliveries);
        match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) | Err(RdKafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => tracing::warn!(stage = self.config.name, error = %e, "final commit failed"),
        }
        tracing::info!(stage = self.config.name, "stage stopped");
        result
    }

    /// Waits up to [`IDLE_POLL`] for one message, then takes whatever else
    /// arrives within `max_wait`, up to `max_messages`.
    fn next_batch<'c>(&self, consumer: &'c BaseConsumer) -> Vec<BorrowedMessage<'c>> {
        let max = self.config.batch.max_messages;
        let mut batch = Vec::new();
        let Some(first) = self.poll(consumer, IDLE_POLL) else {
            return batch;
        };
        batch.reserve(max.min(1024));
        batch.push(first);
        let deadline = Instant::now() + self.config.batch.max_wait;
        while batch.len() < max {
            // Messages already fetched come back without waiting.
            if let Some(m) = self.poll(consumer, Duration::ZERO) {
                batch.push(m);
                continue;
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            match self.poll(consumer, deadline - now) {
                Some(m) => batch.push(m),
                None => break,
            }
        }
        batch
    }

    fn poll<'c>(
        &self,
        consumer: &'c BaseConsumer,
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
        ledger: &mut Ledger,
        shutdown: &CancellationToken,
    ) -> Result<(), StageError> {
        // The slow-consumer fault: a sleep per consumed message.
        let slow = self.control.slow_consumer_ms.load(Ordering::Relaxed);
        if slow > 0 {
            std::thread::sleep(Duration::from_millis(
                slow.saturating_mul(messages.len() as u64),
            ));
        }
        let started = Instant::now();
        StageMetrics::add(&self.metrics.consumed, messages.len() as u64);
        StageMetrics::add(&self.metrics.batches, 1);
        // A plugin call sees one partition at a time, so its state scope is
        // unambiguous; order within each partition is kept.
        let mut groups: BTreeMap<(&str, i32), Vec<&BorrowedMessage<'_>>> = BTreeMap::new();
        for m in messages {
            groups
                .entry((m.topic(), m.partition()))
                .or_default()
                .push(m);
        }
        let limit = self.config.limits.max_payload_bytes;
        for ((topic, partition), group) in groups {
            let slot = ledger.slot(topic, partition, group[0].offset());
            // An oversized message never reaches the plugin: it could not
            // make the plugin do anything but run out of memory or time.
            let admitted: Vec<&BorrowedMessage<'_>> = group
                .iter()
                .copied()
                .filter(|m| payload_size(m) <= limit)
                .collect();
            let results = (!admitted.is_empty()).then(|| self.process(topic, partition, &admitted));
            let mut admitted_fates = results
                .as_ref()
                .map(|r| fates(r, admitted.len()))
                .unwrap_or_default()
                .into_iter();
            for m in &group {
                let size = payload_size(m);
                let fate = if size > limit {
                    Fate::Failed {
                        kind: dead_letter::KIND_OVERSIZE,
                        reason: format!(
                            "message of {size} bytes (key and value) is over the stage's \
                             max_payload_bytes of {limit}"
                        ),
                    }
                } else {
                    admitted_fates
                        .next()
                        .expect("process returns one fate per admitted message")
                };
                let sent = self.publish(m, fate, slot, shutdown)?;
                ledger.push(slot, m.offset(), sent);
            }
        }
        self.metrics.batch_duration.record(started.elapsed());
        Ok(())
    }

    /// Runs the plugin on one partition's messages. If the call fails the
    /// instance is replaced and the messages are retried one at a time, so
    /// only a message that fails on its own is dead-lettered.
    fn process(&mut self, topic: &str, partition: i32, group: &[&BorrowedMessage<'_>]) -> Results {
        let bytes: usize = group
            .iter()
            .map(|m| m.payload_len() + m.key().map_or(0, <[u8]>::len) + 64)
            .sum();
        let mut builder = BatchBuilder::new(topic, partition, group.len(), bytes);
        for m in group {
            push(&mut builder, m);
        }
        match self.call(&builder) {
            Ok(result) => {
                Results::Batch(ValidatedResult::new(result, group.len(), self.topics.len()))
            }
            Err(e) => {
                self.note_failure(&e);
                let mut singles = Vec::with_capacity(group.len());
                for m in group {
                    let mut one = BatchBuilder::new(topic, partition, 1, m.payload_len() + 64);
                    push(&mut one, m);
                    let mut timeouts = 0;
                    let outcome = loop {
                        match self.call(&one) {
                            Ok(r) => break Ok(ValidatedResult::new(r, 1, self.topics.len())),
                            // The deadline is wall time: a host starved of
                            // CPU can miss it through no fault of the
                            // message, so a timeout gets more chances
                            // before the message is failed.
                            Err(e)
                                if e.kind == CallErrorKind::Timeout
                                    && timeouts < TIMEOUT_RETRIES =>
                            {
                                self.note_failure(&e);
                                timeouts += 1;
                            }
                            Err(e) => {
                                self.note_failure(&e);
                                break Err(e);
                            }
                        }
                    };
                    singles.push(outcome);
                }
                Results::Singles(singles)
            }
        }
    }

    fn note_failure(&self, e: &CallError) {
        let counter = match e.kind {
            CallErrorKind::Timeout => &self.metrics.timeouts,
            _ => &self.metrics.traps,
        };
        StageMetrics::add(counter, 1);
    }

    /// One plugin call, on a fresh instance if the last call failed. After
    /// a failure the instance's memory may be inconsistent, so it is dropped.
    fn call(&mut self, builder: &BatchBuilder) -> Result<BatchResult, CallError> {
        let mut instance = match self.instance.take() {
            Some(i) => i,
            None => {
                StageMetrics::add(&self.metrics.instance_restarts, 1);
                self.runtime
                    .instantiate(&self.plugin, &self.ctx)
                    .map_err(|e| CallError {
                        stage: self.config.name.clone(),
                        kind: CallErrorKind::Trap,
                        message: e.to_string(),
                    })?
            }
        };
        let result = instance.process(builder.batch());
        self.metrics.memory_seen(instance.memory_high_water());
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
        shutdown: &CancellationToken,
    ) -> Result<u32, StageError> {
        let timestamp = m.timestamp().to_millis();
        let tag = Tag::new(slot, m.offset(), false);
        let (kind, reason) = match fate {
            Fate::Processed(result, i) => match result.outcome(i) {
                Ok(outputs) => {
                    if let Some(reason) = self.over_output_limits(result, i) {
                        return self.fail(
                            m,
                            dead_letter::KIND_OUTPUT_LIMIT,
                            &reason,
                            slot,
                            shutdown,
                        );
                    }
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
                        match self.send(record, shutdown)? {
                            Ok(()) => sent += 1,
                            // The broker will never take this record (too
                            // large, say): the input goes to the dead-letter
                            // topic instead, so it is neither lost nor stuck.
                            Err(e) => {
                                let reason = format!(
                                    "cannot publish output to {}: {e}",
                                    self.topics[o.target]
                                );
                                return Ok(sent
                                    + self.fail(
                                        m,
                                        dead_letter::KIND_OUTPUT_LIMIT,
                                        &reason,
                                        slot,
                                        shutdown,
                                    )?);
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
        self.fail(m, kind, &reason, slot, shutdown)
    }

    /// Why the records of input `i` exceed the stage's output limits, if
    /// they do: one message must not flood a topic.
    fn over_output_limits(&self, result: &ValidatedResult, i: usize) -> Option<String> {
        let limits = &self.config.limits;
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

    /// Handles a failed message as the stage's `on_error` says. Returns the
    /// records enqueued for it (0 when skipped); halting fails the stage
    /// before the message is marked done, so nothing is committed past it.
    fn fail(
        &self,
        m: &BorrowedMessage<'_>,
        kind: &str,
        reason: &str,
        slot: u32,
        shutdown: &CancellationToken,
    ) -> Result<u32, StageError> {
        self.metrics.failed(kind);
        let stage = self.config.name.as_str();
        let (topic, partition, offset) = (m.topic(), m.partition(), m.offset());
        let policy = self.config.on_error.as_str();
        if kind == dead_letter::KIND_PLUGIN_ERROR {
            // The plugin's own verdict on bad data: routine, and possibly
            // frequent.
            tracing::debug!(
                stage,
                topic,
                partition,
                offset,
                kind,
                policy,
                error = reason,
                "message failed"
            );
        } else {
            tracing::warn!(
                stage,
                topic,
                partition,
                offset,
                kind,
                policy,
                error = reason,
                "message failed"
            );
        }
        match self.config.on_error {
            OnError::DeadLetter => self.dead_letter(m, kind, reason, slot, shutdown),
            OnError::Skip => {
                StageMetrics::add(&self.metrics.skipped, 1);
                Ok(0)
            }
            OnError::Halt => Err(StageError::Failed(TopologyError::StageFailed {
                stage: stage.to_string(),
                reason: format!(
                    "on_error = \"halt\": {topic}/{partition}@{offset} failed ({kind}): {reason}"
                ),
            })),
        }
    }

    fn dead_letter(
        &self,
        m: &BorrowedMessage<'_>,
        kind: &str,
        reason: &str,
        slot: u32,
        shutdown: &CancellationToken,
    ) -> Result<u32, StageError> {
        let headers = dead_letter::headers(m, &self.config.name, &self.plugin.digest, kind, reason);
        let tag = Tag::new(slot, m.offset(), true);
        let mut record =
            BaseRecord::with_opaque_to(&self.config.dead_letter, tag.word()).headers(headers);
        if let Some(key) = m.key() {
            record = record.key(key);
        }
        if let Some(value) = m.payload() {
            record = record.payload(value);
        }
        if let Some(ts) = m.timestamp().to_millis() {
            record = record.timestamp(ts);
        }
        match self.send(record, shutdown)? {
            Ok(()) => Ok(1),
            // Nothing is committed past this message; stopping the stage is
            // the only way not to lose it.
            Err(e) => Err(StageError::Failed(TopologyError::StageFailed {
                stage: self.config.name.clone(),
                reason: format!(
                    "cannot dead-letter {}/{}@{} to {}: {e}",
                    m.topic(),
                    m.partition(),
                    m.offset(),
                    self.config.dead_letter
                ),
            })),
        }
    }

    /// Enqueues a record, waiting while the producer's queue is full. The
    /// inner error is one the broker would never accept.
    fn send(
        &self,
        mut record: BaseRecord<'_, [u8], [u8], usize>,
        shutdown: &CancellationToken,
    ) -> Result<Result<(), RdKafkaError>, Stopping> {
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(Ok(())),
                Err((RdKafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    if shutdown.is_cancelled() {
                        return Err(Stopping);
                    }
                    record = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => return Ok(Err(e)),
            }
        }
    }

    /// Applies the broker's acknowledgements, re-sends refused records that
    /// are due, and stores the offsets that are complete.
    fn settle(&self, ledger: &mut Ledger, retries: &mut Vec<Retry>, scratch: &mut Vec<Delivery>) {
        {
            let mut by_topic = self
                .metrics
                .acknowledged_by_topic
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            self.producer.context().drain(scratch, &mut by_topic);
        }
        for d in scratch.drain(..) {
            match d.failed {
                None => {
                    if ledger.ack(d.tag) {
                        let counter = if d.tag.dead_letter() {
                            &self.metrics.dead_lettered
                        } else {
                            &self.metrics.emitted
                        };
                        StageMetrics::add(counter, 1);
                    }
                }
                Some((error, record)) => {
                    tracing::warn!(stage = self.config.name, topic = record.topic(), partition = record.partition(), error = %error, "delivery failed; retrying");
                    retries.push(Retry {
                        due: Instant::now() + RETRY_BACKOFF_MIN,
                        backoff: RETRY_BACKOFF_MIN,
                        tag: d.tag,
                        record,
                    });
                }
            }
        }
        if !retries.is_empty() {
            let now = Instant::now();
            for r in retries.iter_mut().filter(|r| r.due <= now) {
                let m = &r.record;
                let mut record =
                    BaseRecord::with_opaque_to(m.topic(), r.tag.word()).partition(m.partition());
                if let Some(k) = m.key() {
                    record = record.key(k);
                }
                if let Some(v) = m.payload() {
                    record = record.payload(v);
                }
                if let Some(ts) = m.timestamp().to_millis() {
                    record = record.timestamp(ts);
                }
                if let Some(h) = m.headers() {
                    record = record.headers(h.clone());
                }
                match self.producer.send(record) {
                    // Sent again: its delivery report decides what's next.
                    Ok(()) => r.backoff = Duration::ZERO,
                    Err((e, _)) => {
                        tracing::warn!(stage = self.config.name, error = %e, "cannot enqueue retry");
                        r.backoff = (r.backoff * 2).min(RETRY_BACKOFF_MAX);
                        r.due = now + r.backoff;
                    }
                }
            }
            retries.retain(|r| r.backoff != Duration::ZERO);
        }
        let consumer = &self.consumer;
        let metrics = &self.metrics;
        ledger.advance(|topic, partition, last, n| {
            // librdkafka stores `last + 1`: the next message to read.
            match consumer.store_offset(topic, partition, last) {
                Ok(()) => StageMetrics::add(&metrics.committed, n),
                // Revoked in a rebalance: its new owner re-reads from the
                // last commit.
                Err(e) => tracing::debug!(topic, partition, error = %e, "offset not stored"),
            }
        });
    }

    /// On stop: waits for what is in flight, up to [`DRAIN_TIMEOUT`].
    fn drain(&self, ledger: &mut Ledger, retries: &mut Vec<Retry>, scratch: &mut Vec<Delivery>) {
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        loop {
            let _ = self.producer.flush(Duration::from_millis(100));
            self.settle(ledger, retries, scratch);
            if ledger.outstanding() == 0 && retries.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                tracing::warn!(
                    stage = self.config.name,
                    unacknowledged = ledger.outstanding(),
                    "stopping with messages unacknowledged; they will be consumed again"
                );
                return;
            }
        }
    }
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

enum Results {
    Batch(ValidatedResult),
    Singles(Vec<Result<ValidatedResult, CallError>>),
}

fn fates(results: &Results, n: usize) -> Vec<Fate<'_>> {
    match results {
        Results::Batch(r) => (0..n).map(|i| Fate::Processed(r, i)).collect(),
        Results::Singles(rs) => rs
            .iter()
            .map(|r| match r {
                Ok(r) => Fate::Processed(r, 0),
                Err(e) => Fate::Failed {
                    kind: e.kind.as_str(),
                    reason: e.message.clone(),
                },
            })
            .collect(),
    }
}

/// What `max_payload_bytes` measures: the key and the value.
fn payload_size(m: &BorrowedMessage<'_>) -> usize {
    m.payload_len() + m.key().map_or(0, <[u8]>::len)
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
