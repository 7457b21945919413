//! Admin API request bodies held to what its OpenAPI document declares, as
//! strictly as `pipeline.toml` is held to its format: a [`FieldError`] per
//! wrong field, and field deserializers where serde's defaults are looser
//! or stricter than JSON Schema (serde reads `null` into any `Option` and a
//! sequence into any struct, and refuses `97.0` for an integer, which JSON
//! Schema counts as one).
use std::fmt;
use std::marker::PhantomData;

use serde::Serialize;
use serde::de::value::MapAccessDeserializer;
use serde::de::{self, Deserialize, Deserializer, MapAccess, Unexpected, Visitor};

/// A field of a request body that is wrong, and why.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// A `T` read only from a JSON object: a derived struct also reads from
/// an array of its fields in order, which no request body may be.
pub struct Object<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
            type Value = Object<T>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Object<T>, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(Object)
            }
        }
        deserializer.deserialize_map(ObjectVisitor(PhantomData))
    }
}

/// An optional field that may be absent but not `null`: use with
/// `#[serde(default, deserialize_with = "request::present")]`. serde calls it
/// only when the field is there, so absence still gives `None`.
pub fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// A non-negative integer, written `97` or `97.0`.
pub fn whole<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    deserializer.deserialize_any(WholeVisitor)
}

/// A non-negative integer (`97` or `97.0`) or `null`.
pub fn whole_or_null<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    Option::<Whole>::deserialize(deserializer).map(|w| w.map(|Whole(n)| n))
}

struct Whole(u64);

impl<'de> Deserialize<'de> for Whole {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        whole(deserializer).map(Whole)
    }
}

struct WholeVisitor;

/// 2^64: every f64 below it and integral fits a u64.
const U64_END: f64 = 18_446_744_073_709_551_616.0;

impl Visitor<'_> for WholeVisitor {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a non-negative integer")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
        if v.fract() == 0.0 && (0.0..U64_END).contains(&v) {
            Ok(v as u64)
        } else {
            Err(E::invalid_value(Unexpected::Float(v), &self))
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        #[serde(default, deserialize_with = "present")]
        name: Option<String>,
        #[serde(default, deserialize_with = "whole")]
        count: u64,
        #[serde(default, deserialize_with = "whole_or_null")]
        cap: Option<u64>,
    }

    fn parse(json: &str) -> Result<Body, String> {
        serde_json::from_str::<Object<Body>>(json)
            .map(|Object(b)| b)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_body_is_an_object() {
        assert_eq!(parse(r#"{"count": 3}"#).unwrap().count, 3);
        for bad in ["[]", r#"["x", 3]"#, "3", "null", r#""x""#] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains("expected a JSON object"), "{bad}: {err}");
        }
        let err = parse(r#"{"nope": 1}"#).unwrap_err();
        assert!(err.contains("unknown field `nope`"), "{err}");
    }

    #[test]
    fn absent_is_none_and_null_is_refused() {
        assert_eq!(parse("{}").unwrap().name, None);
        assert_eq!(
            parse(r#"{"name": "x"}"#).unwrap().name.as_deref(),
            Some("x")
        );
        let err = parse(r#"{"name": null}"#).unwrap_err();
        assert!(err.contains("invalid type: null"), "{err}");
    }

    #[test]
    fn integral_floats_are_integers() {
        let b = parse(r#"{"count": 97.0, "cap": 3.0}"#).unwrap();
        assert_eq!((b.count, b.cap), (97, Some(3)));
        // Read exactly, not as 1866686889007652.8.
        let b = parse(r#"{"count": 1866686889007653.0}"#).unwrap();
        assert_eq!(b.count, 1_866_686_889_007_653);
        assert_eq!(parse(r#"{"count": 97}"#).unwrap().count, 97);
        assert_eq!(parse(r#"{"cap": null}"#).unwrap().cap, None);
        for bad in [
            r#"{"count": 97.5}"#,
            r#"{"count": -1}"#,
            r#"{"count": -1.0}"#,
            r#"{"count": 1e20}"#,
            r#"{"count": "97"}"#,
            r#"{"cap": 0.5}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad} was accepted");
        }
    }
}
