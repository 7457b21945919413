//! Forwards every message unchanged (key, value and headers) to the stage's
//! `default` output. The smallest complete weir plugin, and the baseline of
//! the benchmarks.

use weir_plugin::{Emitter, InitContext, Message, OutputId, Processor, export_processor};

pub struct Passthrough {
    out: OutputId,
}

impl Processor for Passthrough {
    fn init(ctx: &InitContext) -> Result<Self, String> {
        Ok(Passthrough {
            out: ctx.output("default")?,
        })
    }

    fn process(&mut self, msg: &Message<'_>, out: &mut Emitter<'_>) -> Result<(), String> {
        out.forward(self.out, msg);
        Ok(())
    }
}

export_processor!(Passthrough);

#[cfg(test)]
mod tests {
    use super::*;
    use weir_plugin::testing::{Harness, TestMessage};

    #[test]
    fn forwards_key_value_and_headers() {
        let mut h = Harness::<Passthrough>::new(&["default"], serde_json::json!({})).unwrap();
        let out = h
            .process_one(TestMessage::new("v").key("k").header("h", "1"))
            .unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].output, "default");
        assert_eq!(out[0].key.as_deref(), Some(&b"k"[..]));
        assert_eq!(out[0].value.as_deref(), Some(&b"v"[..]));
        assert_eq!(out[0].headers, vec![(b"h".to_vec(), b"1".to_vec())]);
    }

    #[test]
    fn init_fails_without_default_output() {
        let err = Harness::<Passthrough>::new(&["other"], serde_json::json!({}))
            .err()
            .unwrap();
        assert!(err.contains("no output \"default\""), "{err}");
    }
}
