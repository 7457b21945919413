//! Run control for the admin API: pausing and resuming the stages, the
//! scenario generators, and live fault injection (the F1 Kafka demo's
//! contract, generalised).

mod faults;
mod producer;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use weir_config::request::{self as de, FieldError};

pub use faults::FaultProfile;
use producer::Publisher;

use crate::generate::purple::{self, PurpleSettings};
use crate::generate::{self, Destination, Event, Generator, Scenario, Settings};
use crate::kafka::KafkaClients;
use crate::topology::StageControl;

/// The highest `rate_per_sec` a generator accepts (the F1 Kafka demo capped it at 50).
pub const MAX_RATE: f64 = 200_000.0;

/// The highest `max_messages`: 2^53 - 1, the largest integer a JSON number
/// carries exactly whichever way a client writes it.
pub const MAX_MESSAGES: u64 = (1 << 53) - 1;

/// `POST /api/v1/start`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    #[serde(default)]
    pub bootstrap_servers: Option<String>,
    pub rate_per_sec: f64,
    #[serde(default, deserialize_with = "de::whole_or_null")]
    pub max_messages: Option<u64>,
    /// `f1`, `fleet`, `orders`, `cbad`, or `none` (stages only).
    pub scenario: String,
    #[serde(default)]
    pub topic_prefix: Option<String>,
    #[serde(default, deserialize_with = "de::present")]
    pub fault: Option<FaultProfile>,
    /// The orders scenario's SKUs; kept for later runs. Default:
    /// [`generate::DEFAULT_SKUS`].
    #[serde(default)]
    pub skus: Option<Vec<String>>,
    /// The purple scenario's sessions (cars at 60 Hz each); kept for later
    /// runs. Default: [`purple::DEFAULT_SESSIONS`].
    #[serde(default, deserialize_with = "de::whole_or_null")]
    pub sessions: Option<u64>,
    /// The purple scenario's lap time at the track's pace, in seconds;
    /// kept for later runs. Default 90.
    #[serde(default, deserialize_with = "de::whole_or_null")]
    pub lap_seconds: Option<u64>,
}

/// The shortest and longest lap a purple run may ask for, seconds.
pub const LAP_SECONDS: std::ops::RangeInclusive<u64> = 5..=600;

/// The most SKUs an orders run draws from, and the longest SKU.
pub const MAX_SKUS: usize = 100;
pub const MAX_SKU_CHARS: usize = 64;

/// The F1 Kafka demo's clients sent Swagger's placeholders; they mean "default".
fn meaningful(value: &Option<String>) -> Option<&str> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty() && *v != "string")
}

pub fn parse_scenario(name: &str) -> Result<Option<Scenario>, String> {
    match name {
        "none" => Ok(None),
        "f1" => Ok(Some(Scenario::F1)),
        "orders" => Ok(Some(Scenario::Orders)),
        "fleet" => Ok(Some(Scenario::Fleet)),
        "cbad" => Ok(Some(Scenario::Cbad)),
        "purple" => Ok(Some(Scenario::Purple)),
        other => Err(format!(
            "unknown scenario {other:?}: expected f1, fleet, orders, cbad, purple or none"
        )),
    }
}

