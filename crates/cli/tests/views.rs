//! The embedded store end to end: `run` records to it by default and says
//! so; `traces`, `trace`, `logs` and `metrics` show what it holds; bad store
//! files are refused untouched; a full store drops and counts while the
//! guest runs on.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use otlp_receiver::OtlpHttpReceiver;
use serde_json::Value;
use test_programs_artifacts::*;

/// A fresh store path for one test.
fn temp_db(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("wasi-observe-views-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("telemetry.db")
}

/// The CLI with a clean environment and the store at `db`.
fn cli(db: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wasi-observe"));
    for (k, _) in std::env::vars() {
        if k.starts_with("OTEL_") || k.starts_with("WASI_OBSERVE_") || k == "NO_COLOR" {
            cmd.env_remove(k);
        }
    }
    cmd.env("WASI_OBSERVE_DB", db)
        .env("XDG_DATA_HOME", db.parent().unwrap());
    cmd
}

fn output(mut cmd: Command, args: &[&str]) -> Output {
    let out = cmd.args(args).output().expect("running wasi-observe");
    eprintln!("$ wasi-observe {}", args.join(" "));
    eprintln!("stdout: {}", String::from_utf8_lossy(&out.stdout));
    eprintln!("stderr: {}", String::from_utf8_lossy(&out.stderr));
    out
}

fn stdout(db: &Path, args: &[&str]) -> String {
    let out = output(cli(db), args);
    assert!(out.status.success(), "wasi-observe {args:?} failed");
    String::from_utf8(out.stdout).unwrap()
}

fn json(db: &Path, args: &[&str]) -> Value {
    serde_json::from_str(&stdout(db, args)).unwrap()
}

/// Runs the feature guest into the store at `db`; returns the ids it
/// printed (`name -> (trace, span)`) and the run's stderr.
fn record_features(db: &Path) -> (std::collections::HashMap<String, (String, String)>, String) {
    let out = output(cli(db), &["run", TRACER_FEATURES_COMPONENT]);
    assert!(out.status.success());
    let ids = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((
                it.next()?.to_string(),
                (it.next()?.to_string(), it.next()?.to_string()),
            ))
        })
        .collect();
    (ids, String::from_utf8(out.stderr).unwrap())
}

#[test]
fn run_records_to_the_store_by_default_and_names_what_it_recorded() {
    let db = temp_db("default");
    let (ids, stderr) = record_features(&db);
    assert!(db.exists());
    // No console lines: the store is the default.
    assert!(!stderr.lines().any(|l| l.starts_with("span ")), "{stderr}");
    let hint: Vec<&str> = stderr.lines().filter(|l| l.contains("recorded")).collect();
    assert_eq!(hint.len(), 1, "{stderr}");
    assert!(hint[0].contains("recorded 2 traces"), "{}", hint[0]);
    assert!(hint[0].contains(&ids["root"].0), "{}", hint[0]);
    assert!(hint[0].contains(&ids["detached"].0), "{}", hint[0]);
    assert!(hint[0].contains("wasi-observe traces"), "{}", hint[0]);

    // One trace: the line names it and the command that shows it.
    let out = output(cli(&db), &["run", EXIT_CODE_COMPONENT]);
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.contains("recorded trace"))
        .expect("a hint line");
    let short = line.rsplit("wasi-observe trace ").next().unwrap().trim();
    let trace = json(&db, &["trace", short, "--json"]);
    let names: Vec<&str> = trace["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains(&"exiting"));
    let _ = std::fs::remove_dir_all(db.parent().unwrap());
}

