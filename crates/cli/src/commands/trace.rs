//! `wasi-observe trace <id>`: one trace as a waterfall, with its logs.

use std::collections::{HashMap, HashSet};

use clap::Parser;
use wasi_observe_store::{Span, Trace};
use wasmtime::Result;

use crate::common::{DbOptions, store_err};
use crate::view::{OutputOptions, Style, attributes, cut, duration, printable, timestamp};

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

/// Orders spans as a tree (children by start time under their parent) with
/// each log record under the span it was emitted in, in time order among
/// that span's children. Spans whose parent is not in the trace are roots.
pub fn waterfall(trace: &Trace) -> Vec<Row> {
    let index: HashMap<&str, usize> = trace
        .spans
        .iter()
        .enumerate()
        .map(|(i, s)| (s.span_id.as_str(), i))
        .collect();
    // Children of each span (`None`: the top level), with their times.
    let mut children: HashMap<Option<usize>, Vec<(i64, bool, usize)>> = HashMap::new();
    for (i, s) in trace.spans.iter().enumerate() {
        let parent = s
            .parent_span_id
            .as_deref()
            .and_then(|p| index.get(p).copied())
            .filter(|&p| p != i);
        children
            .entry(parent)
            .or_default()
            .push((s.start_ns, false, i));
    }
    for (i, l) in trace.logs.iter().enumerate() {
        let parent = l.span_id.as_deref().and_then(|p| index.get(p).copied());
        children
            .entry(parent)
            .or_default()
            .push((l.time_ns, true, i));
    }
    for list in children.values_mut() {
        list.sort();
    }
    let mut rows = Vec::new();
    let mut seen = HashSet::new();
    walk(&children, None, 0, &mut rows, &mut seen);
    // Spans in a parent cycle (impossible from one host, but the store
    // holds what it is given) still show, at the top level.
    for i in 0..trace.spans.len() {
        if !seen.contains(&i) {
            rows.push(Row::Span(i, 0));
            seen.insert(i);
        }
    }
    rows
}

/// Depth-first from `root`, with an explicit stack (a deep trace cannot
/// overflow the call stack): (children list, next position, depth).
fn walk(
    children: &HashMap<Option<usize>, Vec<(i64, bool, usize)>>,
    root: Option<usize>,
    depth: usize,
    rows: &mut Vec<Row>,
    seen: &mut HashSet<usize>,
) {
    let empty = Vec::new();
    let mut stack = vec![(children.get(&root).unwrap_or(&empty), 0usize, depth)];
    while let Some((list, pos, depth)) = stack.pop() {
        let Some(&(_, is_log, i)) = list.get(pos) else {
            continue;
        };
        stack.push((list, pos + 1, depth));
        if is_log {
            rows.push(Row::Log(i, depth));
        } else if seen.insert(i) {
            rows.push(Row::Span(i, depth));
            stack.push((children.get(&Some(i)).unwrap_or(&empty), 0, depth + 1));
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
        self.print(&trace);
        Ok(())
    }

    fn print(&self, trace: &Trace) {
        let st = Style::detect();
        let t = &trace.summary;
        let errors = match t.error_count {
            0 => String::new(),
            n => st.red(&format!(", {n} with errors")),
        };
        println!(
            "{} {}  {}  started {} UTC  {}  {} spans{errors}",
            st.bold("trace"),
            st.cyan(&t.trace_id),
            printable(&t.service),
            timestamp(t.start_ns),
            duration(t.duration_ns),
            t.span_count,
        );
        let rows = waterfall(trace);
        let name_width = rows
            .iter()
            .filter_map(|r| match *r {
                Row::Span(i, d) => Some(2 * d + 2 + trace.spans[i].name.chars().count()),
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
                    let indent = "  ".repeat(depth);
                    let mark = match s.status_code.as_str() {
                        "error" => st.red("✗"),
                        "ok" => st.green("✓"),
                        _ => " ".into(),
                    };
                    let name = cut(&format!("{indent}{}", printable(&s.name)), name_width - 2);
                    let from = (((s.start_ns - t0) as f64 / total) * width as f64) as usize;
                    let to = ((((s.end_ns - t0) as f64 / total) * width as f64).ceil() as usize)
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
                    println!(
                        "{mark} {name:<name_width$} {:>9} │{bar}│ {}{status}",
                        duration(s.duration_ns),
                        st.dim(&s.kind),
                        name_width = name_width - 2,
                    );
                    self.details(&st, s, &indent);
                }
                Row::Log(i, depth) => {
                    let l = &trace.logs[i];
                    println!(
                        "  {}{} {} {} {} {}",
                        "  ".repeat(depth),
                        st.dim("◆"),
                        st.dim(&format!("+{}", duration(l.time_ns - t0))),
                        st.severity(l.severity_number, &l.severity_text),
                        st.dim(&format!("[{}]", printable(&l.target))),
                        printable(&l.body)
                    );
                }
            }
        }
    }

    fn details(&self, st: &Style, s: &Span, indent: &str) {
        let pad = format!("    {indent}");
        if self.attributes
            && let Some(map) = s.attributes.as_object()
        {
            for (k, v) in map {
                println!(
                    "{pad}{} {}",
                    st.dim(&printable(k)),
                    printable(&v.to_string())
                );
            }
        }
        if self.events {
            for e in &s.events {
                println!(
                    "{pad}{} {} {} {}",
                    st.yellow("event"),
                    st.dim(&format!("+{}", duration(e.time_ns - s.start_ns))),
                    printable(&e.name),
                    attributes(&e.attributes)
                );
            }
            for l in &s.links {
                println!(
                    "{pad}{} {} {} {}",
                    st.yellow("link"),
                    l.trace_id,
                    l.span_id,
                    attributes(&l.attributes)
                );
            }
        }
    }
}