impl StartRequest {
    /// Every problem with the request, by field.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if !(self.rate_per_sec > 0.0 && self.rate_per_sec <= MAX_RATE) {
            errors.push(FieldError {
                field: "rate_per_sec".into(),
                message: format!("must be > 0 and <= {MAX_RATE}, got {}", self.rate_per_sec),
            });
        }
        if let Some(max) = self.max_messages.filter(|m| *m > MAX_MESSAGES) {
            errors.push(FieldError {
                field: "max_messages".into(),
                message: format!("must be at most {MAX_MESSAGES}, got {max}"),
            });
        }
        if let Err(message) = parse_scenario(&self.scenario) {
            errors.push(FieldError {
                field: "scenario".into(),
                message,
            });
        }
        if let Some(fault) = &self.fault {
            errors.extend(fault.validate("fault."));
        }
        if let Some(n) = self.sessions
            && !(1..=purple::MAX_SESSIONS as u64).contains(&n)
        {
            errors.push(FieldError {
                field: "sessions".into(),
                message: format!("must be 1 to {}, got {n}", purple::MAX_SESSIONS),
            });
        }
        if let Some(s) = self.lap_seconds.filter(|s| !LAP_SECONDS.contains(s)) {
            errors.push(FieldError {
                field: "lap_seconds".into(),
                message: format!(
                    "must be {} to {}, got {s}",
                    LAP_SECONDS.start(),
                    LAP_SECONDS.end()
                ),
            });
        }
        if let Some(skus) = &self.skus {
            if skus.is_empty() || skus.len() > MAX_SKUS {
                errors.push(FieldError {
                    field: "skus".into(),
                    message: format!("must list 1 to {MAX_SKUS} SKUs, got {}", skus.len()),
                });
            }
            for (i, sku) in skus.iter().enumerate() {
                let chars = sku.chars().count();
                if chars == 0 || chars > MAX_SKU_CHARS {
                    errors.push(FieldError {
                        field: format!("skus[{i}]"),
                        message: format!("must be 1 to {MAX_SKU_CHARS} characters, got {chars}"),
                    });
                }
            }
        }
        errors
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct GeneratorCounters {
    /// Records the broker acknowledged.
    pub produced: u64,
    /// Dropped by the `drop_probability` fault.
    pub dropped: u64,
    /// Extra copies sent by the `duplicate_ratio` fault.
    pub duplicated: u64,
    /// Deliveries the broker refused.
    pub failed: u64,
}

/// What `status` reports of run control.
#[derive(Debug, Clone, Serialize)]
pub struct RunStatus {
    /// Stages are consuming.
    pub running: bool,
    pub generating: bool,
    pub run_id: Option<String>,
    pub scenario: Option<Scenario>,
    pub topics: BTreeMap<String, String>,
    pub bootstrap_servers: String,
    pub generator: GeneratorCounters,
    pub last_message_at: Option<String>,
    pub fault: FaultProfile,
    pub last_error: Option<String>,
}

/// What a generator task is asked to do.
struct Job {
    id: u64,
    scenario: Scenario,
    rate: f64,
    max: Option<u64>,
    /// Overrides the F1 topic prefix for this run.
    prefix: Option<String>,
    cancel: CancellationToken,
}

struct Run {
    /// Tells this run from a later one.
    id: u64,
    cancel: CancellationToken,
    scenario: Scenario,
}

#[derive(Clone)]
pub struct RunControl {
    inner: Arc<Inner>,
}

