//! Racing telemetry as Purple Sector's collectors publish it, and the lap
//! summaries the `laps` plugin makes of it.
//!
//! A record's value is a [`TelemetryFrame`] in protobuf
//! (`proto/telemetry.proto`), its key the session id, and its headers
//! [`HEADER_SESSION`], [`HEADER_USER`] and [`HEADER_ENCODING`]. A frame
//! wrapped in a [`TelemetryMessage`] is read too.

use serde::{Deserialize, Serialize};

#[allow(missing_docs, clippy::all)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/_.rs"));
}

pub use generated::{TelemetryFrame, TelemetryMessage};
pub use prost::{DecodeError, Message};

pub const HEADER_SESSION: &str = "sessionId";
pub const HEADER_USER: &str = "userId";
pub const HEADER_ENCODING: &str = "encoding";
/// The value of [`HEADER_ENCODING`] for a protobuf frame.
pub const ENCODING_PROTOBUF: &str = "protobuf";

/// Frames per second of a session.
pub const FRAME_HZ: u32 = 60;

/// A record's value as a frame: a bare [`TelemetryFrame`], as collectors
/// send it, or one inside a [`TelemetryMessage`]. The two cannot be
/// confused: field 1 is an integer in the first and a message in the
/// second, and protobuf's wire types tell them apart.
pub fn decode(value: &[u8]) -> Result<TelemetryFrame, String> {
    if value.is_empty() {
        return Err("empty value: no telemetry frame".into());
    }
    match TelemetryFrame::decode(value) {
        Ok(frame) => Ok(frame),
        Err(bare) => match TelemetryMessage::decode(value) {
            Ok(TelemetryMessage {
                telemetry: Some(frame),
            }) => Ok(frame),
            Ok(TelemetryMessage { telemetry: None }) => {
                Err("a TelemetryMessage without its telemetry frame".into())
            }
            Err(_) => Err(format!("not a protobuf TelemetryFrame: {bare}")),
        },
    }
}

/// A frame as JSON, with the `.proto`'s field names (`lapTime`,
/// `normalizedPosition`, ...), for answers and clients that do not read
/// protobuf.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FrameJson {
    pub timestamp: i64,
    pub lap_time: i32,
    pub throttle: f64,
    pub brake: f64,
    pub steering: f64,
    pub speed: f64,
    pub gear: i32,
    pub rpm: i32,
    pub normalized_position: f64,
    pub lap_number: i32,
}

/// `x` as the f64 its shortest decimal form reads as: 212.37, not the
/// 212.3699951171875 that widening the float32 gives, and it reads back as
/// the same float32.
fn shortest(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(f64::from(x))
}

impl From<&TelemetryFrame> for FrameJson {
    fn from(f: &TelemetryFrame) -> Self {
        FrameJson {
            timestamp: f.timestamp,
            lap_time: f.lap_time,
            throttle: shortest(f.throttle),
            brake: shortest(f.brake),
            steering: shortest(f.steering),
            speed: shortest(f.speed),
            gear: f.gear,
            rpm: f.rpm,
            normalized_position: shortest(f.normalized_position),
            lap_number: f.lap_number,
        }
    }
}

/// One completed lap of a session, as the `laps` plugin emits it (JSON, to
/// the `laps` topic, keyed by session id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LapSummary {
    pub session_id: String,
    pub lap_number: i32,
    /// The lap's first frame's timestamp (ms since the Unix epoch).
    pub started_at_ms: i64,
    /// From the lap's first frame to the next lap's.
    pub lap_time_ms: i64,
    pub frames: u64,
    /// km/h.
    pub max_speed: f64,
    /// Mean over the lap's frames, km/h, to 3 decimals.
    pub avg_speed: f64,
    /// Share of frames at full throttle (at least the plugin's
    /// `full_throttle`, 0.98 by default), to 4 decimals.
    pub full_throttle_share: f64,
    /// Share of frames braking (brake above the plugin's `braking`, 0.05 by
    /// default), to 4 decimals.
    pub braking_share: f64,
    /// Frames whose gear differs from the frame before, within the lap.
    pub gear_changes: u32,
    /// Sector times at thirds of `normalizedPosition` (ms): the first frame
    /// at or past 1/3 and 2/3 ends sectors 1 and 2.
    pub sectors_ms: [i64; 3],
}

/// `x` to `decimals` places, as summaries write their means and shares.
pub fn round(x: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (x * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame() -> TelemetryFrame {
        TelemetryFrame {
            timestamp: 1_699_123_456_789,
            lap_time: 1_250,
            throttle: 0.75,
            brake: 0.0,
            steering: -0.1,
            speed: 212.5,
            gear: 6,
            rpm: 11_200,
            normalized_position: 0.42,
            lap_number: 3,
        }
    }

    #[test]
    fn a_bare_frame_and_a_wrapped_one_decode_alike() {
        let bare = frame().encode_to_vec();
        assert_eq!(decode(&bare).unwrap(), frame());
        let wrapped = TelemetryMessage {
            telemetry: Some(frame()),
        }
        .encode_to_vec();
        assert_ne!(bare, wrapped);
        assert_eq!(decode(&wrapped).unwrap(), frame());
    }

    #[test]
    fn what_is_not_a_frame_says_so() {
        assert!(decode(b"").unwrap_err().contains("empty"));
        let err = decode(b"{\"speed\": 200}").unwrap_err();
        assert!(err.contains("not a protobuf TelemetryFrame"), "{err}");
        let empty_wrapper = TelemetryMessage { telemetry: None }.encode_to_vec();
        // An empty message encodes to no bytes at all.
        assert!(decode(&empty_wrapper).is_err());
    }

    #[test]
    fn json_floats_are_written_short_and_read_back_exactly() {
        let json = FrameJson::from(&TelemetryFrame {
            speed: 212.37,
            ..frame()
        });
        assert_eq!(json.speed, 212.37);
        assert_eq!(json.speed as f32, 212.37f32);
        assert_eq!(json.normalized_position, 0.42);
    }

    #[test]
    fn the_fields_keep_the_seeds_numbers() {
        // Field 9 (normalizedPosition, float): tag (9 << 3) | 5.
        let bytes = TelemetryFrame {
            normalized_position: 0.5,
            ..Default::default()
        }
        .encode_to_vec();
        assert_eq!(bytes, [0x4d, 0x00, 0x00, 0x00, 0x3f]);
    }
}
