//! The glue between the generated bindings and a [`Processor`]. Public only
//! for [`crate::export_processor!`].

use std::any::Any;
use std::cell::RefCell;

use crate::bindings::weir::plugin::types::{self as wit, Batch, BatchResult, Rejection};
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
    // Its state writes reach the host only if it succeeds.
    let plugin = crate::host::overlay::run(|| P::init(&ctx))?;
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
    let n = batch.offsets.len();
    let mut result = BatchResult {
        counts: Vec::with_capacity(n),
        targets: Vec::with_capacity(n),
        keys: Vec::with_capacity(2 * n),
        values: Vec::with_capacity(2 * n),
        headers: Vec::with_capacity(2 * n),
        header_spans: Vec::new(),
        data: Vec::with_capacity(batch.data.len() + n * 64),
        rejected: Vec::new(),
    };
    for index in 0..n {
        let msg = Message { batch, index };
        let marks = (
            result.targets.len(),
            result.header_spans.len(),
            result.data.len(),
        );
        let mut emitter = Emitter {
            result: &mut result,
            output_count,
        };
        // The message's state writes reach the host only if it is accepted:
        // a rejected message leaves no state behind.
        match crate::host::overlay::run(|| plugin.process(&msg, &mut emitter)) {
            Ok(()) => result.counts.push((result.targets.len() - marks.0) as u32),
            Err(reason) => {
                // Drop whatever it emitted before failing.
                result.targets.truncate(marks.0);
                result.keys.truncate(2 * marks.0);
                result.values.truncate(2 * marks.0);
                result.headers.truncate(2 * marks.0);
                result.header_spans.truncate(marks.1);
                result.data.truncate(marks.2);
                result.counts.push(0);
                result.rejected.push(Rejection {
                    index: index as u32,
                    reason,
                });
            }
        }
    }
    result
}

fn reject_all(batch: &Batch, reason: &str) -> BatchResult {
    let n = batch.offsets.len();
    BatchResult {
        counts: vec![0; n],
        targets: Vec::new(),
        keys: Vec::new(),
        values: Vec::new(),
        headers: Vec::new(),
        header_spans: Vec::new(),
        data: Vec::new(),
        rejected: (0..n as u32)
            .map(|index| Rejection {
                index,
                reason: reason.to_string(),
            })
            .collect(),
    }
}