struct Inner {
    stages: Arc<StageControl>,
    clients: KafkaClients,
    topic_prefix: String,
    /// The topics the pipeline declares.
    declared: Vec<String>,
    /// What the orders scenario sells, as the last start request said.
    skus: RwLock<Vec<String>>,
    /// The purple scenario's sessions and lap, as the last start request
    /// said.
    purple: RwLock<PurpleSettings>,
    publisher: Mutex<Option<(String, Arc<Publisher>)>>,
    /// Generators between runs, so a scenario resumes where it stopped
    /// (F1's per-car `seq` goes on rather than restarting at 0).
    parked: Mutex<BTreeMap<String, Box<dyn Generator>>>,
    run: Mutex<Option<Run>>,
    fault: RwLock<FaultProfile>,
    run_id: RwLock<Option<String>>,
    scenario: RwLock<Option<Scenario>>,
    last_error: RwLock<Option<String>>,
    last_message_ms: AtomicU64,
    dropped: AtomicU64,
    duplicated: AtomicU64,
    runs: AtomicU64,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl RunControl {
    pub fn new(
        stages: Arc<StageControl>,
        clients: KafkaClients,
        topic_prefix: String,
        declared: Vec<String>,
    ) -> Self {
        RunControl {
            inner: Arc::new(Inner {
                stages,
                clients,
                topic_prefix,
                declared,
                skus: RwLock::new(
                    generate::DEFAULT_SKUS
                        .iter()
                        .map(|s| s.to_string())
                        .collect(),
                ),
                purple: RwLock::new(PurpleSettings::default()),
                publisher: Mutex::new(None),
                parked: Mutex::new(BTreeMap::new()),
                run: Mutex::new(None),
                fault: RwLock::new(FaultProfile::default()),
                run_id: RwLock::new(None),
                scenario: RwLock::new(None),
                last_error: RwLock::new(None),
                last_message_ms: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
                duplicated: AtomicU64::new(0),
                runs: AtomicU64::new(0),
            }),
        }
    }

    /// The topic each generator writes to: the scenario's topic as the
    /// pipeline declares it (its plain name, such as `orders`, or a declared
    /// topic ending in `.{name}` when the pipeline namespaces it).
    pub fn topic(&self, destination: Destination) -> String {
        let default = match destination {
            Destination::F1Raw => return format!("{}.telemetry.raw", self.inner.topic_prefix),
            Destination::Orders => "orders",
            Destination::FleetRaw => "raw_telemetry",
            Destination::CbadEvents => "driftlock-events",
            Destination::PurpleTelemetry => "telemetry",
        };
        let declared = &self.inner.declared;
        if declared.iter().any(|t| t == default) {
            return default.to_string();
        }
        let suffix = format!(".{default}");
        let mut matches = declared.iter().filter(|t| t.ends_with(&suffix));
        match (matches.next(), matches.next()) {
            (Some(one), None) => one.clone(),
            _ => default.to_string(),
        }
    }

    fn topics(&self) -> BTreeMap<String, String> {
        [
            ("f1", Destination::F1Raw),
            ("orders", Destination::Orders),
            ("fleet", Destination::FleetRaw),
            ("cbad", Destination::CbadEvents),
            ("purple", Destination::PurpleTelemetry),
        ]
        .into_iter()
        .map(|(s, d)| (s.to_string(), self.topic(d)))
        .collect()
    }

    fn publisher(&self, bootstrap: Option<&str>) -> Result<Arc<Publisher>, String> {
        let bootstrap = bootstrap
            .unwrap_or(&self.inner.clients.bootstrap)
            .to_string();
        let mut slot = lock(&self.inner.publisher);
        if let Some((b, p)) = &*slot
            && *b == bootstrap
        {
            return Ok(p.clone());
        }
        let clients = self.inner.clients.with_bootstrap(bootstrap.clone());
        let publisher = Arc::new(Publisher::new(&clients).map_err(|e| e.to_string())?);
        *slot = Some((bootstrap, publisher.clone()));
        Ok(publisher)
    }

    fn settings(&self, run_id: &str, seed: u64) -> Settings {
        let mut settings = Settings::new(seed, run_id);
        settings.skus = self
            .inner
            .skus
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        settings.purple = self
            .inner
            .purple
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        settings
    }

    fn new_run_id(&self) -> String {
        let n = self.inner.runs.fetch_add(1, Ordering::Relaxed);
        format!("run-{}-{n}", now_ms())
    }

    pub fn is_generating(&self) -> bool {
        lock(&self.inner.run).is_some()
    }

    /// Resumes the stages and, unless `scenario` is `none`, starts a
    /// generator. A run already going is left as it is.
    pub fn start(&self, req: &StartRequest) -> Result<(), String> {
        self.inner.stages.paused.store(false, Ordering::Relaxed);
        if let Some(skus) = &req.skus {
            *self.inner.skus.write().unwrap_or_else(|e| e.into_inner()) = skus.clone();
        }
        if let Some(fault) = &req.fault {
            self.set_fault(fault.clone());
        }
        if req.sessions.is_some() || req.lap_seconds.is_some() {
            let mut purple = self.inner.purple.write().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = req.sessions {
                purple.sessions = n as usize;
            }
            if let Some(s) = req.lap_seconds {
                purple.lap_ms = s * 1000;
            }
            // Other sessions or another track: the cars start afresh.
            lock(&self.inner.parked).remove(&format!("{:?}", Scenario::Purple));
        }
        let Some(scenario) = parse_scenario(&req.scenario)? else {
            return Ok(());
        };
        let mut run = lock(&self.inner.run);
        if run.is_some() {
            return Ok(());
        }
        let publisher = self.publisher(meaningful(&req.bootstrap_servers))?;
        let run_id = self.new_run_id();
        *self.inner.run_id.write().unwrap_or_else(|e| e.into_inner()) = Some(run_id.clone());
        *self
            .inner
            .scenario
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(scenario);
        let cancel = CancellationToken::new();
        let prefix = meaningful(&req.topic_prefix).map(str::to_string);
        let parked = lock(&self.inner.parked).remove(&format!("{scenario:?}"));
        let generator = parked
            .unwrap_or_else(|| generate::generator(scenario, &self.settings(&run_id, 0x5eed)));
        let id = self.inner.runs.fetch_add(1, Ordering::Relaxed);
        let job = Job {
            id,
            scenario,
            rate: req.rate_per_sec,
            max: req.max_messages,
            prefix,
            cancel: cancel.clone(),
        };
        tokio::spawn(self.clone().generate(job, generator, publisher));
        tracing::info!(?scenario, run_id, rate_per_sec = req.rate_per_sec, max_messages = ?req.max_messages, "generator started");
        *run = Some(Run {
            id,
            cancel,
            scenario,
        });
        Ok(())
    }

    /// Stops the generator and pauses every stage (their offsets stay
    /// committed). Idempotent.
    pub fn stop(&self) -> bool {
        self.inner.stages.paused.store(true, Ordering::Relaxed);
        let run = lock(&self.inner.run).take();
        if let Some(run) = &run {
            run.cancel.cancel();
            tracing::info!(scenario = ?run.scenario, "generator stopped");
        }
        run.is_some()
    }

    pub fn set_fault(&self, fault: FaultProfile) {
        self.inner
            .stages
            .slow_consumer_ms
            .store(fault.slow_consumer_ms, Ordering::Relaxed);
        tracing::info!(?fault, "fault profile set");
        *self.inner.fault.write().unwrap_or_else(|e| e.into_inner()) = fault;
    }

    pub fn fault(&self) -> FaultProfile {
        self.inner
            .fault
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn destination_topic(&self, destination: Destination, prefix: Option<&str>) -> String {
        match (destination, prefix) {
            (Destination::F1Raw, Some(p)) => format!("{p}.telemetry.raw"),
            _ => self.topic(destination),
        }
    }

    /// Sends `event` as the fault profile says: after `latency_ms`, perhaps
    /// not at all, perhaps twice.
    async fn publish(
        &self,
        publisher: &Publisher,
        generator: &dyn Generator,
        event: Event,
        prefix: Option<&str>,
        rng: &mut faults::Rng,
    ) {
        let fault = self.fault();
        if fault.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(fault.latency_ms)).await;
        }
        if fault.drop_probability > 0.0 && rng.unit() < fault.drop_probability {
            self.inner.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let topic = self.destination_topic(event.destination, prefix);
        let duplicate = (fault.duplicate_ratio > 0.0 && rng.unit() < fault.duplicate_ratio)
            .then(|| generator.duplicate(&event));
        self.send(publisher, &topic, &event).await;
        if let Some(copy) = duplicate {
            self.inner.duplicated.fetch_add(1, Ordering::Relaxed);
            self.send(publisher, &topic, &copy).await;
        }
        self.inner
            .last_message_ms
            .store(now_ms() as u64, Ordering::Relaxed);
    }

    async fn send(&self, publisher: &Publisher, topic: &str, event: &Event) {
        if let Err(e) = publisher.send(topic, event).await {
            tracing::warn!(topic, error = %e, "generator cannot publish");
            *self
                .inner
                .last_error
                .write()
                .unwrap_or_else(|e| e.into_inner()) = Some(e);
        }
    }

    async fn generate(
        self,
        job: Job,
        mut generator: Box<dyn Generator>,
        publisher: Arc<Publisher>,
    ) {
        let Job {
            id,
            scenario,
            rate,
            max,
            prefix,
            cancel,
        } = job;
        let started = Instant::now();
        let mut sent = 0u64;
        let mut rng = faults::Rng::new(0xfa17);
        while !cancel.is_cancelled() && max.is_none_or(|m| sent < m) {
            // Paced by the clock, not by sleeps per message: behind
            // schedule, it catches up in a burst.
            let due = (started.elapsed().as_secs_f64() * rate) as u64 + 1;
            if sent >= due {
                // Sampled twice, the clock may have passed the due time already:
                // a negative wait is no wait (and must not panic).
                let ahead = (sent + 1) as f64 / rate - started.elapsed().as_secs_f64();
                let wait = Duration::try_from_secs_f64(ahead).unwrap_or(Duration::ZERO);
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(wait.max(Duration::from_micros(200))) => continue,
                }
            }
            let event = generator.next(now_ms());
            self.publish(
                &publisher,
                generator.as_ref(),
                event,
                prefix.as_deref(),
                &mut rng,
            )
            .await;
            sent += 1;
        }
        publisher.flush().await;
        lock(&self.inner.parked).insert(format!("{scenario:?}"), generator);
        // A run that reached max_messages ends by itself.
        let mut run = lock(&self.inner.run);
        if run.as_ref().is_some_and(|r| r.id == id) {
            *run = None;
        }
        tracing::info!(sent, "generator finished");
    }

