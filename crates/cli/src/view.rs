//! What the terminal views share: colour (only on a terminal, never under
//! `NO_COLOR`), durations, times, and `--json` output.

use std::fmt::Write as _;
use std::io::IsTerminal as _;

use clap::Args;
use serde::Serialize;
use wasmtime::Result;

/// Output options of every view.
#[derive(Args, Clone, Debug, Default)]
pub struct OutputOptions {
    /// Print JSON (stable, documented in docs/store.md) instead of text.
    #[arg(long)]
    pub json: bool,
}

impl OutputOptions {
    /// Prints `value` as pretty JSON.
    pub fn print_json(&self, value: &impl Serialize) -> Result<()> {
        let text = serde_json::to_string_pretty(value).map_err(wasmtime::Error::msg)?;
        println!("{text}");
        Ok(())
    }
}

/// ANSI styling, or none.
#[derive(Clone, Copy, Debug)]
pub struct Style {
    on: bool,
}

impl Style {
    /// Colour when standard output is a terminal and `NO_COLOR` is unset.
    pub fn detect() -> Style {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Style {
            on: !no_color && std::io::stdout().is_terminal(),
        }
    }

    /// No styling, whatever standard output is.
    #[cfg(test)]
    pub fn plain() -> Style {
        Style { on: false }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    /// Bold.
    pub fn bold(&self, t: &str) -> String {
        self.paint("1", t)
    }
    /// Dimmed.
    pub fn dim(&self, t: &str) -> String {
        self.paint("2", t)
    }
    /// Red.
    pub fn red(&self, t: &str) -> String {
        self.paint("31", t)
    }
    /// Yellow.
    pub fn yellow(&self, t: &str) -> String {
        self.paint("33", t)
    }
    /// Green.
    pub fn green(&self, t: &str) -> String {
        self.paint("32", t)
    }
    /// Cyan.
    pub fn cyan(&self, t: &str) -> String {
        self.paint("36", t)
    }

    /// A severity name coloured by its level.
    pub fn severity(&self, number: i32, text: &str) -> String {
        let text = format!("{text:<5}");
        match number {
            17.. => self.red(&text),
            13..=16 => self.yellow(&text),
            9..=12 => self.green(&text),
            _ => self.dim(&text),
        }
    }
}

/// `820ns`, `15µs`, `1.23ms`, `2.50s`, `3m05s`, `5h02m`, `12d03h`.
pub fn duration(ns: i64) -> String {
    let ns = ns.max(0) as f64;
    if ns < 1e3 {
        format!("{ns}ns")
    } else if ns < 1e6 {
        let digits = format!("{:.1}", ns / 1e3);
        format!("{}µs", digits.trim_end_matches('0').trim_end_matches('.'))
    } else if ns < 1e9 {
        format!("{:.2}ms", ns / 1e6)
    } else if ns < 60e9 {
        format!("{:.2}s", ns / 1e9)
    } else {
        let s = (ns / 1e9) as u64;
        match s {
            0..3600 => format!("{}m{:02}s", s / 60, s % 60),
            3600..86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
            _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
        }
    }
}

/// `10ms`, `2s`, `1.5m`, `500us`, `250ns` (a bare number is milliseconds).
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}`: expected a duration such as 10ms, 2s"))?;
    let mult = match unit {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "" | "ms" => 1e6,
        "s" => 1e9,
        "m" => 60e9,
        "h" => 3600e9,
        other => {
            return Err(format!(
                "`{s}`: unknown unit `{other}` (ns, us, ms, s, m, h)"
            ));
        }
    };
    Ok((n * mult) as i64)
}

/// `2026-11-25 17:50:30.123` (UTC).
pub fn timestamp(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let millis = ns.rem_euclid(1_000_000_000) / 1_000_000;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{millis:03}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `k=v k2="text"` from a JSON object, in key order.
pub fn attributes(attrs: &serde_json::Value) -> String {
    let mut out = String::new();
    if let Some(map) = attrs.as_object() {
        for (i, (k, v)) in map.iter().enumerate() {
            if i > 0 {
                out.push(' ');
            }
            let _ = write!(out, "{}={}", printable(k), printable(&v.to_string()));
        }
    }
    out
}

/// `n word`, or `n words` but for one.
pub fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// A log record's message followed by its attributes (dim), as `tracing`'s
/// own formatter prints an event's fields: a record made with fields and no
/// message (`#[instrument(err)]`'s `error = ..`) would otherwise show as an
/// empty line.
pub fn message(st: &Style, body: &str, attrs: &serde_json::Value) -> String {
    let fields = attributes(attrs);
    match (body.is_empty(), fields.is_empty()) {
        (_, true) => printable(body),
        (true, false) => st.dim(&fields),
        (false, false) => format!("{} {}", printable(body), st.dim(&fields)),
    }
}

