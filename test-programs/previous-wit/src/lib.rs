//! A component built against `weir:plugin@0.1.0` (`wit/plugin.wit` here is
//! that release of the contract, frozen). The host implements a later,
//! semver-compatible version, which only adds functions, so this plugin
//! must keep loading and running unchanged. It uses every import the 0.1.0
//! contract has (`log`, `state`, `metrics`), so each is resolved by its
//! 0.1.0 name: it forwards every message and counts them in state.

#![allow(unsafe_code)]

wit_bindgen::generate!({
    path: "wit",
    world: "processor",
});

use weir::plugin::types::Level;
use weir::plugin::{log, metrics, state};

const SEEN: &[u8] = b"seen";

struct PreviousWit;

impl Guest for PreviousWit {
    fn init(ctx: InitContext) -> Result<(), String> {
        log::log(Level::Info, &format!("stage {} starting", ctx.stage));
        Ok(())
    }

    fn process(batch: Batch) -> BatchResult {
        let n = batch.offsets.len();
        let seen = state::get(SEEN)
            .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
            .map_or(0, u64::from_le_bytes);
        state::set(SEEN, &(seen + n as u64).to_le_bytes());
        metrics::counter_add("forwarded", &[], n as u64);
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

export!(PreviousWit);