    /// Publishes `count` events of `scenario` as fast as the producer takes
    /// them and waits until the broker acknowledged all; the campus
    /// food-ordering service's `/load-test`.
    pub async fn load_test(&self, scenario: Scenario, count: u64) -> Result<(u64, u64), String> {
        let publisher = self.publisher(None)?;
        let run_id = self.new_run_id();
        let mut generator = generate::generator(scenario, &self.settings(&run_id, 0x10ad));
        let started = Instant::now();
        let before = publisher.counters().produced;
        for i in 0..count {
            // `send` only waits when the queue is full: without a yield, a
            // large load test holds its worker thread, and the admin API and
            // the stages sharing it stall until it ends.
            if i % 1024 == 1023 {
                tokio::task::yield_now().await;
            }
            let event = generator.next(now_ms());
            let topic = self.topic(event.destination);
            publisher.send(&topic, &event).await?;
        }
        publisher.flush().await;
        let produced = publisher.counters().produced - before;
        Ok((produced, started.elapsed().as_millis() as u64))
    }

    /// Publishes one event: for `orders`, built from a `/produce` body as the
    /// campus food-ordering service took it; otherwise the scenario's next
    /// generated event.
    pub async fn produce_one(
        &self,
        scenario: Scenario,
        order_id: Option<String>,
        items: Option<serde_json::Value>,
    ) -> Result<Event, String> {
        let publisher = self.publisher(None)?;
        let run_id = self
            .inner
            .run_id
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_else(|| self.new_run_id());
        let n = self.inner.runs.fetch_add(1, Ordering::Relaxed);
        let settings = self.settings(&run_id, n);
        let event = match scenario {
            Scenario::Orders => {
                generate::order_from_request(order_id, items, &settings, n, now_ms())
            }
            other => generate::generator(other, &settings).next(now_ms()),
        };
        let topic = self.topic(event.destination);
        publisher.send(&topic, &event).await?;
        publisher.flush().await;
        self.inner
            .last_message_ms
            .store(now_ms() as u64, Ordering::Relaxed);
        Ok(event)
    }

    /// The scenario of the current or last run.
    pub fn scenario(&self) -> Option<Scenario> {
        *self
            .inner
            .scenario
            .read()
            .unwrap_or_else(|e| e.into_inner())
    }

    pub fn status(&self) -> RunStatus {
        let counters = lock(&self.inner.publisher)
            .as_ref()
            .map(|(_, p)| p.counters())
            .unwrap_or_default();
        let last = self.inner.last_message_ms.load(Ordering::Relaxed);
        RunStatus {
            running: !self.inner.stages.paused.load(Ordering::Relaxed),
            generating: self.is_generating(),
            run_id: self
                .inner
                .run_id
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            scenario: self.scenario(),
            topics: self.topics(),
            bootstrap_servers: self.inner.clients.bootstrap.clone(),
            generator: GeneratorCounters {
                produced: counters.produced,
                failed: counters.failed,
                dropped: self.inner.dropped.load(Ordering::Relaxed),
                duplicated: self.inner.duplicated.load(Ordering::Relaxed),
            },
            last_message_at: (last > 0).then(|| generate::format_rfc3339_ms(last as i64)),
            fault: self.fault(),
            last_error: self
                .inner
                .last_error
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }
}
