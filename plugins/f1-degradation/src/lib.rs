//! F1 tyre-degradation scoring (seed 000): enriches raw car telemetry with a
//! `degradation_score` and `fault_flags`, and sends it to the `default`
//! output (the analytics topic). Messages that are not JSON objects, or that
//! lack `car_id` or a tyre temperature, are rejected to the dead-letter topic.

mod score;

pub use score::{Config, Enriched, enrich};
use weir_plugin::{Emitter, InitContext, Message, OutputId, Processor, export_processor};

pub struct Degradation {
    out: OutputId,
    config: Config,
}

impl Processor for Degradation {
    fn init(ctx: &InitContext) -> Result<Self, String> {
        Ok(Degradation {
            out: ctx.output("default")?,
            config: ctx.config()?,
        })
    }

    fn process(&mut self, msg: &Message<'_>, out: &mut Emitter<'_>) -> Result<(), String> {
        let value = msg.value().ok_or("null value")?;
        let enriched = enrich(value, &self.config)?;
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
}