/// `s` as the terminal may show it: control characters escaped (`\n`,
/// `\u{1b}`) so that guest text cannot move the cursor or fake lines, and
/// invisible format characters escaped (`\u{202e}`) so that it cannot
/// reorder what follows it (bidi controls) or hide text (zero-width
/// characters). Only for terminal output: `--json` keeps the stored text.
pub fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else if is_invisible(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// The format characters (Unicode category Cf) and the line and paragraph
/// separators: none draws anything, yet each can change how the text around
/// it reads. Among them the bidi controls (U+061C, U+200E, U+200F,
/// U+202A..U+202E, U+2066..U+2069), the zero-width characters (U+200B..U+200D,
/// U+2060, U+FEFF), and the tag characters, which can carry hidden text.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{ad}'
            | '\u{600}'..='\u{605}'
            | '\u{61c}'
            | '\u{6dd}'
            | '\u{70f}'
            | '\u{890}'..='\u{891}'
            | '\u{8e2}'
            | '\u{180e}'
            | '\u{200b}'..='\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206f}'
            | '\u{feff}'
            | '\u{fff9}'..='\u{fffb}'
            | '\u{110bd}'
            | '\u{110cd}'
            | '\u{13430}'..='\u{1343f}'
            | '\u{1bca0}'..='\u{1bca3}'
            | '\u{1d173}'..='\u{1d17a}'
            | '\u{e0001}'
            | '\u{e0020}'..='\u{e007f}'
    )
}

/// The first 12 characters of a trace id, as the lists show it. Ids in the
/// store are whatever its writer put there, so the cut counts characters
/// (a byte slice would panic on a short id or inside a character).
pub fn short_id(id: &str) -> String {
    printable(&id.chars().take(12).collect::<String>())
}

/// `s` cut to `width` characters (with `…`).
pub fn cut(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(timestamp(0), "1970-01-01 00:00:00.000");
        assert_eq!(
            timestamp(1_700_000_000_123_000_000),
            "2023-11-14 22:13:20.123"
        );
        assert_eq!(duration(820), "820ns");
        assert_eq!(duration(15_000), "15µs");
        assert_eq!(duration(1_234_567), "1.23ms");
        assert_eq!(duration(2_500_000_000), "2.50s");
        assert_eq!(duration(185_000_000_000), "3m05s");
        assert_eq!(duration(18_120_000_000_000), "5h02m");
        assert_eq!(duration(1_047_600_000_000_000), "12d03h");
        assert_eq!(parse_duration("10ms"), Ok(10_000_000));
        assert_eq!(parse_duration("1.5s"), Ok(1_500_000_000));
        assert_eq!(parse_duration("5"), Ok(5_000_000));
        assert!(parse_duration("fast").is_err());
        assert_eq!(printable("a\nb\x1b[31m"), "a\\nb\\u{1b}[31m");
        assert_eq!(short_id("0123456789abcdef"), "0123456789ab");
        assert_eq!(cut("abcdef", 4), "abc…");
        assert_eq!(plural(1, "span"), "1 span");
        assert_eq!(plural(0, "span"), "0 spans");
        assert_eq!(plural(2, "trace"), "2 traces");
    }

    /// A record's fields follow its message; a record of fields alone shows
    /// them (not an empty line); guest text stays escaped in both.
    #[test]
    fn a_log_message_shows_its_fields() {
        let st = Style::plain();
        let fields = serde_json::json!({"error": "only 5 left", "n": 9});
        assert_eq!(
            message(&st, "reserve failed", &fields),
            "reserve failed error=\"only 5 left\" n=9"
        );
        assert_eq!(message(&st, "", &fields), "error=\"only 5 left\" n=9");
        assert_eq!(message(&st, "plain", &serde_json::json!({})), "plain");
        assert_eq!(
            message(&st, "a\nb", &serde_json::json!({"k\x1b": "v\n"})),
            "a\\nb k\\u{1b}=\"v\\n\""
        );
    }

    /// Bidi controls, zero-width and other invisible characters come out as
    /// visible escapes; other text (accents, combining marks, CJK, emoji)
    /// is unchanged.
    #[test]
    fn printable_escapes_bidi_and_invisible_characters() {
        for c in [
            '\u{202a}',
            '\u{202b}',
            '\u{202c}',
            '\u{202d}',
            '\u{202e}',
            '\u{2066}',
            '\u{2067}',
            '\u{2068}',
            '\u{2069}',
            '\u{200e}',
            '\u{200f}',
            '\u{61c}',
            '\u{200b}',
            '\u{200c}',
            '\u{200d}',
            '\u{2060}',
            '\u{feff}',
            '\u{2028}',
            '\u{2029}',
            '\u{85}',
            '\u{7f}',
            '\u{e0041}',
        ] {
            assert_eq!(
                printable(&format!("a{c}b")),
                format!("a\\u{{{:x}}}b", u32::from(c))
            );
        }
        let text = "h\u{e9}llo e\u{301} 日本語 👍🏽 \"q\" \\";
        assert_eq!(printable(text), text);
    }

    #[test]
    fn short_ids_are_cut_at_a_character_boundary() {
        assert_eq!(short_id("abc"), "abc");
        assert_eq!(short_id(""), "");
        assert_eq!(short_id("0123456789aé-and-more"), "0123456789aé");
        assert_eq!(short_id("0123456789\u{202e}xyz"), "0123456789\\u{202e}x");
    }
}