#[test]
fn traces_lists_filters_and_prints_json() {
    let db = temp_db("traces");
    let (ids, _) = record_features(&db);
    let text = stdout(&db, &["traces"]);
    assert!(!text.contains('\x1b'), "no colour when piped: {text:?}");
    assert!(text.lines().next().unwrap().contains("ROOT"));
    let root_line = text
        .lines()
        .find(|l| l.ends_with(" root"))
        .expect("the root trace");
    assert!(root_line.contains(&ids["root"].0[..12]));
    assert!(root_line.contains("tracer_features"));
    let cols: Vec<&str> = root_line.split_whitespace().collect();
    // TRACE DATE TIME DURATION SPANS ERRORS SERVICE ROOT
    assert_eq!((cols[4], cols[5]), ("4", "1"), "{root_line}");
    assert!(text.lines().any(|l| l.ends_with(" detached")));

    let list = json(&db, &["traces", "--json"]);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    let root = list.iter().find(|t| t["root_name"] == "root").unwrap();
    assert_eq!(root["trace_id"], ids["root"].0.as_str());
    assert_eq!(root["span_count"], 4);
    assert_eq!(root["error_count"], 1);
    assert_eq!(root["service"], "tracer_features");
    assert!(root["start_ns"].as_i64().unwrap() == 1_700_000_000_000_000_000);
    assert!(root["duration_ns"].as_i64().unwrap() > 0);

    let count = |args: &[&str]| {
        let mut all = vec!["traces", "--json"];
        all.extend_from_slice(args);
        json(&db, &all).as_array().unwrap().len()
    };
    assert_eq!(count(&["--errors"]), 1);
    assert_eq!(count(&["--search", "detach"]), 1);
    assert_eq!(count(&["--name", "grandchild-renamed"]), 1);
    assert_eq!(count(&["--service", "tracer_features"]), 2);
    assert_eq!(count(&["--service", "nope"]), 0);
    assert_eq!(count(&["--min-duration", "1h"]), 1);
    assert_eq!(count(&["-n", "1"]), 1);
    assert!(stdout(&db, &["traces", "--service", "nope"]).contains("no traces match"));
    let _ = std::fs::remove_dir_all(db.parent().unwrap());
}

