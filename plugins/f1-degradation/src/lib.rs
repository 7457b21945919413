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
        out.emit(self.out, &enriched.json);
        Ok(())
    }
}

export_processor!(Degradation);
