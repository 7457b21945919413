//! Event-time arithmetic without a clock. Plugins get no clock unless
//! pipeline.toml grants one, so times come from the data: a field such as
//! `createdAt`, or a record's Kafka timestamp (`Message::timestamp_ms` in
//! the SDK, which re-exports this crate as `weir_plugin::time`). The host's
//! generators format their timestamps with the same code.

/// The UTC minute of an ISO 8601 date-time, as `YYYY-MM-DDTHH:MM`: the
/// bucket of `orders_per_minute`. Accepts `T` or a space between date and
/// time, optional seconds and fraction, and `Z`, `±HH:MM`, `±HHMM` or no
/// offset (read as UTC, as the campus food-ordering service's producer wrote them). `None` when the
/// text is not such a date-time.
pub fn minute_bucket(text: &str) -> Option<String> {
    let minutes = parse_rfc3339_ms(text)?.div_euclid(60_000);
    let days = minutes.div_euclid(1440);
    let minute_of_day = minutes.rem_euclid(1440);
    let (y, m, d) = civil_from_days(days);
    Some(format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}",
        minute_of_day / 60,
        minute_of_day % 60
    ))
}

/// Milliseconds since the Unix epoch as RFC 3339 UTC with milliseconds.
pub fn format_rfc3339_ms(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let ms_of_day = ms.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    let secs = ms_of_day / 1000;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        ms_of_day % 1000
    )
}

fn number(text: &str, digits: usize) -> Option<i64> {
    if text.len() != digits || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Milliseconds since the Unix epoch of an ISO 8601 date-time, read as
/// [`minute_bucket`] reads it (a fraction beyond milliseconds is
/// truncated). `None` when the text is not such a date-time.
pub fn parse_rfc3339_ms(text: &str) -> Option<i64> {
    let text = text.trim();
    let date = text.get(..10)?;
    let sep = text.get(10..11)?;
    if sep != "T" && sep != "t" && sep != " " {
        return None;
    }
    let (y, m, d) = (
        number(date.get(..4)?, 4)?,
        number(date.get(5..7)?, 2)?,
        number(date.get(8..10)?, 2)?,
    );
    if date.get(4..5) != Some("-") || date.get(7..8) != Some("-") || !(1..=12).contains(&m) {
        return None;
    }
    if d < 1 || d > days_in_month(y, m) {
        return None;
    }
    let time = &text[11..];
    let (hh, mm) = (number(time.get(..2)?, 2)?, number(time.get(3..5)?, 2)?);
    if time.get(2..3)? != ":" || hh > 23 || mm > 59 {
        return None;
    }
    let mut rest = &time[5..];
    let mut ms = 0;
    if let Some(after) = rest.strip_prefix(':') {
        let ss = number(after.get(..2)?, 2)?;
        if ss > 60 {
            return None;
        }
        ms = ss * 1000;
        rest = &after[2..];
        if let Some(fraction) = rest.strip_prefix(['.', ',']) {
            let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return None;
            }
            let mut scale = 100;
            for d in fraction.bytes().take(digits.min(3)) {
                ms += i64::from(d - b'0') * scale;
                scale /= 10;
            }
            rest = &fraction[digits..];
        }
    }
    let offset = match rest {
        "" | "Z" | "z" => 0,
        _ => {
            let sign = match rest.get(..1) {
                Some("+") => 1,
                Some("-") => -1,
                _ => return None,
            };
            let digits = rest[1..].replace(':', "");
            let (oh, om) = (number(digits.get(..2)?, 2)?, number(digits.get(2..)?, 2)?);
            if rest.len() != 6 && rest.len() != 5 || oh > 23 || om > 59 {
                return None;
            }
            sign * (oh * 60 + om)
        }
    };
    Some((days_from_civil(y, m, d) * 1440 + hh * 60 + mm - offset) * 60_000 + ms)
}

fn is_leap(y: i64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's `days_from_civil` and `civil_from_days`.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_by_utc_minute() {
        for (text, bucket) in [
            ("2026-11-23T10:07:59Z", "2026-11-23T10:07"),
            ("2026-11-23T10:07:59.123456", "2026-11-23T10:07"),
            ("2026-11-23 10:07", "2026-11-23T10:07"),
            ("2026-11-23T10:07:00+02:00", "2026-11-23T08:07"),
            ("2026-11-23T00:30:00+0100", "2026-11-22T23:30"),
            ("2026-12-31T23:59:00-00:30", "2027-01-01T00:29"),
            ("2024-02-29T12:00:00Z", "2024-02-29T12:00"),
            ("1969-12-31T23:59:00Z", "1969-12-31T23:59"),
        ] {
            assert_eq!(minute_bucket(text).as_deref(), Some(bucket), "{text}");
        }
    }

    #[test]
    fn rejects_what_is_not_a_date_time() {
        for text in [
            "",
            "yesterday",
            "2026-11-23",
            "2026-13-01T00:00Z",
            "2025-02-29T00:00Z",
            "2026-11-23T24:00Z",
            "2026-11-23T10:60Z",
            "2026-11-23T10:00:00.Z",
            "2026-11-23T10:00:00+2",
            "2026-11-23T10:00:00 junk",
            "２026-11-23T10:00Z",
            "2026-11-23T10:00:00é",
            "2026é11-23T10:00Z",
        ] {
            assert_eq!(minute_bucket(text), None, "{text}");
        }
    }

    #[test]
    fn parses_to_epoch_millis() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ms("2024-01-15T10:23:45.123Z"),
            Some(1_705_314_225_123)
        );
        assert_eq!(
            parse_rfc3339_ms("2024-01-15T10:23:45.1239999+00:00"),
            Some(1_705_314_225_123)
        );
        assert_eq!(
            parse_rfc3339_ms("2024-01-15T11:23:45.5+01:00"),
            Some(1_705_314_225_500)
        );
        assert_eq!(parse_rfc3339_ms("2024-01-15"), None);
    }

    #[test]
    fn formats_epoch_millis() {
        assert_eq!(format_rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_rfc3339_ms(1_795_435_200_123),
            "2026-11-23T12:00:00.123Z"
        );
        assert_eq!(format_rfc3339_ms(-1), "1969-12-31T23:59:59.999Z");
        // Leap days: 2024's, the day after, and 2000's (a century that is one).
        assert_eq!(
            format_rfc3339_ms(1_709_164_800_000),
            "2024-02-29T00:00:00.000Z"
        );
        assert_eq!(
            format_rfc3339_ms(1_709_251_199_999),
            "2024-02-29T23:59:59.999Z"
        );
        assert_eq!(
            format_rfc3339_ms(1_709_251_200_000),
            "2024-03-01T00:00:00.000Z"
        );
        assert_eq!(
            format_rfc3339_ms(951_782_400_000),
            "2000-02-29T00:00:00.000Z"
        );
        // Round trip through the parser at minute resolution.
        let ms = 1_795_435_263_000;
        assert_eq!(
            minute_bucket(&format_rfc3339_ms(ms)).unwrap(),
            format_rfc3339_ms(ms - ms % 60_000)[..16]
        );
    }
}
