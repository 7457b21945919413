//! F1 tyre-degradation scoring: enriches raw car telemetry with a
//! `degradation_score` and `fault_flags`, and sends it to the `default`
//! output (the analytics topic). Messages that are not JSON objects, or that
//! lack `car_id` or a tyre temperature, are rejected to the dead-letter topic.
//! A repeat of (`car_id`, `seq`) within the dedup window is dropped.

mod dedup;
mod score;

use dedup::Dedup;

pub use score::{Config, Enriched, enrich};
use weir_plugin::{Emitter, InitContext, Message, OutputId, Processor, export_processor, metrics};

pub struct Degradation {
    out: OutputId,
    config: Config,
    dedup: Dedup,
}

impl Processor for Degradation {
    fn init(ctx: &InitContext) -> Result<Self, String> {
        let config: Config = ctx.config()?;
        Ok(Degradation {
            out: ctx.output("default")?,
            dedup: Dedup::new(config.dedup_window),
            config,
        })
    }

    fn process(&mut self, msg: &Message<'_>, out: &mut Emitter<'_>) -> Result<(), String> {
        let value = msg.value().ok_or("null value")?;
        let enriched = enrich(value, &self.config)?;
        if let Some(seq) = enriched.seq
            && !self
                .dedup
                .first_sight(msg.partition(), &enriched.car_id, seq)
        {
            metrics::counter_add("duplicates_dropped", &[], 1);
            return Ok(());
        }
        // An enrichment: the input's headers (trace context) carry over.
        out.emit(self.out, &enriched.json).headers_from(msg);
        Ok(())
    }
}

export_processor!(Degradation);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use weir_plugin::testing::{Harness, TestMessage};

    #[test]
    fn enriched_output_keeps_the_input_headers() {
        let mut h = Harness::<Degradation>::new(&["default"], json!({})).unwrap();
        let msg = TestMessage::json(&json!({
            "car_id": "CAR-1", "tire_temp_fl": 90.0, "tire_temp_fr": 90.0,
            "tire_temp_rl": 90.0, "tire_temp_rr": 90.0
        }))
        .header("traceparent", "00-abc-01");
        let out = h.process_one(msg).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].json()["degradation_score"], 0.286);
        assert_eq!(
            out[0].headers,
            vec![(b"traceparent".to_vec(), b"00-abc-01".to_vec())]
        );
    }

    fn telemetry(car: &str, seq: u64) -> TestMessage {
        TestMessage::json(&json!({
            "car_id": car, "seq": seq, "tire_temp_fl": 95.0, "tire_temp_fr": 95.0,
            "tire_temp_rl": 95.0, "tire_temp_rr": 95.0
        }))
        .key(car)
    }

    #[test]
    fn a_redelivered_message_is_analysed_once() {
        let mut h = Harness::<Degradation>::new(&["default"], json!({})).unwrap();
        let results = h.process(&[
            telemetry("CAR-1", 1),
            telemetry("CAR-1", 2),
            telemetry("CAR-1", 1),
        ]);
        let counts: Vec<usize> = results.iter().map(|r| r.as_ref().unwrap().len()).collect();
        assert_eq!(counts, vec![1, 1, 0]);
        assert_eq!(weir_plugin::testing::counter("duplicates_dropped", &[]), 1);
        // In a later batch too, and from a new instance of the plugin (the
        // fake host state is per test thread, as the host's is per stage).
        let mut again = Harness::<Degradation>::new(&["default"], json!({})).unwrap();
        assert!(again.process_one(telemetry("CAR-1", 2)).unwrap().is_empty());
        // The same car and number on another partition is another message.
        assert_eq!(
            again
                .process_one(telemetry("CAR-1", 2).partition(1))
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn dedup_can_be_turned_off() {
        let mut h = Harness::<Degradation>::new(&["default"], json!({"dedup_window": 0})).unwrap();
        assert_eq!(h.process_one(telemetry("CAR-1", 1)).unwrap().len(), 1);
        assert_eq!(h.process_one(telemetry("CAR-1", 1)).unwrap().len(), 1);
    }
}
