//! A strict reader of Prometheus' text format 0.0.4, as far as weir writes
//! it: every line a comment (`# HELP`, `# TYPE`) or a sample, names and
//! label names by the spec's rules, label values with only the three
//! escapes, a family's samples together under at most one TYPE, no series
//! twice. Shared by the host's runtime tests (by path) and the
//! integration tests.

use std::collections::{BTreeMap, HashSet};

pub type Sample = (String, BTreeMap<String, String>, f64);

fn name_ok(name: &str, colon: bool) -> bool {
    let mut chars = name.chars();
    let ok = |c: char| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':');
    chars.next().is_some_and(|c| ok(c) && !c.is_ascii_digit()) && chars.all(ok)
}

fn family(name: &str, types: &BTreeMap<String, String>) -> String {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && types.get(base).is_some_and(|t| t == "histogram")
        {
            return base.to_string();
        }
    }
    name.to_string()
}

pub fn parse(text: &str) -> Result<Vec<Sample>, String> {
    let mut types = BTreeMap::new();
    let mut closed = HashSet::new();
    let mut current: Option<String> = None;
    let mut seen = HashSet::new();
    let mut samples = Vec::new();
    let mut enter = |fam: &str, current: &mut Option<String>| -> Result<(), String> {
        if current.as_deref() != Some(fam) {
            if let Some(prev) = current.take() {
                closed.insert(prev);
            }
            if closed.contains(fam) {
                return Err(format!("family {fam} is split"));
            }
            *current = Some(fam.to_string());
        }
        Ok(())
    };
    for (n, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if let Some(comment) = line.strip_prefix('#') {
            let mut parts = comment.trim_start().splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("TYPE"), Some(name), Some(kind)) => {
                    if !name_ok(name, true) {
                        return Err(at("bad name".into()));
                    }
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(at("bad type".into()));
                    }
                    if types.insert(name.to_string(), kind.to_string()).is_some() {
                        return Err(at("second TYPE".into()));
                    }
                    enter(name, &mut current).map_err(at)?;
                }
                (Some("HELP"), Some(name), _) => {
                    if !name_ok(name, true) {
                        return Err(at("bad name".into()));
                    }
                    enter(name, &mut current).map_err(at)?;
                }
                _ => {}
            }
            continue;
        }
        if line.is_empty() {
            return Err(at("empty line".into()));
        }
        let name_end = line.find(['{', ' ']).ok_or_else(|| at("no value".into()))?;
        let name = &line[..name_end];
        if !name_ok(name, true) {
            return Err(at("bad metric name".into()));
        }
        let mut rest = &line[name_end..];
        let mut labels = BTreeMap::new();
        if let Some(after) = rest.strip_prefix('{') {
            rest = after;
            loop {
                if let Some(after) = rest.strip_prefix('}') {
                    rest = after;
                    break;
                }
                let eq = rest.find('=').ok_or_else(|| at("label without =".into()))?;
                let label = &rest[..eq];
                if !name_ok(label, false) || label.starts_with("__") {
                    return Err(at(format!("bad label name {label:?}")));
                }
                rest = rest[eq + 1..]
                    .strip_prefix('"')
                    .ok_or_else(|| at("unquoted value".into()))?;
                let mut value = String::new();
                let mut chars = rest.char_indices();
                let end = loop {
                    match chars.next() {
                        None => return Err(at("unterminated value".into())),
                        Some((i, '"')) => break i,
                        Some((_, '\\')) => match chars.next() {
                            Some((_, '\\')) => value.push('\\'),
                            Some((_, '"')) => value.push('"'),
                            Some((_, 'n')) => value.push('\n'),
                            other => return Err(at(format!("bad escape {other:?}"))),
                        },
                        Some((_, '\n')) => return Err(at("raw newline".into())),
                        Some((_, c)) => value.push(c),
                    }
                };
                if labels.insert(label.to_string(), value).is_some() {
                    return Err(at(format!("label {label} twice")));
                }
                rest = &rest[end + 1..];
                rest = rest.strip_prefix(',').unwrap_or(rest);
            }
        }
        let mut fields = rest
            .strip_prefix(' ')
            .ok_or_else(|| at("no space before the value".into()))?
            .split(' ');
        let value = match fields.next().unwrap_or_default() {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            // Rust also reads `inf` and `nan`, which Prometheus does not.
            v if v.chars().all(|c| c.is_ascii_digit() || ".eE+-".contains(c)) => {
                v.parse().map_err(|_| at(format!("bad value {v:?}")))?
            }
            v => return Err(at(format!("bad value {v:?}"))),
        };
        if let Some(ts) = fields.next()
            && ts.parse::<i64>().is_err()
        {
            return Err(at("bad timestamp".into()));
        }
        if fields.next().is_some() {
            return Err(at("trailing fields".into()));
        }
        let fam = family(name, &types);
        enter(&fam, &mut current).map_err(at)?;
        if !seen.insert((name.to_string(), labels.clone())) {
            return Err(at("series twice".into()));
        }
        samples.push((name.to_string(), labels, value));
    }
    Ok(samples)
}

#[cfg(test)]
#[test]
fn the_reader_refuses_what_scrapers_refuse() {
    assert!(parse("a{stage=\"x\"} 1\n").is_ok());
    for bad in [
        "a{9x=\"1\"} 1",
        "a{=\"1\"} 1",
        "a{__x=\"1\"} 1",
        "a{b=\"1\",b=\"2\"} 1",
        "a{b=\"\\q\"} 1",
        "a inf",
        "a 1\nb 1\na{x=\"1\"} 1",
        "# TYPE a gauge\n# TYPE a gauge",
        "a 1\na 1",
        "9a 1",
    ] {
        assert!(parse(bad).is_err(), "{bad}");
    }
}
