//! The glue between the generated bindings and a [`Processor`]. Public only
//! for [`crate::export_processor!`].

use std::any::Any;
use std::cell::RefCell;

use crate::bindings::weir::plugin::types::{self as wit, Batch, BatchResult, Span};
use crate::emit::Emitter;
use crate::message::Message;
use crate::{InitContext, Processor};

thread_local! {
    // A component instance is single-threaded, and the host calls `init`
    // before any `process`; the plugin lives here between calls.
    static PLUGIN: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
    static OUTPUTS: RefCell<u32> = const { RefCell::new(0) };
}

pub fn init<P: Processor>(ctx: wit::InitContext) -> Result<(), String> {
    let ctx = InitContext {
        stage: ctx.stage,
        outputs: ctx.outputs,
        config_json: ctx.config,
    };
    let plugin = P::init(&ctx)?;
    OUTPUTS.with(|o| *o.borrow_mut() = ctx.outputs.len() as u32);
    PLUGIN.with(|p| *p.borrow_mut() = Some(Box::new(plugin)));
    Ok(())
}

pub fn process<P: Processor>(batch: Batch) -> BatchResult {
    PLUGIN.with(|p| {
        let mut slot = p.borrow_mut();
        match slot.as_mut().and_then(|b| b.downcast_mut::<P>()) {
            Some(plugin) => process_with(plugin, &batch, OUTPUTS.with(|o| *o.borrow())),
            None => reject_all(&batch, "plugin used before init"),
        }
    })
}

pub(crate) fn process_with<P: Processor>(
    plugin: &mut P,
    batch: &Batch,
    output_count: u32,
) -> BatchResult {
    let n = batch.messages.len();
    let mut result = BatchResult {
        outcomes: Vec::with_capacity(n),
        outputs: Vec::with_capacity(n),
        headers: Vec::new(),
        data: Vec::with_capacity(batch.data.len() + n * 64),
    };
    for m in &batch.messages {
        let headers = batch
            .headers
            .get(m.headers.offset as usize..(m.headers.offset + m.headers.len) as usize)
            .unwrap_or(&[]);
        let msg = Message {
            topic: batch
                .topics
                .get(m.topic as usize)
                .map(String::as_str)
                .unwrap_or(""),
            partition: m.partition,
            offset: m.offset,
            timestamp_ms: m.timestamp_ms,
            key: m.key,
            value: m.value,
            headers,
            data: &batch.data,
        };
        let marks = (
            result.outputs.len(),
            result.headers.len(),
            result.data.len(),
        );
        let mut emitter = Emitter {
            result: &mut result,
            output_count,
        };
        match plugin.process(&msg, &mut emitter) {
            Ok(()) => {
                let len = result.outputs.len() - marks.0;
                result.outcomes.push(Ok(Span {
                    offset: marks.0 as u32,
                    len: len as u32,
                }));
            }
            Err(reason) => {
                result.outputs.truncate(marks.0);
                result.headers.truncate(marks.1);
                result.data.truncate(marks.2);
                result.outcomes.push(Err(reason));
            }
        }
    }
    result
}

fn reject_all(batch: &Batch, reason: &str) -> BatchResult {
    BatchResult {
        outcomes: batch
            .messages
            .iter()
            .map(|_| Err(reason.to_string()))
            .collect(),
        outputs: Vec::new(),
        headers: Vec::new(),
        data: Vec::new(),
    }
}

#[cfg(not(target_arch = "wasm32"))]
/// Resolves a span of a batch result, for [`crate::testing`].
pub(crate) fn result_bytes(result: &BatchResult, span: Span) -> Vec<u8> {
    crate::message::slice(&result.data, span).to_vec()
}
