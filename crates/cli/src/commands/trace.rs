//! `wasi-observe trace <id>`: one trace as a waterfall, with its logs.

use std::collections::HashMap;
use std::io::{self, Write};

use clap::Parser;
use wasi_observe_store::{Span, Trace};
use wasmtime::Result;

use crate::common::{DbOptions, store_err};
use crate::view::{OutputOptions, Style, attributes, cut, duration, message, printable, timestamp};

/// Show one trace: its spans as a waterfall (nesting, durations as bars,
/// status), and its log records where they happened.
#[derive(Parser)]
pub struct TraceCommand {
    /// The trace id (32 hex digits, or a unique prefix of at least 4).
    trace_id: String,

    /// Show each span's attributes.
    #[arg(long, short = 'a')]
    attributes: bool,

    /// Show each span's events and links.
    #[arg(long, short = 'e')]
    events: bool,

    /// Width of the duration bars.
    #[arg(long, default_value_t = 40)]
    bar_width: usize,

    #[command(flatten)]
    db: DbOptions,

    #[command(flatten)]
    output: OutputOptions,
}

/// A row of the waterfall: a span, or a log record, in tree order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Row {
    /// `spans[i]` at depth `d`.
    Span(usize, usize),
    /// `logs[i]` at depth `d`.
    Log(usize, usize),
}

/// How many levels the waterfall indents. Deeper rows stay at this indent
/// and show their depth instead, so that a line's width, and the work to
/// build it, does not grow with nesting.
const MAX_INDENT: usize = 12;

/// The indentation of a row at `depth`: two columns a level, and past
/// [`MAX_INDENT`] levels the depth in as many columns (`[20000] `).
fn indent(depth: usize) -> String {
    if depth <= MAX_INDENT {
        "  ".repeat(depth)
    } else {
        format!("{:>w$} ", format!("[{depth}]"), w = 2 * MAX_INDENT - 1)
    }
}

/// How wide [`indent`] is at `depth`, in columns.
fn indent_width(depth: usize) -> usize {
    2 * depth.min(MAX_INDENT)
}

/// An entry of a children list: start time, whether it is a log record, and
/// its index in `spans` or `logs`.
type Child = (i64, bool, usize);

/// Orders spans as a tree (children by start time under their parent) with
/// each log record under the span it was emitted in, in time order among
/// that span's children. Spans whose parent is not in the trace are roots.
///
/// Linear in spans and logs (plus sorting each children list): children are
/// listed once, and the walk keeps its own stack, so depth costs neither
/// time nor call stack.
pub fn waterfall(trace: &Trace) -> Vec<Row> {
    let n = trace.spans.len();
    let index: HashMap<&str, usize> = trace
        .spans
        .iter()
        .enumerate()
        .map(|(i, s)| (s.span_id.as_str(), i))
        .collect();
    // `children[i]`: what is under span `i`; `children[n]`: the top level.
    let mut children: Vec<Vec<Child>> = vec![Vec::new(); n + 1];
    for (i, s) in trace.spans.iter().enumerate() {
        let parent = s
            .parent_span_id
            .as_deref()
            .and_then(|p| index.get(p).copied())
            .filter(|&p| p != i)
            .unwrap_or(n);
        children[parent].push((s.start_ns, false, i));
    }
    for (i, l) in trace.logs.iter().enumerate() {
        let parent = l
            .span_id
            .as_deref()
            .and_then(|p| index.get(p).copied())
            .unwrap_or(n);
        children[parent].push((l.time_ns, true, i));
    }
    for list in &mut children {
        list.sort_unstable();
    }
    let mut rows = Vec::with_capacity(n + trace.logs.len());
    let mut seen = vec![false; n];
    walk(&children, n, 0, &mut rows, &mut seen);
    // Spans in a parent cycle (impossible from one host, but the store
    // holds what it is given) still show, from the top level, with what
    // hangs under them.
    for i in 0..n {
        if !seen[i] {
            seen[i] = true;
            rows.push(Row::Span(i, 0));
            walk(&children, i, 1, &mut rows, &mut seen);
        }
    }
    rows
}

/// Appends what is under `start` (a span, or `spans.len()` for the top
/// level) depth first, `depth` being its children's. The stack holds, per
/// level, the rest of that level's children list: no recursion, so a deep
/// trace cannot overflow the call stack.
fn walk(
    children: &[Vec<Child>],
    start: usize,
    depth: usize,
    rows: &mut Vec<Row>,
    seen: &mut [bool],
) {
    let mut stack: Vec<(&[Child], usize)> = vec![(children[start].as_slice(), depth)];
    while let Some(top) = stack.last_mut() {
        let (list, depth) = *top;
        let Some((&(_, is_log, i), rest)) = list.split_first() else {
            stack.pop();
            continue;
        };
        top.0 = rest;
        if is_log {
            rows.push(Row::Log(i, depth));
        } else if !seen[i] {
            seen[i] = true;
            rows.push(Row::Span(i, depth));
            stack.push((children[i].as_slice(), depth + 1));
        }
    }
}

