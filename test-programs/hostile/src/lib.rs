//! A plugin that misbehaves when a message tells it to, so the host's fault
//! isolation can be tested against a real component. Every other message is
//! recorded in keyed state (`seen/{value}`) and forwarded.
//!
//! | value    | what the plugin does |
//! |----------|----------------------|
//! | `panic`  | panics (a trap)      |

use weir_plugin::{Emitter, InitContext, Message, OutputId, Processor, export_processor, state};

pub struct Hostile {
    out: OutputId,
}

impl Processor for Hostile {
    fn init(ctx: &InitContext) -> Result<Self, String> {
        Ok(Hostile {
            out: ctx.output("default")?,
        })
    }

    fn process(&mut self, msg: &Message<'_>, out: &mut Emitter<'_>) -> Result<(), String> {
        let value = msg.value().unwrap_or_default();
        if value == b"panic" {
            panic!("told to panic");
        }
        let mut key = b"seen/".to_vec();
        key.extend_from_slice(value);
        state::set(&key, b"1");
        out.forward(self.out, msg);
        Ok(())
    }
}

export_processor!(Hostile);
