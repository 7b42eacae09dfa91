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

/// `s` with control characters escaped, so a guest cannot move the cursor
/// or fake lines.
pub fn printable(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
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
        assert_eq!(cut("abcdef", 4), "abc…");
    }
}