impl TraceCommand {
    /// Prints the trace.
    pub fn execute(self) -> Result<()> {
        let store = self.db.open()?;
        let id = store
            .resolve_trace_id(&self.trace_id)
            .map_err(store_err)?
            .ok_or_else(|| {
                wasmtime::Error::msg(format!(
                    "no trace `{}` in {} (list them with: wasi-observe traces{})",
                    self.trace_id,
                    store.path().display(),
                    self.db.flag()
                ))
            })?;
        let trace = store
            .trace(&id)
            .map_err(store_err)?
            .ok_or_else(|| wasmtime::Error::msg(format!("trace {id} was just pruned")))?;
        if self.output.json {
            return self.output.print_json(&trace);
        }
        let mut out = io::BufWriter::new(io::stdout().lock());
        match self
            .print(&trace, Style::detect(), &mut out)
            .and_then(|()| out.flush())
        {
            // A reader that stopped early (`| head`) is not an error.
            Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(wasmtime::Error::msg(e)),
            _ => Ok(()),
        }
    }

    fn print(&self, trace: &Trace, st: Style, out: &mut impl Write) -> io::Result<()> {
        let t = &trace.summary;
        let errors = match t.error_count {
            0 => String::new(),
            n => st.red(&format!(", {n} with errors")),
        };
        writeln!(
            out,
            "{} {}  {}  started {} UTC  {}  {} spans{errors}",
            st.bold("trace"),
            st.cyan(&printable(&t.trace_id)),
            printable(&t.service),
            timestamp(t.start_ns),
            duration(t.duration_ns),
            t.span_count,
        )?;
        let rows = waterfall(trace);
        let name_width = rows
            .iter()
            .filter_map(|r| match *r {
                Row::Span(i, d) => {
                    Some(indent_width(d) + 2 + printable(&trace.spans[i].name).chars().count())
                }
                Row::Log(..) => None,
            })
            .max()
            .unwrap_or(10)
            .clamp(10, 48);
        let t0 = t.start_ns;
        let total = t.duration_ns.max(1) as f64;
        let width = self.bar_width.max(4);
        for row in rows {
            match row {
                Row::Span(i, depth) => {
                    let s = &trace.spans[i];
                    let mark = match s.status_code.as_str() {
                        "error" => st.red("✗"),
                        "ok" => st.green("✓"),
                        _ => " ".into(),
                    };
                    let name = cut(
                        &format!("{}{}", indent(depth), printable(&s.name)),
                        name_width - 2,
                    );
                    let from =
                        ((s.start_ns.saturating_sub(t0) as f64 / total) * width as f64) as usize;
                    let to = (((s.end_ns.saturating_sub(t0) as f64 / total) * width as f64).ceil()
                        as usize)
                        .clamp(from + 1, width.max(from + 1));
                    let from = from.min(width - 1);
                    let bar = format!(
                        "{}{}{}",
                        " ".repeat(from),
                        "█".repeat(to.min(width) - from),
                        " ".repeat(width.saturating_sub(to))
                    );
                    let bar = if s.status_code == "error" {
                        st.red(&bar)
                    } else {
                        st.cyan(&bar)
                    };
                    let status = if s.status_message.is_empty() {
                        String::new()
                    } else {
                        format!(" {}", st.red(&printable(&s.status_message)))
                    };
                    writeln!(
                        out,
                        "{mark} {name:<name_width$} {:>9} │{bar}│ {}{status}",
                        duration(s.duration_ns),
                        st.dim(&printable(&s.kind)),
                        name_width = name_width - 2,
                    )?;
                    self.details(&st, s, depth, out)?;
                }
                Row::Log(i, depth) => {
                    let l = &trace.logs[i];
                    writeln!(
                        out,
                        "  {}{} {} {} {} {}",
                        indent(depth),
                        st.dim("◆"),
                        st.dim(&format!("+{}", duration(l.time_ns.saturating_sub(t0)))),
                        st.severity(l.severity_number, &printable(&l.severity_text)),
                        st.dim(&format!("[{}]", printable(&l.target))),
                        message(&st, &l.body, &l.attributes)
                    )?;
                }
            }
        }
        Ok(())
    }

