//! A component built against `weir:plugin@0.0.9` instead of the host's
//! version (`wit/plugin.wit` here is the 0.1.0 contract with only the
//! package version changed). It is otherwise a working passthrough plugin,
//! and it calls `log`, so it imports the `log` interface by its versioned
//! name as a real plugin does. The host must refuse to load it, naming the
//! stage and the version mismatch.

#![allow(unsafe_code)]

wit_bindgen::generate!({
    path: "wit",
    world: "processor",
});

use weir::plugin::log;
use weir::plugin::types::Level;

struct WrongWit;

impl Guest for WrongWit {
    fn init(ctx: InitContext) -> Result<(), String> {
        log::log(Level::Info, &format!("stage {} starting", ctx.stage));
        Ok(())
    }

    fn process(batch: Batch) -> BatchResult {
        let n = batch.offsets.len();
        BatchResult {
            counts: vec![1; n],
            targets: vec![0; n],
            keys: batch.keys,
            values: batch.values,
            headers: vec![0; 2 * n],
            header_spans: Vec::new(),
            data: batch.data,
            rejected: Vec::new(),
        }
    }
}

export!(WrongWit);
