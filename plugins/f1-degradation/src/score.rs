use std::borrow::Cow;

use serde::Deserialize;
use serde::de::IgnoredAny;

/// `[stage.config]` of the degradation stage.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Mean tyre temperature (°C) at which degradation starts.
    pub baseline_temp_c: f64,
    /// Degrees above the baseline at which the score reaches 1.
    pub temp_span_c: f64,
    /// Scores above this set the `tire_wear` flag.
    pub tire_wear_threshold: f64,
    /// `battery_soc` below this while deploying sets `low_battery_on_deploy`.
    pub low_battery_soc: f64,
    /// A repeat of (`car_id`, `seq`) within this many sequence numbers of
    /// the car's highest is dropped; 0 turns deduplication off.
    pub dedup_window: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            baseline_temp_c: 80.0,
            temp_span_c: 35.0,
            tire_wear_threshold: 0.65,
            low_battery_soc: 0.4,
            dedup_window: 10_000,
        }
    }
}

/// The fields the score needs. Borrowing, and ignoring the rest, keeps
/// parsing cheap; the output reuses the input bytes.
#[derive(Deserialize)]
struct Telemetry<'a> {
    #[serde(borrow)]
    car_id: Option<Cow<'a, str>>,
    seq: Option<u64>,
    tire_temp_fl: Option<f64>,
    tire_temp_fr: Option<f64>,
    tire_temp_rl: Option<f64>,
    tire_temp_rr: Option<f64>,
    battery_soc: Option<f64>,
    #[serde(borrow)]
    ers_mode: Option<Cow<'a, str>>,
    degradation_score: Option<IgnoredAny>,
    fault_flags: Option<IgnoredAny>,
}

pub const TIRE_WEAR: &str = "tire_wear";
pub const LOW_BATTERY_ON_DEPLOY: &str = "low_battery_on_deploy";

/// The scored message.
#[derive(Debug, Clone, PartialEq)]
pub struct Enriched {
    pub car_id: String,
    pub seq: Option<u64>,
    pub degradation_score: f64,
    pub fault_flags: Vec<&'static str>,
    /// The input object with both fields added.
    pub json: Vec<u8>,
}

/// clamp((mean tyre temperature − baseline) / span, 0, 1), to 3 decimals.
pub fn degradation_score(temps: [f64; 4], config: &Config) -> f64 {
    let mean = temps.iter().sum::<f64>() / 4.0;
    let score = ((mean - config.baseline_temp_c) / config.temp_span_c).clamp(0.0, 1.0);
    (score * 1000.0).round() / 1000.0
}

pub fn fault_flags(
    score: f64,
    battery_soc: f64,
    ers_mode: &str,
    config: &Config,
) -> Vec<&'static str> {
    let mut flags = Vec::new();
    if score > config.tire_wear_threshold {
        flags.push(TIRE_WEAR);
    }
    if battery_soc < config.low_battery_soc && ers_mode == "deploy" {
        flags.push(LOW_BATTERY_ON_DEPLOY);
    }
    flags
}

/// Scores one raw telemetry message.
pub fn enrich(input: &[u8], config: &Config) -> Result<Enriched, String> {
    let t: Telemetry<'_> =
        serde_json::from_slice(input).map_err(|e| format!("not a telemetry JSON object: {e}"))?;
    if t.car_id.as_deref().is_none_or(str::is_empty) {
        return Err("missing car_id".into());
    }
    let temp = |v: Option<f64>, name: &str| v.ok_or_else(|| format!("missing {name}"));
    let temps = [
        temp(t.tire_temp_fl, "tire_temp_fl")?,
        temp(t.tire_temp_fr, "tire_temp_fr")?,
        temp(t.tire_temp_rl, "tire_temp_rl")?,
        temp(t.tire_temp_rr, "tire_temp_rr")?,
    ];
    // The F1 Kafka demo treats missing battery and ERS readings as neutral.
    let soc = t.battery_soc.unwrap_or(0.5);
    let ers = t.ers_mode.as_deref().unwrap_or("balanced");
    let score = degradation_score(temps, config);
    let flags = fault_flags(score, soc, ers, config);
    let json = if t.degradation_score.is_some() || t.fault_flags.is_some() {
        // Re-scoring an already enriched record: replace the fields rather
        // than emit duplicate keys.
        let mut object: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(input).map_err(|e| e.to_string())?;
        object.insert("degradation_score".into(), score.into());
        object.insert("fault_flags".into(), flags.clone().into());
        serde_json::to_vec(&object).map_err(|e| e.to_string())?
    } else {
        append_fields(input, score, &flags)
    };
    Ok(Enriched {
        car_id: t.car_id.map(Cow::into_owned).unwrap_or_default(),
        seq: t.seq,
        degradation_score: score,
        fault_flags: flags,
        json,
    })
}

