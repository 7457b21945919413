//! One stage: consume a batch, run the plugin, publish what it returns,
//! hand the deliveries to the ack task.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::ack::{self, Pending, Sent};
use super::{StageInfo, TopologyError, dead_letter};
use crate::config::StageConfig;
use crate::kafka::KafkaError;
use crate::metrics::StageMetrics;
use crate::wasm::{
    BatchBuilder, CallError, Instance, Plugin, Runtime, StageContext, ValidatedResult,
};

/// How many batches' deliveries may await acknowledgement at once.
const ACK_QUEUE: usize = 64;

pub struct Stage {
    config: StageConfig,
    ctx: StageContext,
    runtime: Arc<Runtime>,
    plugin: Arc<Plugin>,
    /// The idle instance. Behind a mutex only so that `&Stage` is `Sync`
    /// (wasmtime stores are `Send` but not `Sync`); it is never contended.
    instance: std::sync::Mutex<Option<Instance>>,
    consumer: Arc<StreamConsumer>,
    producer: FutureProducer,
    /// Output topics, indexed like `ctx.outputs`.
    topics: Vec<String>,
    metrics: Arc<StageMetrics>,
}

/// What became of one input message.
enum Fate<'r> {
    Processed(&'r ValidatedResult, usize),
    Failed { kind: &'static str, reason: String },
}

impl Stage {
    pub(super) fn new(
        config: StageConfig,
        ctx: StageContext,
        runtime: Arc<Runtime>,
        plugin: Arc<Plugin>,
        instance: Instance,
        consumer: Arc<StreamConsumer>,
        producer: FutureProducer,
    ) -> Self {
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
            instance: std::sync::Mutex::new(Some(instance)),
            consumer,
            producer,
            topics,
            metrics,
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

    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), TopologyError> {
        let (ack_tx, ack_rx) = mpsc::channel(ACK_QUEUE);
        let acker = tokio::spawn(ack::run(
            self.config.name.clone(),
            ack_rx,
            self.consumer.clone(),
            self.producer.clone(),
            self.metrics.clone(),
        ));
        let consumer = self.consumer.clone();
        tracing::info!(stage = self.config.name, inputs = ?self.config.inputs, "stage running");
        let result = loop {
            let batch = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break Ok(()),
                batch = self.next_batch(&consumer) => batch,
            };
            if let Err(e) = self.handle(batch, &ack_tx).await {
                break Err(e);
            }
        };
        // Let every delivery in flight be acknowledged and its offset stored,
        // then commit: a clean stop loses nothing and repeats nothing.
        drop(ack_tx);
        let _ = acker.await;
        match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => {}
            Err(rdkafka::error::KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => tracing::warn!(stage = self.config.name, error = %e, "final commit failed"),
        }
        tracing::info!(stage = self.config.name, "stage stopped");
        result
    }

    /// Waits for one message, then takes whatever else arrives within
    /// `max_wait`, up to `max_messages`.
    async fn next_batch<'c>(&self, consumer: &'c StreamConsumer) -> Vec<BorrowedMessage<'c>> {
        let max = self.config.batch.max_messages;
        let mut batch = Vec::with_capacity(max.min(1024));
        loop {
            match consumer.recv().await {
                Ok(m) => {
                    batch.push(m);
                    break;
                }
                Err(e) => {
                    tracing::warn!(stage = self.config.name, error = %e, "consume error");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        let deadline = tokio::time::Instant::now() + self.config.batch.max_wait;
        while batch.len() < max {
            match tokio::time::timeout_at(deadline, consumer.recv()).await {
                Ok(Ok(m)) => batch.push(m),
                Ok(Err(e)) => {
                    tracing::warn!(stage = self.config.name, error = %e, "consume error");
                    break;
                }
                Err(_elapsed) => break,
            }
        }
        batch
    }

    async fn handle(
        &mut self,
        messages: Vec<BorrowedMessage<'_>>,
        ack_tx: &mpsc::Sender<Pending>,
    ) -> Result<(), TopologyError> {
        StageMetrics::add(&self.metrics.consumed, messages.len() as u64);
        StageMetrics::add(&self.metrics.batches, 1);
        // A plugin call sees one partition at a time, so its state scope is
        // unambiguous; order within each partition is kept.
        let mut groups: BTreeMap<(&str, i32), Vec<&BorrowedMessage<'_>>> = BTreeMap::new();
        for m in &messages {
            groups
                .entry((m.topic(), m.partition()))
                .or_default()
                .push(m);
        }
        for ((topic, partition), group) in groups {
            let results = self.process(topic, partition, &group).await;
            let fates = fates(&results, group.len());
            let mut deliveries = Vec::with_capacity(group.len());
            for (m, fate) in group.iter().zip(fates) {
                self.publish(m, fate, &mut deliveries).await;
            }
            let pending = Pending {
                topic: topic.to_string(),
                partition,
                last_offset: group.last().map_or(0, |m| m.offset()),
                inputs: group.len() as u64,
                deliveries,
            };
            if ack_tx.send(pending).await.is_err() {
                return Err(TopologyError::StageFailed {
                    stage: self.config.name.clone(),
                    reason: "the acknowledgement task stopped".into(),
                });
            }
        }
        Ok(())
    }

    /// Runs the plugin on one partition's messages. If the call fails the
    /// instance is replaced and the messages are retried one at a time, so
    /// only a message that fails on its own is dead-lettered.
    async fn process(
        &mut self,
        topic: &str,
        partition: i32,
        group: &[&BorrowedMessage<'_>],
    ) -> Results {
        let bytes: usize = group
            .iter()
            .map(|m| m.payload_len() + m.key().map_or(0, <[u8]>::len) + 64)
            .sum();
        let mut builder = BatchBuilder::new(topic, partition, group.len(), bytes);
        for m in group {
            push(&mut builder, m);
        }
        match self.call(builder).await {
            Ok(result) => {
                Results::Batch(ValidatedResult::new(result, group.len(), self.topics.len()))
            }
            Err(e) => {
                self.note_failure(&e);
                let mut singles = Vec::with_capacity(group.len());
                for m in group {
                    let mut one = BatchBuilder::new(topic, partition, 1, m.payload_len() + 64);
                    push(&mut one, m);
                    singles.push(match self.call(one).await {
                        Ok(r) => Ok(ValidatedResult::new(r, 1, self.topics.len())),
                        Err(e) => {
                            self.note_failure(&e);
                            tracing::warn!(stage = self.config.name, topic, partition, offset = m.offset(), kind = e.kind.as_str(), error = %e.message, "message dead-lettered");
                            Err(e)
                        }
                    });
                }
                Results::Singles(singles)
            }
        }
    }

    fn note_failure(&self, e: &CallError) {
        let counter = match e.kind {
            crate::wasm::CallErrorKind::Timeout => &self.metrics.timeouts,
            _ => &self.metrics.traps,
        };
        StageMetrics::add(counter, 1);
    }

    /// One plugin call on a blocking thread, with a fresh instance if the
    /// last call failed.
    async fn call(&mut self, builder: BatchBuilder) -> Result<crate::wasm::BatchResult, CallError> {
        let idle = self
            .instance
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let instance = match idle {
            Some(i) => i,
            None => {
                StageMetrics::add(&self.metrics.instance_restarts, 1);
                self.runtime
                    .instantiate(&self.plugin, &self.ctx)
                    .map_err(|e| CallError {
                        stage: self.config.name.clone(),
                        kind: crate::wasm::CallErrorKind::Trap,
                        message: e.to_string(),
                    })?
            }
        };
        let batch = builder.into_batch();
        let joined = tokio::task::spawn_blocking(move || {
            let mut instance = instance;
            let result = instance.process(&batch);
            (instance, result)
        })
        .await;
        match joined {
            Ok((instance, Ok(result))) => {
                *self.instance.lock().unwrap_or_else(|e| e.into_inner()) = Some(instance);
                Ok(result)
            }
            // After a trap the instance's memory may be inconsistent: drop it.
            Ok((_instance, Err(e))) => Err(e),
            Err(join) => Err(CallError {
                stage: self.config.name.clone(),
                kind: crate::wasm::CallErrorKind::Trap,
                message: format!("plugin call panicked in the host: {join}"),
            }),
        }
    }

    async fn publish(
        &self,
        m: &BorrowedMessage<'_>,
        fate: Fate<'_>,
        deliveries: &mut Vec<(Sent, DeliveryFuture)>,
    ) {
        let timestamp = m.timestamp().to_millis();
        match fate {
            Fate::Processed(result, i) => match result.outcome(i) {
                Ok(outputs) => {
                    for o in outputs {
                        let mut record = FutureRecord::to(&self.topics[o.target]);
                        if let Some(key) = o.key.or_else(|| m.key()) {
                            record = record.key(key);
                        }
                        if let Some(value) = o.value {
                            record = record.payload(value);
                        }
                        if let Some(ts) = timestamp {
                            record = record.timestamp(ts);
                        }
                        let mut headers = o.headers().peekable();
                        if headers.peek().is_some() {
                            let mut owned = OwnedHeaders::new();
                            for (key, value) in headers {
                                owned = owned.insert(Header {
                                    key,
                                    value: Some(value),
                                });
                            }
                            record = record.headers(owned);
                        }
                        deliveries.push((Sent::Output, self.send(record).await));
                    }
                }
                Err(reason) => {
                    let reason = reason.to_string();
                    self.dead_letter(m, dead_letter::KIND_PLUGIN_ERROR, &reason, deliveries)
                        .await
                }
            },
            Fate::Failed { kind, reason } => self.dead_letter(m, kind, &reason, deliveries).await,
        }
    }

    async fn dead_letter(
        &self,
        m: &BorrowedMessage<'_>,
        kind: &str,
        reason: &str,
        deliveries: &mut Vec<(Sent, DeliveryFuture)>,
    ) {
        let headers = dead_letter::headers(m, &self.config.name, &self.plugin.digest, kind, reason);
        let mut record = FutureRecord::to(&self.config.dead_letter).headers(headers);
        if let Some(key) = m.key() {
            record = record.key(key);
        }
        if let Some(value) = m.payload() {
            record = record.payload(value);
        }
        if let Some(ts) = m.timestamp().to_millis() {
            record = record.timestamp(ts);
        }
        deliveries.push((Sent::DeadLetter, self.send(record).await));
    }

    /// Enqueues a record, waiting while the producer's queue is full.
    async fn send(&self, mut record: FutureRecord<'_, [u8], [u8]>) -> DeliveryFuture {
        loop {
            match self.producer.send_result(record) {
                Ok(delivery) => return delivery,
                Err((e, r)) => {
                    if !matches!(
                        e,
                        rdkafka::error::KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)
                    ) {
                        tracing::warn!(stage = self.config.name, error = %e, "cannot enqueue record; retrying");
                    }
                    record = r;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
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
