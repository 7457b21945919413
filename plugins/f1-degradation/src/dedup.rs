//! Drops a repeat of (`car_id`, `seq`) within the last `window` sequence
//! numbers of its car: a redelivered message, or one the duplicate fault
//! sent twice, is analysed once.
//!
//! The window lives in keyed state, so it survives an instance restart
//! after a trap and a plugin swap. It is a bitmap in chunks of 1,024
//! sequence numbers, one state key per chunk, so marking a message writes
//! 128 bytes, not the whole window. The instance caches what it has read;
//! state is scoped per partition, and so is the cache.

use std::collections::HashMap;

use weir_plugin::state;

const CHUNK_BITS: u64 = 1024;
const CHUNK_BYTES: usize = (CHUNK_BITS / 8) as usize;

#[derive(Default)]
struct CarWindow {
    /// The highest sequence number seen.
    hi: Option<u64>,
    chunks: HashMap<u64, [u8; CHUNK_BYTES]>,
}

pub struct Dedup {
    window: u64,
    /// Per partition, per car: looked up by `&str`, so a message that
    /// finds its car costs no allocation.
    cache: HashMap<i32, HashMap<String, CarWindow>>,
}

fn hi_key(car: &str) -> Vec<u8> {
    format!("dedup/{car}/hi").into_bytes()
}

fn chunk_key(car: &str, chunk: u64) -> Vec<u8> {
    format!("dedup/{car}/{chunk}").into_bytes()
}

impl Dedup {
    /// `window` 0 turns deduplication off.
    pub fn new(window: u64) -> Self {
        Dedup {
            window,
            cache: HashMap::new(),
        }
    }

    /// Marks (`car`, `seq`) as seen; false if it already was. A number older
    /// than the window cannot be told from a new one and counts as new.
    pub fn first_sight(&mut self, partition: i32, car: &str, seq: u64) -> bool {
        if self.window == 0 {
            return true;
        }
        let cars = self.cache.entry(partition).or_default();
        if !cars.contains_key(car) {
            let hi =
                state::get(&hi_key(car)).and_then(|b| Some(u64::from_le_bytes(b.try_into().ok()?)));
            cars.insert(
                car.to_string(),
                CarWindow {
                    hi,
                    chunks: HashMap::new(),
                },
            );
        }
        let Some(w) = cars.get_mut(car) else {
            return true;
        };
        if let Some(hi) = w.hi
            && seq.saturating_add(self.window) <= hi
        {
            return true;
        }
        let chunk = seq / CHUNK_BITS;
        let bits = w.chunks.entry(chunk).or_insert_with(|| {
            let mut bits = [0u8; CHUNK_BYTES];
            if let Some(stored) = state::get(&chunk_key(car, chunk))
                && stored.len() == CHUNK_BYTES
            {
                bits.copy_from_slice(&stored);
            }
            bits
        });
        let (byte, mask) = (((seq % CHUNK_BITS) / 8) as usize, 1u8 << (seq % 8));
        if bits[byte] & mask != 0 {
            return false;
        }
        bits[byte] |= mask;
        state::set(&chunk_key(car, chunk), bits);
        if w.hi.is_none_or(|hi| seq > hi) {
            let old_floor =
                w.hi.map_or(0, |hi| hi.saturating_sub(self.window) / CHUNK_BITS);
            // No chunk above the old highest number was ever written, which
            // bounds the clean-up below however far `seq` jumps.
            let old_top = w.hi.map_or(0, |hi| hi / CHUNK_BITS + 1);
            w.hi = Some(seq);
            state::set(&hi_key(car), &seq.to_le_bytes());
            // Chunks wholly below the window are forgotten.
            let floor = seq.saturating_sub(self.window) / CHUNK_BITS;
            for gone in old_floor..floor.min(old_top) {
                w.chunks.remove(&gone);
                state::delete(&chunk_key(car, gone));
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeat_within_the_window_is_dropped() {
        let mut d = Dedup::new(10_000);
        assert!(d.first_sight(0, "CAR-1", 5));
        assert!(d.first_sight(0, "CAR-1", 6));
        assert!(!d.first_sight(0, "CAR-1", 5));
        // Another car has its own window.
        assert!(d.first_sight(0, "CAR-2", 5));
    }

    #[test]
    fn the_window_survives_a_new_instance_through_state() {
        let mut d = Dedup::new(10_000);
        for seq in 0..3000 {
            assert!(d.first_sight(0, "CAR-1", seq));
        }
        let mut fresh = Dedup::new(10_000);
        assert!(!fresh.first_sight(0, "CAR-1", 2999));
        assert!(!fresh.first_sight(0, "CAR-1", 17));
        assert!(fresh.first_sight(0, "CAR-1", 3000));
    }

    #[test]
    fn numbers_older_than_the_window_count_as_new_and_old_chunks_go() {
        let mut d = Dedup::new(2048);
        assert!(d.first_sight(0, "CAR-1", 0));
        assert!(d.first_sight(0, "CAR-1", 10_000));
        assert!(d.first_sight(0, "CAR-1", 0));
        assert!(state::get(&chunk_key("CAR-1", 0)).is_none());
        assert!(!d.first_sight(0, "CAR-1", 10_000));
    }

    #[test]
    fn a_zero_window_turns_it_off() {
        let mut d = Dedup::new(0);
        assert!(d.first_sight(0, "CAR-1", 1));
        assert!(d.first_sight(0, "CAR-1", 1));
    }
}