/// Appends the two fields before the object's closing brace: the input was
/// just parsed as an object, so its last non-space byte is `}`.
fn append_fields(input: &[u8], score: f64, flags: &[&str]) -> Vec<u8> {
    let end = input
        .iter()
        .rposition(|&b| b == b'}')
        .unwrap_or(input.len());
    let body = &input[..end];
    let empty = body.iter().rev().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let mut out = Vec::with_capacity(input.len() + 64);
    out.extend_from_slice(body);
    if !empty {
        out.push(b',');
    }
    out.extend_from_slice(b"\"degradation_score\":");
    // f64 Display never prints exponents for values in [0, 1].
    out.extend_from_slice(format_score(score).as_bytes());
    out.extend_from_slice(b",\"fault_flags\":[");
    for (i, flag) in flags.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(flag.as_bytes());
        out.push(b'"');
    }
    out.extend_from_slice(b"]}");
    out
}

fn format_score(score: f64) -> String {
    serde_json::Number::from_f64(score)
        .map(|n| n.to_string())
        .unwrap_or_else(|| "0".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn raw(temps: [f64; 4], soc: Option<f64>, ers: Option<&str>) -> Vec<u8> {
        let mut v = json!({
            "car_id": "CAR-1", "lap": 3, "seq": 7, "speed_kph": 250.0,
            "tire_temp_fl": temps[0], "tire_temp_fr": temps[1],
            "tire_temp_rl": temps[2], "tire_temp_rr": temps[3],
            "timestamp": "2026-11-23T10:00:00Z"
        });
        if let Some(soc) = soc {
            v["battery_soc"] = soc.into();
        }
        if let Some(ers) = ers {
            v["ers_mode"] = ers.into();
        }
        v.to_string().into_bytes()
    }

    #[test]
    fn score_follows_the_formula() {
        let c = Config::default();
        assert_eq!(degradation_score([80.0; 4], &c), 0.0);
        assert_eq!(degradation_score([70.0; 4], &c), 0.0);
        assert_eq!(degradation_score([115.0; 4], &c), 1.0);
        assert_eq!(degradation_score([130.0; 4], &c), 1.0);
        // mean 97.5 -> 17.5/35 = 0.5
        assert_eq!(degradation_score([95.0, 100.0, 97.0, 98.0], &c), 0.5);
        // mean 90 -> 10/35 = 0.285714.. -> 0.286
        assert_eq!(degradation_score([90.0; 4], &c), 0.286);
    }

    #[test]
    fn flags() {
        let c = Config::default();
        assert_eq!(fault_flags(0.66, 0.5, "deploy", &c), vec![TIRE_WEAR]);
        assert!(fault_flags(0.65, 0.5, "deploy", &c).is_empty());
        assert_eq!(
            fault_flags(0.1, 0.39, "deploy", &c),
            vec![LOW_BATTERY_ON_DEPLOY]
        );
        assert!(fault_flags(0.1, 0.39, "harvest", &c).is_empty());
        assert_eq!(
            fault_flags(0.9, 0.2, "deploy", &c),
            vec![TIRE_WEAR, LOW_BATTERY_ON_DEPLOY]
        );
    }

    #[test]
    fn enrich_keeps_input_fields_and_adds_score() {
        let e = enrich(
            &raw([104.0; 4], Some(0.3), Some("deploy")),
            &Config::default(),
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&e.json).unwrap();
        assert_eq!(v["car_id"], "CAR-1");
        assert_eq!(v["lap"], 3);
        assert_eq!(v["degradation_score"], 0.686);
        assert_eq!(
            v["fault_flags"],
            json!(["tire_wear", "low_battery_on_deploy"])
        );
    }

    #[test]
    fn missing_battery_and_ers_are_neutral() {
        let e = enrich(&raw([85.0; 4], None, None), &Config::default()).unwrap();
        assert!(e.fault_flags.is_empty());
        let v: Value = serde_json::from_slice(&e.json).unwrap();
        assert_eq!(v["fault_flags"], json!([]));
    }

    #[test]
    fn rejects_bad_input() {
        let c = Config::default();
        assert!(
            enrich(b"not json", &c)
                .unwrap_err()
                .contains("not a telemetry JSON object")
        );
        assert!(enrich(b"[1,2]", &c).is_err());
        let no_car =
            br#"{"tire_temp_fl":90,"tire_temp_fr":90,"tire_temp_rl":90,"tire_temp_rr":90}"#;
        assert_eq!(enrich(no_car, &c).unwrap_err(), "missing car_id");
        let no_rr = br#"{"car_id":"CAR-2","tire_temp_fl":90,"tire_temp_fr":90,"tire_temp_rl":90}"#;
        assert_eq!(enrich(no_rr, &c).unwrap_err(), "missing tire_temp_rr");
    }

    #[test]
    fn rescoring_replaces_fields() {
        let c = Config::default();
        let once = enrich(&raw([100.0; 4], None, None), &c).unwrap();
        let twice = enrich(&once.json, &c).unwrap();
        let v: Value = serde_json::from_slice(&twice.json).unwrap();
        assert_eq!(v["degradation_score"], once.degradation_score);
        assert_eq!(
            String::from_utf8(twice.json)
                .unwrap()
                .matches("degradation_score")
                .count(),
            1
        );
    }

    #[test]
    fn empty_object_gets_valid_json() {
        assert_eq!(
            append_fields(b"{ }", 0.5, &[]),
            br#"{ "degradation_score":0.5,"fault_flags":[]}"#
        );
    }
}
