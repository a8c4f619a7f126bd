//! How configuration values appear in messages: durations the way they are
//! written in the file, and echoed values cut short so that a broken or
//! hostile file cannot flood the terminal or the journal.

use std::fmt::Write as _;
use std::time::Duration;

/// Characters of an echoed value that a message shows before cutting it.
pub const ECHO_LIMIT: usize = 80;

/// Characters of a whole reason beyond which it is cut (a last resort: the
/// values inside it are cut to [`ECHO_LIMIT`] first).
const REASON_LIMIT: usize = 1000;

/// Formats a duration the way it can be written in the file: `1.5s`,
/// `500ms`, `1m30s`, `2h`; decimals only where needed.
pub fn show(d: Duration) -> String {
    const NANOS_PER_MS: u128 = 1_000_000;
    const NANOS_PER_S: u128 = 1_000_000_000;
    let secs = d.as_secs();
    let nanos = d.subsec_nanos();
    if secs == 0 {
        if nanos == 0 {
            return "0s".to_string();
        }
        return format!("{}ms", decimal(u128::from(nanos), NANOS_PER_MS));
    }
    let (hours, minutes, seconds) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    if hours > 0 {
        let _ = write!(out, "{hours}h");
    }
    if minutes > 0 {
        let _ = write!(out, "{minutes}m");
    }
    if seconds > 0 || nanos > 0 {
        let total = u128::from(seconds) * NANOS_PER_S + u128::from(nanos);
        let _ = write!(out, "{}s", decimal(total, NANOS_PER_S));
    }
    out
}

/// `value / unit` as a decimal without trailing zeros (`1.5`, `2`, `0.25`).
fn decimal(value: u128, unit: u128) -> String {
    let whole = value / unit;
    let fraction = value % unit;
    if fraction == 0 {
        return whole.to_string();
    }
    let digits = unit.ilog10() as usize;
    let fraction = format!("{fraction:0digits$}");
    format!("{whole}.{}", fraction.trim_end_matches('0'))
}

/// `text` itself when it has at most `limit` characters, else its first
/// `limit` characters and `… (N bytes)`.
pub fn clip(text: &str, limit: usize) -> String {
    match text.char_indices().nth(limit) {
        None => text.to_string(),
        Some((cut, _)) => format!("{}… ({} bytes)", &text[..cut], text.len()),
    }
}

/// A value as messages echo it: quoted like `{:?}`, cut after
/// [`ECHO_LIMIT`] characters with its length.
pub fn quoted(value: &str) -> String {
    clip_quoted(&format!("{value:?}"))
}

/// Cuts every quoted value (`"…"` as `{:?}` writes it, or `` `…` `` as serde
/// writes keys) longer than [`ECHO_LIMIT`] characters to its start, and
/// says how long it was: `"aaaa…" (10485760 bytes)`.
pub fn clip_quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(REASON_LIMIT * 2));
    let mut rest = text;
    while let Some(open) = rest.find(['"', '`']) {
        let quote = if rest[open..].starts_with('"') {
            '"'
        } else {
            '`'
        };
        out.push_str(&rest[..=open]);
        let body = &rest[open + 1..];
        let close = closing_quote(body, quote);
        let inner = &body[..close.unwrap_or(body.len())];
        match inner.char_indices().nth(ECHO_LIMIT) {
            None => out.push_str(inner),
            Some((cut, _)) => {
                out.push_str(&inner[..cut]);
                out.push('…');
                if close.is_some() {
                    out.push(quote);
                }
                let _ = write!(out, " ({} bytes)", inner.len());
                rest = close.map_or("", |at| &body[at + 1..]);
                continue;
            }
        }
        match close {
            Some(at) => {
                out.push(quote);
                rest = &body[at + 1..];
            }
            None => rest = "",
        }
    }
    out.push_str(rest);
    clip(&out, REASON_LIMIT)
}

/// Byte index of the quote that closes a quoted run starting at `body`
/// (`"` runs may contain `\"`).
fn closing_quote(body: &str, quote: char) -> Option<usize> {
    let mut escaped = false;
    for (at, c) in body.char_indices() {
        match c {
            '\\' if quote == '"' && !escaped => escaped = true,
            c if c == quote && !escaped => return Some(at),
            _ => escaped = false,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_the_file() {
        for (d, text) in [
            (Duration::ZERO, "0s"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_micros(10_010), "10.01ms"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_secs(15), "15s"),
            (Duration::from_millis(2250), "2.25s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_millis(61_500), "1m1.5s"),
            (Duration::from_secs(3600), "1h"),
            (Duration::from_secs(3605), "1h5s"),
        ] {
            assert_eq!(show(d), text);
            // What a message shows can be written back into the file.
            assert_eq!(humantime::parse_duration(text).ok(), Some(d), "{text}");
        }
    }

    #[test]
    fn long_values_are_cut_with_their_length() {
        let name = "a".repeat(10_000_000);
        let reason = format!("{name:?} is too long; at most 63 characters");
        let shown = clip_quoted(&reason);
        assert_eq!(
            shown,
            format!(
                "\"{}…\" (10000000 bytes) is too long; at most 63 characters",
                "a".repeat(80)
            )
        );
        let key = format!("unknown field `{name}`, expected one of `name`, `identity`");
        assert_eq!(
            clip_quoted(&key),
            format!(
                "unknown field `{}…` (10000000 bytes), expected one of `name`, `identity`",
                "a".repeat(80)
            )
        );
        // Short values, escapes and an unclosed quote pass unharmed.
        let short = r#""a \"b\" c" contains 'D', `x`"#;
        assert_eq!(clip_quoted(short), short);
        assert_eq!(clip_quoted("say \"hi"), "say \"hi");
        assert_eq!(clip("é".repeat(100).as_str(), 2), "éé… (200 bytes)");
    }
}
