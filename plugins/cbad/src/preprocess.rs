//! Turns a raw event into the line that CBAD compresses.
//!
//! Two passes, both linear in the input with bounded look-ahead, so that a
//! hostile 1 MiB payload costs no more than a friendly one:
//!
//! 1. Redaction: the value of every JSON key (and every `name=value` pair)
//!    whose name is sensitive becomes `"<REDACTED>"`. Secrets never reach
//!    keyed state, and they are noise to a compressor anyway.
//! 2. Placeholders: timestamps, UUIDs, long hex strings, IP addresses,
//!    emails, URLs and numbers of 4+ digits become fixed tokens. These
//!    values differ in every event of a healthy stream; left in, they would
//!    make every window look novel to the compressor.
//!
//! The result is one line: raw line breaks become spaces, so that joining
//! events with `\n` keeps one event per line.

/// Key names whose values are redacted, compared case-insensitively.
const SENSITIVE: [&str; 7] = [
    "password",
    "token",
    "key",
    "secret",
    "jwt",
    "authorization",
    "cookie",
];

pub const REDACTED: &[u8] = b"<REDACTED>";
pub const TS: &[u8] = b"<TS>";
pub const UUID: &[u8] = b"<UUID>";
pub const HEX: &[u8] = b"<HEX>";
pub const IP: &[u8] = b"<IP>";
pub const EMAIL: &[u8] = b"<EMAIL>";
pub const URL: &[u8] = b"<URL>";
pub const NUM: &[u8] = b"<NUM>";

/// Redacts, then replaces variable values with placeholders.
pub fn preprocess(raw: &[u8]) -> Vec<u8> {
    let redacted = redact_pairs(&redact_json(raw));
    placeholders(&redacted)
}

/// Whether a key names a secret: one of its words (split at separators and
/// camelCase humps) is a sensitive name, or, written without separators, it
/// ends with one (`apikey`, `accesstoken`, `setcookie`). Over-redacting a
/// rare `monkey` field costs nothing; leaking an `apiKey` would.
pub fn is_sensitive(key: &str) -> bool {
    let mut compact = String::with_capacity(key.len());
    let mut word = String::new();
    let mut prev_lower = false;
    let mut hit = false;
    let mut end_word = |word: &mut String| {
        if SENSITIVE.contains(&word.as_str()) {
            hit = true;
        }
        word.clear();
    };
    for c in key.chars() {
        if !c.is_alphanumeric() {
            end_word(&mut word);
            prev_lower = false;
            continue;
        }
        if c.is_uppercase() && prev_lower {
            end_word(&mut word);
        }
        prev_lower = c.is_lowercase() || c.is_numeric();
        for l in c.to_lowercase() {
            word.push(l);
            compact.push(l);
        }
    }
    end_word(&mut word);
    hit || SENSITIVE.iter().any(|s| compact.ends_with(s))
}

