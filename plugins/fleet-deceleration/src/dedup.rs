//! Drops a repeat of (`vehicle_id`, `event_id`) within a window of event
//! time, in keyed state.
//!
//! A repeat is the same frame sent again, so it carries the same event
//! time: ids are filed by the second of their event time
//! (`seen/{vehicle}/{second}`, newline-separated ids), and a lookup reads one
//! key. `seen-index/{vehicle}` lists the seconds filed, so those that fall
//! out of the window behind the vehicle's newest are deleted.

use weir_plugin::state;

fn bucket_key(vehicle: &str, second: i64) -> Vec<u8> {
    format!("seen/{vehicle}/{second}").into_bytes()
}

fn index_key(vehicle: &str) -> Vec<u8> {
    format!("seen-index/{vehicle}").into_bytes()
}

fn read_index(vehicle: &str) -> Vec<i64> {
    state::get(&index_key(vehicle))
        .map(|v| {
            v.chunks_exact(8)
                .filter_map(|c| <[u8; 8]>::try_from(c).ok())
                .map(i64::from_le_bytes)
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `event_id` at `t_ms` was already seen for `vehicle`.
pub fn seen(vehicle: &str, event_id: &str, t_ms: i64) -> bool {
    state::get(&bucket_key(vehicle, t_ms.div_euclid(1000))).is_some_and(|ids| {
        ids.split(|&b| b == b'\n')
            .any(|id| id == event_id.as_bytes())
    })
}

/// Files `event_id` at `t_ms`, and forgets seconds more than `window_ms`
/// behind the newest second filed.
pub fn remember(vehicle: &str, event_id: &str, t_ms: i64, window_ms: i64) {
    let second = t_ms.div_euclid(1000);
    let key = bucket_key(vehicle, second);
    let mut ids = state::get(&key).unwrap_or_default();
    if !ids.is_empty() {
        ids.push(b'\n');
    }
    ids.extend_from_slice(event_id.as_bytes());
    state::set(&key, &ids);

    let mut index = read_index(vehicle);
    if !index.contains(&second) {
        index.push(second);
    }
    let newest = index.iter().copied().max().unwrap_or(second);
    let horizon = newest - window_ms.div_euclid(1000);
    index.retain(|&s| {
        let keep = s >= horizon;
        if !keep {
            state::delete(&bucket_key(vehicle, s));
        }
        keep
    });
    let bytes: Vec<u8> = index.iter().flat_map(|s| s.to_le_bytes()).collect();
    state::set(&index_key(vehicle), &bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeat_within_the_window_is_seen_and_old_seconds_are_forgotten() {
        remember("v1", "e1", 10_500, 60_000);
        remember("v1", "e2", 10_900, 60_000);
        assert!(seen("v1", "e1", 10_500));
        assert!(seen("v1", "e2", 10_900));
        assert!(!seen("v1", "e3", 10_500));
        assert!(!seen("v2", "e1", 10_500), "per vehicle");
        // An id that is a prefix of another is not it.
        remember("v1", "e10", 11_000, 60_000);
        assert!(!seen("v1", "e1", 11_000));
        // 61 s later the first second is forgotten, and its key deleted.
        remember("v1", "e4", 71_000, 60_000);
        assert!(!seen("v1", "e1", 10_500));
        assert!(state::get(&bucket_key("v1", 10)).is_none());
        assert!(seen("v1", "e10", 11_000));
        assert_eq!(read_index("v1"), vec![11, 71]);
    }
}