#[test]
fn trace_shows_a_waterfall_with_logs_attributes_and_events() {
    let db = temp_db("trace");
    let (ids, _) = record_features(&db);
    let trace_id = &ids["root"].0;
    let text = stdout(&db, &["trace", &trace_id[..8], "--attributes", "--events"]);
    assert!(!text.contains('\x1b'));
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].contains(trace_id)
            && lines[0].contains("4 spans")
            && lines[0].contains("1 with errors")
    );
    let pos = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("`{needle}` in\n{text}"))
    };
    // Lines are `M name...` where M is the one-character status mark.
    let indent = |i: usize| {
        let rest: String = lines[i].chars().skip(2).collect();
        rest.len() - rest.trim_start().len()
    };
    let (root, child, grandchild, dropped) = (
        pos(" root "),
        pos(" child "),
        pos("grandchild-renamed"),
        pos(" dropped "),
    );
    assert!(root < child && child < grandchild && grandchild < dropped);
    assert!(indent(child) > indent(root) && indent(grandchild) > indent(child));
    assert_eq!(
        indent(dropped),
        indent(grandchild),
        "dropped is child's child too"
    );
    // Bars, status, kind.
    assert!(lines[root].contains('█') && lines[root].contains("server"));
    assert!(lines[grandchild].starts_with('✗') && lines[grandchild].contains("it broke"));
    assert!(lines[child].starts_with('✓'));
    // The logs emitted in `child`, in time order, under it.
    let warn = pos("a warn message");
    assert!(child < warn && warn < grandchild);
    assert!(pos("a trace message") < pos("a critical message"));
    assert!(lines[warn].contains("WARN") && lines[warn].contains("[ctx.warn]"));
    // On request: attributes, events, links.
    assert!(pos("late \"yes\"") > root && pos("late \"yes\"") < child);
    assert!(text.contains("str-array [\"a\",\"b\"]"));
    assert!(lines[pos("event")].contains("explicit-time") && text.contains("n=7"));
    assert!(
        text.contains("link 4bf92f3577b34da6a3ce929d0e0e4736 00f067aa0ba902b7 link-attr=\"start\"")
    );
    // Without the flags, no details.
    let plain = stdout(&db, &["trace", trace_id]);
    assert!(!plain.contains("late \"yes\"") && !plain.contains("explicit-time"));
    assert!(plain.contains("a warn message"));

    let full = json(&db, &["trace", trace_id, "--json"]);
    assert_eq!(full["trace_id"], trace_id.as_str());
    assert_eq!(full["spans"].as_array().unwrap().len(), 4);
    assert_eq!(full["logs"].as_array().unwrap().len(), 7);
    let gc = full["spans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "grandchild-renamed")
        .unwrap();
    assert_eq!(gc["status_code"], "error");
    assert_eq!(gc["status_message"], "it broke");
    assert_eq!(gc["kind"], "producer");
    assert_eq!(gc["links"][0]["attributes"]["link-attr"], "start");

    let out = output(cli(&db), &["trace", "ffffffffffff"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no trace `ffffffffffff`"));
    let _ = std::fs::remove_dir_all(db.parent().unwrap());
}

#[test]
fn logs_filter_by_level_service_and_trace() {
    let db = temp_db("logs");
    let (ids, _) = record_features(&db);
    let all = stdout(&db, &["logs"]);
    assert_eq!(all.lines().count(), 8, "{all}");
    assert!(
        all.lines()
            .last()
            .unwrap()
            .contains("after every span ended")
    );
    let errors = stdout(&db, &["logs", "--level", "error"]);
    let lines: Vec<&str> = errors.lines().collect();
    assert_eq!(lines.len(), 2, "{errors}");
    assert!(lines[0].contains("ERROR") && lines[0].contains("an error message"));
    assert!(lines[1].contains("CRITICAL"));
    let in_trace = json(&db, &["logs", "--trace", &ids["root"].0[..10], "--json"]);
    assert_eq!(in_trace.as_array().unwrap().len(), 7);
    assert!(
        in_trace
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["trace_id"] == ids["root"].0.as_str())
    );
    let warn = &in_trace
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["severity_text"] == "WARN")
        .unwrap();
    assert_eq!(warn["severity_number"], 13);
    assert_eq!(warn["span_id"], ids["child"].1.as_str());
    assert_eq!(
        json(&db, &["logs", "--service", "other", "--json"]),
        serde_json::json!([])
    );
    assert_eq!(
        json(&db, &["logs", "--search", "DEBUG msg", "--json"]),
        serde_json::json!([])
    );
    assert_eq!(
        json(&db, &["logs", "--search", "debug mess", "--json"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let out = output(cli(&db), &["logs", "--level", "loud"]);
    assert!(!out.status.success());
    let _ = std::fs::remove_dir_all(db.parent().unwrap());
}

/// A log record's fields follow its message in `logs` and in `trace`, as
/// `tracing`'s own formatter prints them.
#[test]
fn log_views_show_a_records_fields() {
    let db = temp_db("fields");
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let out = output(cli(&db), &["run", SDK_FEATURES_COMPONENT, traceparent]);
    assert!(out.status.success());
    let logs = stdout(&db, &["logs"]);
    let line = logs
        .lines()
        .find(|l| l.contains("logged in"))
        .unwrap_or_else(|| panic!("{logs}"));
    assert!(
        line.contains("logged in ") && line.contains("user=\"ada\"") && line.contains("retries=2"),
        "{line}"
    );
    let noisy = json(
        &db,
        &["logs", "--search", "event with a noisy field", "--json"],
    );
    let trace_id = noisy[0]["trace_id"].as_str().expect("a trace id");
    let text = stdout(&db, &["trace", trace_id]);
    assert!(
        text.lines()
            .any(|l| l.contains("◆") && l.contains("event with a noisy field noisy=\"noisy\"")),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(db.parent().unwrap());
}

#[test]
fn metrics_show_the_current_value_of_each_series() {
    let db = temp_db("metrics");
    record_features(&db);
    let text = stdout(&db, &["metrics"]);
    let line = |name: &str, attrs: &str| {
        text.lines()
            .find(|l| l.starts_with(name) && l.contains(attrs))
            .unwrap_or_else(|| panic!("{name} {attrs} in\n{text}"))
            .to_string()
    };
    assert!(line("requests", "route=\"/a\"").ends_with("7 {request}"));
    assert!(line("requests", "route=\"/b\"").ends_with("10 {request}"));
    assert!(line("queue.depth", "-").ends_with(" 3"));
    assert!(line("temperature", "-").ends_with(" 42"));
    assert!(line("latency", "-").contains("count=4 sum=138 ms min=1 max=100"));
    let points = json(&db, &["metrics", "--name", "latency", "--json"]);
    let p = &points[0];
    assert_eq!(
        (p["kind"].as_str(), p["count"].as_i64()),
        (Some("histogram"), Some(4))
    );
    assert_eq!(p["buckets"]["bounds"], serde_json::json!([5.0, 10.0, 50.0]));
    assert_eq!(p["buckets"]["counts"], serde_json::json!([1, 1, 1, 1]));
    let _ = std::fs::remove_dir_all(db.parent().unwrap());
}

#[test]
fn colour_only_on_a_terminal_and_never_under_no_color() {
    // `script` gives the command a terminal.
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("SKIPPED: `script` (util-linux) is not installed, no terminal to test colour on");
        return;
    }
    let db = temp_db("colour");
    record_features(&db);
    let on_tty = |no_color: bool| {
        let line = format!("{} traces", env!("CARGO_BIN_EXE_wasi-observe"));
        let mut cmd = Command::new("script");
        for (k, v) in cli(&db).get_envs() {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        if no_color {
            cmd.env("NO_COLOR", "1");
        }
        let out = output(cmd, &["-qec", &line, "/dev/null"]);
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    assert!(on_tty(false).contains("\x1b[1m"));
    let plain = on_tty(true);
    assert!(
        plain.contains("ROOT") && !plain.contains('\x1b'),
        "{plain:?}"
    );
    let _ = std::fs::remove_dir_all(db.parent().unwrap());
}

#[test]
fn store_and_otlp_run_together() {
    let db = temp_db("both");
    let receiver = OtlpHttpReceiver::start();
    let mut cmd = cli(&db);
    cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf");
    let out = output(
        cmd,
        &["run", "--exporter", "otlp,store", TRACER_FEATURES_COMPONENT],
    );
    assert!(out.status.success());
    assert_eq!(receiver.spans().len(), 5);
    assert_eq!(receiver.logs().len(), 8);
    let list = json(&db, &["traces", "--json"]);
    let spans: i64 = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["span_count"].as_i64().unwrap())
        .sum();
    assert_eq!(spans, 5);

    // With an endpoint and no exporter named, only OTLP is used.
    let db2 = temp_db("otlp-only");
    let mut cmd = cli(&db2);
    cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf");
    assert!(output(cmd, &["run", EXIT_CODE_COMPONENT]).status.code() == Some(3));
    assert!(!db2.exists());
    let _ = std::fs::remove_dir_all(db.parent().unwrap());
    let _ = std::fs::remove_dir_all(db2.parent().unwrap());
}

#[test]
fn foreign_store_files_are_refused_and_left_untouched() {
    let db = temp_db("foreign");
    let bytes: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    std::fs::write(&db, &bytes).unwrap();
    for args in [
        vec!["run", EXIT_CODE_COMPONENT],
        vec!["traces"],
        vec!["logs"],
        vec!["ui", "--addr", "127.0.0.1:0"],
    ] {
        let out = output(cli(&db), &args);
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("is not a wasi-observe telemetry store"),
            "{stderr}"
        );
        assert!(stderr.contains("left untouched"), "{stderr}");
    }
    assert_eq!(std::fs::read(&db).unwrap(), bytes);

    let missing = temp_db("missing");
    let out = output(cli(&missing), &["traces"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no telemetry store at"));
    assert!(!missing.exists());
    let _ = std::fs::remove_dir_all(db.parent().unwrap());
    let _ = std::fs::remove_dir_all(missing.parent().unwrap());
}

#[test]
fn a_full_store_drops_with_a_counted_warning_and_the_guest_runs_on() {
    let db = temp_db("full");
    let mut cmd = cli(&db);
    cmd.env("WASI_OBSERVE_DB_HARD_MAX_SIZE", "256KiB");
    let out = output(cmd, &["run", BURST_COMPONENT, "20000"]);
    assert!(out.status.success(), "the guest ran to the end");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "emitted 20001");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let warnings = stderr.lines().filter(|l| l.contains("is full")).count();
    assert_eq!(warnings, 1, "warned once: {stderr}");
    let dropped = stderr
        .lines()
        .find(|l| l.contains("dropped") && l.contains("spans,"))
        .expect("a count at exit");
    let n: u64 = dropped
        .split("dropped ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(n > 0);
    assert!(
        stderr.contains(&format!("spans_export_failed={n}")),
        "{stderr}"
    );
    // What was written before it filled up is readable.
    let stored: i64 = json(&db, &["traces", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["span_count"].as_i64().unwrap())
        .sum();
    assert_eq!(stored as u64 + n, 20_001);
    let _ = std::fs::remove_dir_all(db.parent().unwrap());
}