/// The end (exclusive) of the JSON string whose opening quote is at
/// `start`, or `None` if it is not terminated.
fn string_end(s: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    while i < s.len() {
        match s[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && s[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// The end of the JSON value starting at `i`: a string, a balanced object
/// or array (strings inside honoured), or a bare number or literal.
fn value_end(s: &[u8], i: usize) -> usize {
    match s.get(i) {
        Some(b'"') => string_end(s, i).unwrap_or(s.len()),
        Some(b'{' | b'[') => {
            let mut depth = 0usize;
            let mut j = i;
            while j < s.len() {
                match s[j] {
                    b'"' => {
                        j = string_end(s, j).unwrap_or(s.len());
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return j + 1;
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            s.len()
        }
        _ => {
            let mut j = i;
            while j < s.len() && !matches!(s[j], b',' | b'}' | b']') && !s[j].is_ascii_whitespace()
            {
                j += 1;
            }
            j
        }
    }
}

/// The text of a JSON string token (quotes included), unescaped.
fn key_text(token: &[u8]) -> String {
    if token.contains(&b'\\')
        && let Ok(k) = serde_json::from_slice::<String>(token)
    {
        return k;
    }
    String::from_utf8_lossy(token.get(1..token.len().saturating_sub(1)).unwrap_or(&[])).into_owned()
}

/// Pass 1a: the value after every `"key":` whose key is sensitive becomes
/// `"<REDACTED>"`, whatever its type. A token-level scan rather than a
/// parse: it keeps the event's own field order and layout, and also covers
/// JSON fragments embedded in plain-text lines.
fn redact_json(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let Some(q) = s[i..].iter().position(|&b| b == b'"').map(|p| i + p) else {
            out.extend_from_slice(&s[i..]);
            break;
        };
        out.extend_from_slice(&s[i..q]);
        let Some(end) = string_end(s, q) else {
            out.extend_from_slice(&s[q..]);
            break;
        };
        out.extend_from_slice(&s[q..end]);
        i = end;
        let colon = skip_ws(s, end);
        if s.get(colon) != Some(&b':') || !is_sensitive(&key_text(&s[q..end])) {
            continue;
        }
        let value = skip_ws(s, colon + 1);
        out.extend_from_slice(&s[end..value]);
        out.push(b'"');
        out.extend_from_slice(REDACTED);
        out.push(b'"');
        i = value_end(s, value);
    }
    out
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Pass 1b: `name=value` pairs (logfmt, query strings, free text) with a
/// sensitive name. The value stops at whitespace, a quote, a backslash or a
/// separator, so that a pair inside a JSON string never breaks the string.
fn redact_pairs(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let starts_name = is_word(s[i]) && (i == 0 || !(is_word(s[i - 1]) || s[i - 1] == b'-'));
        if !starts_name {
            out.push(s[i]);
            i += 1;
            continue;
        }
        let mut j = i;
        while j < s.len() && (is_word(s[j]) || s[j] == b'-' || s[j] == b'.') {
            j += 1;
        }
        out.extend_from_slice(&s[i..j]);
        if s.get(j) == Some(&b'=') && is_sensitive(&String::from_utf8_lossy(&s[i..j])) {
            let mut k = j + 1;
            while k < s.len()
                && !s[k].is_ascii_whitespace()
                && !matches!(
                    s[k],
                    b'"' | b'\'' | b'\\' | b'&' | b',' | b';' | b'}' | b']'
                )
            {
                k += 1;
            }
            out.push(b'=');
            out.extend_from_slice(REDACTED);
            j = k;
        }
        i = j;
    }
    out
}

/// Pass 2: placeholders. Structured values are recognised only at the start
/// of a token, so `abc123...` is not half-replaced; a run of 4+ digits is
/// replaced wherever it is (`order-12345`, `v20250101`).
fn placeholders(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let b = s[i];
        if b == b'\n' || b == b'\r' {
            out.push(b' ');
            i += 1;
            continue;
        }
        // A JSON `\uXXXX` escape is a character, not a number.
        if b == b'\\' && s.get(i + 1) == Some(&b'u') && hex_run(s, i + 2, 4) == 4 {
            out.extend_from_slice(&s[i..i + 6]);
            i += 6;
            continue;
        }
        // After a `.` is mid-token too: `1.2.3.4.5` holds no address.
        if i == 0 || !(is_word(s[i - 1]) || s[i - 1] == b'.') {
            let found = [
                (url(s, i), URL),
                (email(s, i), EMAIL),
                (uuid(s, i), UUID),
                (timestamp(s, i), TS),
                (ipv4(s, i), IP),
                (ipv6(s, i), IP),
                (hex(s, i), HEX),
            ]
            .into_iter()
            .find_map(|(len, token)| len.map(|n| (n, token)));
            if let Some((len, token)) = found {
                out.extend_from_slice(token);
                i += len;
                continue;
            }
        }
        if b.is_ascii_digit() {
            let run = digits(s, i);
            if run >= 4 {
                out.extend_from_slice(NUM);
                i += run;
                // A decimal part belongs to the number.
                if s.get(i) == Some(&b'.') && s.get(i + 1).is_some_and(u8::is_ascii_digit) {
                    i += 1 + digits(s, i + 1);
                }
            } else {
                out.extend_from_slice(&s[i..i + run]);
                i += run;
            }
            continue;
        }
        out.push(b);
        i += 1;
    }
    out
}

fn digits(s: &[u8], i: usize) -> usize {
    s[i..].iter().take_while(|b| b.is_ascii_digit()).count()
}

/// Exactly `n` digits at `i`.
fn fixed_digits(s: &[u8], i: usize, n: usize) -> bool {
    s.len() >= i + n && s[i..i + n].iter().all(u8::is_ascii_digit)
}

fn hex_run(s: &[u8], i: usize, max: usize) -> usize {
    s[i.min(s.len())..]
        .iter()
        .take(max)
        .take_while(|b| b.is_ascii_hexdigit())
        .count()
}

/// No word character right after a match.
fn ends_token(s: &[u8], end: usize) -> bool {
    s.get(end).is_none_or(|&b| !is_word(b))
}

/// `scheme://rest`, up to whitespace or a delimiter; trailing punctuation is
/// left to the text.
fn url(s: &[u8], i: usize) -> Option<usize> {
    if !s.get(i)?.is_ascii_alphabetic() {
        return None;
    }
    let scheme = s[i..]
        .iter()
        .take(17)
        .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'.' | b'-'))
        .count();
    if scheme > 16 || !s[i + scheme..].starts_with(b"://") {
        return None;
    }
    let mut end = i + scheme + 3;
    while end < s.len()
        && !s[end].is_ascii_whitespace()
        && !s[end].is_ascii_control()
        && !matches!(s[end], b'"' | b'\'' | b'<' | b'>' | b'\\' | b'`')
    {
        end += 1;
    }
    while end > i + scheme + 3
        && matches!(
            s[end - 1],
            b'.' | b',' | b';' | b':' | b'!' | b'?' | b')' | b']' | b'}'
        )
    {
        end -= 1;
    }
    (end > i + scheme + 3).then_some(end - i)
}

/// `local@domain.tld` with RFC-ish bounds on each part.
fn email(s: &[u8], i: usize) -> Option<usize> {
    let local = s[i..]
        .iter()
        .take(65)
        .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-'))
        .count();
    if local == 0 || local > 64 || s.get(i + local) != Some(&b'@') {
        return None;
    }
    let start = i + local + 1;
    let mut end = start;
    while end < s.len()
        && end - start < 254
        && (s[end].is_ascii_alphanumeric() || matches!(s[end], b'-' | b'.'))
    {
        end += 1;
    }
    // A trailing dot ends the sentence, not the domain.
    while end > start && s[end - 1] == b'.' {
        end -= 1;
    }
    let last_dot = start + s[start..end].iter().rposition(|&b| b == b'.')?;
    if last_dot == start {
        return None;
    }
    let tld = &s[last_dot + 1..end];
    (tld.len() >= 2 && tld.iter().all(u8::is_ascii_alphabetic) && ends_token(s, end))
        .then_some(end - i)
}

/// `8-4-4-4-12` hex digits.
fn uuid(s: &[u8], i: usize) -> Option<usize> {
    let mut at = i;
    for (n, group) in [8usize, 4, 4, 4, 12].into_iter().enumerate() {
        if n > 0 {
            if s.get(at) != Some(&b'-') {
                return None;
            }
            at += 1;
        }
        if hex_run(s, at, group + 1) != group {
            return None;
        }
        at += group;
    }
    ends_token(s, at).then_some(at - i)
}

/// `HH:MM:SS` with optional fraction, at `i`.
fn clock(s: &[u8], i: usize) -> Option<usize> {
    let ok = fixed_digits(s, i, 2)
        && s.get(i + 2) == Some(&b':')
        && fixed_digits(s, i + 3, 2)
        && s.get(i + 5) == Some(&b':')
        && fixed_digits(s, i + 6, 2);
    if !ok {
        return None;
    }
    let mut end = i + 8;
    if matches!(s.get(end), Some(b'.' | b',')) && s.get(end + 1).is_some_and(u8::is_ascii_digit) {
        end += 1 + digits(s, end + 1).min(9);
    }
    Some(end - i)
}

/// An ISO 8601 date, optionally with a time and zone (`2025-12-11`,
/// `2025-12-11T10:00:00.123Z`, `2025-12-11 10:00:00+01:00`), a bare clock
/// time (`10:00:00.5`), or the common log format (`11/Dec/2025:10:00:00
/// +0000`).
fn timestamp(s: &[u8], i: usize) -> Option<usize> {
    let date = fixed_digits(s, i, 4)
        && matches!(s.get(i + 4), Some(b'-' | b'/'))
        && fixed_digits(s, i + 5, 2)
        && s.get(i + 7) == s.get(i + 4)
        && fixed_digits(s, i + 8, 2);
    if date {
        let mut end = i + 10;
        if matches!(s.get(end), Some(b'T' | b't' | b' '))
            && let Some(n) = clock(s, end + 1)
        {
            end += 1 + n;
            end += zone(s, end);
        }
        return ends_token(s, end).then_some(end - i);
    }
    if let Some(n) = clock(s, i) {
        let end = i + n + zone(s, i + n);
        return ends_token(s, end).then_some(end - i);
    }
    // Common log format: DD/Mon/YYYY:HH:MM:SS [+-]HHMM
    let clf = fixed_digits(s, i, 2)
        && s.get(i + 2) == Some(&b'/')
        && s.len() >= i + 6
        && s[i + 3..i + 6].iter().all(u8::is_ascii_alphabetic)
        && s.get(i + 6) == Some(&b'/')
        && fixed_digits(s, i + 7, 4)
        && s.get(i + 11) == Some(&b':');
    if clf {
        let n = clock(s, i + 12)?;
        let mut end = i + 12 + n;
        if s.get(end) == Some(&b' ')
            && matches!(s.get(end + 1), Some(b'+' | b'-'))
            && fixed_digits(s, end + 2, 4)
        {
            end += 6;
        }
        return ends_token(s, end).then_some(end - i);
    }
    None
}

/// The length of a zone designator at `i`: `Z`, `+01:00`, `-0500`, or none.
fn zone(s: &[u8], i: usize) -> usize {
    match s.get(i) {
        Some(b'Z' | b'z') => 1,
        Some(b'+' | b'-') if fixed_digits(s, i + 1, 2) => {
            if s.get(i + 3) == Some(&b':') && fixed_digits(s, i + 4, 2) {
                6
            } else if fixed_digits(s, i + 3, 2) {
                5
            } else {
                3
            }
        }
        _ => 0,
    }
}

/// A dotted quad of octets ≤ 255, with an optional `:port`.
fn ipv4(s: &[u8], i: usize) -> Option<usize> {
    let mut at = i;
    for n in 0..4 {
        if n > 0 {
            if s.get(at) != Some(&b'.') {
                return None;
            }
            at += 1;
        }
        let len = digits(s, at);
        if len == 0 || len > 3 {
            return None;
        }
        let octet: u32 = s[at..at + len]
            .iter()
            .fold(0, |acc, d| acc * 10 + u32::from(d - b'0'));
        if octet > 255 {
            return None;
        }
        at += len;
    }
    // `1.2.3.4.5` is a version, not an address.
    if s.get(at) == Some(&b'.') && s.get(at + 1).is_some_and(u8::is_ascii_digit) {
        return None;
    }
    if s.get(at) == Some(&b':') && (1..=5).contains(&digits(s, at + 1)) {
        at += 1 + digits(s, at + 1);
    }
    ends_token(s, at).then_some(at - i)
}

/// An IPv6 address: hex groups of at most 4 digits separated by colons,
/// eight of them or fewer with one `::`, optionally ending in a dotted quad.
fn ipv6(s: &[u8], i: usize) -> Option<usize> {
    if i > 0 && s[i - 1] == b':' {
        return None;
    }
    let mut at = i;
    let mut groups = 0;
    let mut elided = false;
    let mut colons = 0;
    let mut hex_digits = 0;
    // 8 groups of 4 plus 7 colons is 39 characters; a longer run is not an
    // address, so the scan is bounded.
    while at < s.len() && at - i <= 40 {
        let n = hex_run(s, at, 5);
        if n > 4 {
            return None;
        }
        if n > 0 {
            // An embedded IPv4 tail (`::ffff:10.0.0.1`) ends the address.
            if s.get(at + n) == Some(&b'.') && colons >= 2 {
                let v4 = ipv4_plain(s, at)?;
                groups += 2;
                at += v4;
                hex_digits += 1;
                break;
            }
            groups += 1;
            hex_digits += n;
            at += n;
        }
        if s.get(at) != Some(&b':') {
            break;
        }
        if s.get(at + 1) == Some(&b':') {
            if elided {
                return None;
            }
            elided = true;
            colons += 2;
            at += 2;
        } else {
            if n == 0 {
                return None;
            }
            colons += 1;
            at += 1;
        }
    }
    let shape_ok = if elided { groups <= 7 } else { groups == 8 };
    let valid = colons >= 2
        && hex_digits > 0
        && shape_ok
        && s.get(at).is_none_or(|&b| !is_word(b) && b != b':');
    valid.then_some(at - i)
}

/// A dotted quad without port or trailing checks, for IPv6 tails.
fn ipv4_plain(s: &[u8], i: usize) -> Option<usize> {
    let mut at = i;
    for n in 0..4 {
        if n > 0 {
            if s.get(at) != Some(&b'.') {
                return None;
            }
            at += 1;
        }
        let len = digits(s, at);
        if len == 0 || len > 3 {
            return None;
        }
        at += len;
    }
    Some(at - i)
}

/// 32 to 64 hex digits: hashes, trace ids, API keys.
fn hex(s: &[u8], i: usize) -> Option<usize> {
    let n = hex_run(s, i, 65);
    ((32..=64).contains(&n) && ends_token(s, i + n)).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pp(s: &str) -> String {
        String::from_utf8(preprocess(s.as_bytes())).unwrap()
    }

    #[test]
    fn redacts_sensitive_json_values_of_any_type() {
        assert_eq!(
            pp(
                r#"{"user":"bob","Password":"hunter2","api_key":123,"X-Auth-Token":{"a":[1,"}"]},"ok":true}"#
            ),
            r#"{"user":"bob","Password":"<REDACTED>","api_key":"<REDACTED>","X-Auth-Token":"<REDACTED>","ok":true}"#
        );
        assert_eq!(
            pp(r#"{"headers": {"Authorization" : "Bearer abc", "Cookie": "s=1"}, "jwt": null}"#),
            r#"{"headers": {"Authorization" : "<REDACTED>", "Cookie": "<REDACTED>"}, "jwt": "<REDACTED>"}"#
        );
        assert_eq!(
            pp(r#"{"clientSecret":"x","accessToken":"y","monkeyBusiness":1,"keyboard":2}"#),
            r#"{"clientSecret":"<REDACTED>","accessToken":"<REDACTED>","monkeyBusiness":1,"keyboard":2}"#
        );
        // An escaped key is still recognised.
        assert_eq!(
            pp(r#"{"pass\u0077ord":"x"}"#),
            r#"{"pass\u0077ord":"<REDACTED>"}"#
        );
    }

    #[test]
    fn redacts_name_value_pairs_in_text() {
        assert_eq!(
            pp("login user=bob password=hunter2 token=abc&x=1"),
            "login user=bob password=<REDACTED> token=<REDACTED>&x=1"
        );
        assert_eq!(
            pp(r#"{"message":"retry with secret=s3cr3t now"}"#),
            r#"{"message":"retry with secret=<REDACTED> now"}"#
        );
        assert_eq!(pp("monkey=1 keyboard=2"), "monkey=<REDACTED> keyboard=2");
    }

    #[test]
    fn sensitive_names() {
        for k in [
            "password",
            "TOKEN",
            "api_key",
            "apiKey",
            "apikey",
            "set-cookie",
            "JWT",
            "authorization",
            "client_secret",
            "refreshToken",
        ] {
            assert!(is_sensitive(k), "{k}");
        }
        for k in [
            "user",
            "keyboard",
            "tokenizer_name",
            "message",
            "secretary_name",
            "",
        ] {
            assert!(!is_sensitive(k), "{k}");
        }
    }

    #[test]
    fn replaces_variable_values_with_placeholders() {
        let cases = [
            ("at 2025-12-11T10:00:00Z done", "at <TS> done"),
            ("at 2025-12-11T10:00:00.123+01:00.", "at <TS>."),
            ("2025-12-11 10:00:00,5 INFO", "<TS> INFO"),
            ("on 2025/12/11", "on <TS>"),
            ("t=10:00:01.250", "t=<TS>"),
            ("[11/Dec/2025:10:00:00 +0000] GET", "[<TS>] GET"),
            ("id 550e8400-e29b-41d4-a716-446655440000.", "id <UUID>."),
            ("trace 4bf92f3577b34da6a3ce929d0e0e4736", "trace <HEX>"),
            (
                "sha 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                "sha <HEX>",
            ),
            ("short abc123 deadbeef", "short abc123 deadbeef"),
            ("from 192.168.1.20:8080 and 10.0.0.1", "from <IP> and <IP>"),
            (
                "version 1.2.3.4.5 and 300.1.1.1",
                "version 1.2.3.4.5 and 300.1.1.1",
            ),
            (
                "v6 2001:db8::8a2e:370:7334 ::1 fe80::1%eth0",
                "v6 <IP> <IP> <IP>%eth0",
            ),
            ("mapped ::ffff:10.0.0.1 end", "mapped <IP> end"),
            ("full 2001:0db8:0000:0000:0000:ff00:0042:8329", "full <IP>"),
            ("not v6 std::vector or 10:30", "not v6 std::vector or 10:30"),
            ("mail bob.smith+x@example.co.uk.", "mail <EMAIL>."),
            ("not mail a@b or @x.com", "not mail a@b or @x.com"),
            ("see https://example.com/a?b=1&c=2). ok", "see <URL>). ok"),
            ("db postgres://u@h:5432/db", "db <URL>"),
            (
                "took 35ms of 1234ms; order-123456 v20250101 1234.5s",
                "took 35ms of <NUM>ms; order-<NUM> v<NUM> <NUM>s",
            ),
            ("code 200 of 999", "code 200 of 999"),
            ("two\nlines\r\n", "two lines  "),
        ];
        for (input, want) in cases {
            assert_eq!(pp(input), want, "{input}");
        }
    }

    #[test]
    fn a_realistic_log_line() {
        let line = r#"{"timestamp":"2025-12-11T10:00:00Z","level":"INFO","message":"GET /api/orders/123 200 in 35ms","service":"api-gateway","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","user_email":"ann@example.com","client_ip":"10.1.2.3","token":"eyJhbGciOi"}"#;
        assert_eq!(
            pp(line),
            r#"{"timestamp":"<TS>","level":"INFO","message":"GET /api/orders/123 200 in 35ms","service":"api-gateway","trace_id":"<HEX>","user_email":"<EMAIL>","client_ip":"<IP>","token":"<REDACTED>"}"#
        );
    }

    #[test]
    fn never_panics_on_odd_input() {
        let odd: [&[u8]; 12] = [
            b"",
            b"\"",
            b"{\"password\":",
            b"{\"password\":\"unterminated",
            b"{\"token\":{\"a\":[",
            b"\"\\",
            b"password=",
            b"2025-12-11T",
            b"::::::::",
            b"1.2.3.",
            b"a@",
            b"\xff\xfe\x00{\"key\"\x00:\xff}",
        ];
        for input in odd {
            let _ = preprocess(input);
        }
        // Long runs that every scanner looks into.
        let long = [
            "a.".repeat(50_000),
            "1".repeat(100_000),
            "f:".repeat(50_000),
            "\"".repeat(10_001),
            "{".repeat(100_000),
        ];
        for input in long {
            let _ = preprocess(input.as_bytes());
        }
        // Random mixes of the characters every scanner looks for.
        let pieces: [&[u8]; 24] = [
            b"\"",
            b"\\",
            b":",
            b"{",
            b"}",
            b"[",
            b"]",
            b",",
            b"=",
            b"@",
            b".",
            b"-",
            b"/",
            b"0",
            b"12",
            b"255",
            b"2025-12-11",
            b"T10:00:00",
            b"ff",
            b"::",
            b"http://",
            b"password",
            b"\\u00",
            b"\xff",
        ];
        let mut rng = crate::metrics::Rng::new(5);
        for _ in 0..2000 {
            let mut input = Vec::new();
            for _ in 0..rng.below(40) {
                input.extend_from_slice(pieces[rng.below(pieces.len())]);
            }
            let out = preprocess(&input);
            assert!(!out.contains(&b'\n'));
        }
    }
}