    /// The attributes, events and links asked for, under the span's name.
    fn details(&self, st: &Style, s: &Span, depth: usize, out: &mut impl Write) -> io::Result<()> {
        let pad = " ".repeat(4 + indent_width(depth));
        if self.attributes
            && let Some(map) = s.attributes.as_object()
        {
            for (k, v) in map {
                writeln!(
                    out,
                    "{pad}{} {}",
                    st.dim(&printable(k)),
                    printable(&v.to_string())
                )?;
            }
        }
        if self.events {
            for e in &s.events {
                writeln!(
                    out,
                    "{pad}{} {} {} {}",
                    st.yellow("event"),
                    st.dim(&format!(
                        "+{}",
                        duration(e.time_ns.saturating_sub(s.start_ns))
                    )),
                    printable(&e.name),
                    attributes(&e.attributes)
                )?;
            }
            for l in &s.links {
                writeln!(
                    out,
                    "{pad}{} {} {} {}",
                    st.yellow("link"),
                    printable(&l.trace_id),
                    printable(&l.span_id),
                    attributes(&l.attributes)
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasi_observe_store::{LogRecord, TraceSummary};

    fn span(i: usize, parent: Option<usize>) -> Span {
        Span {
            trace_id: "ab".repeat(16),
            span_id: format!("{i:016x}"),
            parent_span_id: parent.map(|p| format!("{p:016x}")),
            name: format!("s{i}"),
            kind: "internal".into(),
            service: "svc".into(),
            scope: "scope".into(),
            start_ns: i as i64,
            end_ns: 100_000,
            duration_ns: 100_000 - i as i64,
            status_code: "unset".into(),
            status_message: String::new(),
            attributes: serde_json::json!({ "depth": i }),
            events: Vec::new(),
            links: Vec::new(),
            dropped: serde_json::json!({}),
            resource: serde_json::json!({}),
        }
    }

    fn log(span: usize, time_ns: i64) -> LogRecord {
        LogRecord {
            id: time_ns,
            time_ns,
            severity_number: 9,
            severity_text: "INFO".into(),
            body: format!("in s{span}"),
            target: "t".into(),
            service: "svc".into(),
            trace_id: Some("ab".repeat(16)),
            span_id: Some(format!("{span:016x}")),
            attributes: serde_json::json!({}),
        }
    }

    fn trace(spans: Vec<Span>, logs: Vec<LogRecord>) -> Trace {
        Trace {
            summary: TraceSummary {
                trace_id: "ab".repeat(16),
                root_name: "s0".into(),
                service: "svc".into(),
                start_ns: 0,
                duration_ns: 100_000,
                span_count: spans.len() as i64,
                error_count: 0,
            },
            spans,
            logs,
        }
    }

    /// 20 000 spans, each the parent of the next, with a log record in the
    /// deepest: the tree comes out in order at the right depths, on a
    /// thread whose stack is far too small for one call per level, and
    /// every printed line stays narrow however deep its row is.
    #[test]
    fn a_deep_trace_is_walked_without_recursion_and_printed_in_bounded_width() {
        const DEPTH: usize = 20_000;
        let spans = (0..DEPTH)
            .map(|i| span(i, i.checked_sub(1)))
            .collect::<Vec<_>>();
        let deep = trace(spans, vec![log(DEPTH - 1, DEPTH as i64)]);
        let (rows, text) = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                let rows = waterfall(&deep);
                let cmd = TraceCommand::try_parse_from(["trace", "abab", "--attributes"]).unwrap();
                let mut out = Vec::new();
                cmd.print(&deep, Style::plain(), &mut out).unwrap();
                (rows, String::from_utf8(out).unwrap())
            })
            .unwrap()
            .join()
            .unwrap();
        let mut expected: Vec<Row> = (0..DEPTH).map(|i| Row::Span(i, i)).collect();
        expected.push(Row::Log(0, DEPTH));
        assert_eq!(rows, expected);

        // The header, then a line and an attribute line per span, then the log.
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1 + 2 * DEPTH + 1);
        let widest = lines.iter().map(|l| l.chars().count()).max().unwrap();
        assert!(widest < 160, "a line of {widest} characters");
        assert!(lines[1].starts_with("  s0 "), "{}", lines[1]);
        assert!(lines[3].starts_with("    s1 "), "{}", lines[3]);
        let last_span = lines[2 * DEPTH - 1];
        assert!(last_span.contains("[19999] s19999"), "{last_span}");
        assert!(lines[2 * DEPTH].trim_start().starts_with("depth 19999"));
        let log = lines[2 * DEPTH + 1];
        assert!(
            log.contains("[20000] ◆") && log.ends_with("in s19999"),
            "{log}"
        );
    }

    /// Spans whose parents form a cycle still show, with what hangs under
    /// them (their log records included).
    #[test]
    fn spans_in_a_parent_cycle_show_with_their_children_and_logs() {
        let t = trace(
            vec![span(0, Some(1)), span(1, Some(0)), span(2, None)],
            vec![log(1, 5)],
        );
        assert_eq!(
            waterfall(&t),
            [
                Row::Span(2, 0),
                Row::Span(0, 0),
                Row::Span(1, 1),
                Row::Log(0, 2)
            ]
        );
    }
}
