//! `wasi:otel@0.2.0-rc.2` guests under `run`, through the real binary.

use std::collections::HashMap;

use test_programs_artifacts::*;

use crate::support::{cli, cli_http, run};

/// A wasi:otel guest under `run`: its spans (parented, typed, the open one
/// ended with an error) and its aggregated metrics (a histogram with its
/// buckets) arrive through a real exporter, and `run` records it into the
/// store by default.
#[test]
fn wasi_otel_guests_run_unchanged() {
    let dir = std::env::temp_dir().join(format!("wasi-observe-otel-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("otel.jsonl");
    let _ = std::fs::remove_file(&file);
    let out = run(
        cli(),
        &[
            "--exporter",
            &format!("jsonl:{}", file.display()),
            OTEL_WIT_COMPONENT,
        ],
    );
    assert!(out.status.success());
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let spans: Vec<&serde_json::Value> = lines
        .iter()
        .filter_map(|l| l.get("resourceSpans"))
        .flat_map(|rs| rs.as_array().unwrap())
        .flat_map(|rs| rs["scopeSpans"].as_array().unwrap())
        .flat_map(|ss| ss["spans"].as_array().unwrap())
        .collect();
    let by_name: HashMap<&str, &serde_json::Value> = spans
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), *s))
        .collect();
    assert_eq!(by_name["child"]["parentSpanId"], "b7ad6b7169203331");
    let unended = by_name["wasi:otel span (never ended)"];
    assert_eq!(unended["status"]["code"], 2, "{unended}");
    let metrics: Vec<&serde_json::Value> = lines
        .iter()
        .filter_map(|l| l.get("resourceMetrics"))
        .flat_map(|rm| rm.as_array().unwrap())
        .flat_map(|rm| rm["scopeMetrics"].as_array().unwrap())
        .flat_map(|sm| sm["metrics"].as_array().unwrap())
        .collect();
    let latency = metrics.iter().find(|m| m["name"] == "latency").unwrap();
    let point = &latency["histogram"]["dataPoints"][0];
    assert_eq!(point["explicitBounds"], serde_json::json!([1.0, 5.0, 10.0]));
    assert_eq!(point["bucketCounts"].as_array().unwrap().len(), 4);

    // The default exporter: the store, which names the trace it recorded
    // (the guest's own trace id: no TRACEPARENT here).
    let db = dir.join("telemetry.db");
    let mut cmd = cli();
    cmd.env("WASI_OBSERVE_DB", &db).env_remove("TRACEPARENT");
    let out = run(cmd, &[OTEL_WIT_COMPONENT]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("recorded") && stderr.contains("0af7651916cd"),
        "{stderr}"
    );
    // The store keeps the guest's histogram as the guest aggregated it.
    let store = wasi_observe_store::Store::open_existing(&db).unwrap();
    let points = store
        .metrics(&wasi_observe_store::MetricFilter {
            name: Some("latency".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(points.len(), 1, "{points:#?}");
    assert_eq!(points[0].kind, "histogram");
    assert_eq!(points[0].count, Some(6));
    assert_eq!(points[0].value, 40.0);
    // Only the guest's inconsistent histogram point is lost (on purpose);
    // before the store took guest metrics, every point was.
    assert!(stderr.contains("measurements_dropped=1\n"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The guest's aggregated metrics reach an OTLP collector as it aggregated
/// them (a histogram with its own buckets), beside its spans, configured by
/// the standard variables only.
#[test]
fn wasi_otel_metrics_reach_an_otlp_collector_losslessly() {
    let receiver = otlp_receiver::OtlpHttpReceiver::start();
    let out = run(cli_http(&receiver), &[OTEL_WIT_COMPONENT]);
    assert!(out.status.success());
    let latency = receiver
        .wait_for_metric("latency", crate::support::WAIT)
        .expect("the guest's histogram");
    // The inconsistent second point was dropped by the host.
    let points = latency.histogram_points();
    assert_eq!(points.len(), 1);
    assert_eq!(points[0].explicit_bounds, [1.0, 5.0, 10.0]);
    assert_eq!(points[0].bucket_counts, [1, 2, 0, 3]);
    assert_eq!(points[0].count, 6);
    assert_eq!(points[0].sum, Some(40.0));
    let spans = receiver.spans();
    assert!(spans.iter().any(|s| s.name == "child"), "{spans:#?}");
}

/// The same over gRPC (`OTEL_EXPORTER_OTLP_PROTOCOL=grpc`): the guest's
/// histogram reaches a gRPC collector with its own buckets.
#[test]
fn wasi_otel_metrics_reach_a_grpc_collector_losslessly() {
    use otlp_receiver::GrpcCollector;
    let collector = GrpcCollector::start();
    let mut cmd = cli();
    cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint())
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc");
    let out = run(cmd, &[OTEL_WIT_COMPONENT]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        collector.wait_for_metric("latency", crate::support::WAIT),
        "{:?}",
        collector.metric_names()
    );
    let latency = collector
        .metrics()
        .into_iter()
        .flat_map(|m| m.metrics)
        .find(|m| m.name == "latency")
        .unwrap();
    let latency = serde_json::to_value(&latency).unwrap();
    let points = latency["data"]["Histogram"]["data_points"]
        .as_array()
        .unwrap_or_else(|| panic!("not a histogram: {latency}"));
    assert_eq!(points.len(), 1);
    assert_eq!(
        points[0]["explicit_bounds"],
        serde_json::json!([1.0, 5.0, 10.0])
    );
    assert_eq!(points[0]["bucket_counts"], serde_json::json!([1, 2, 0, 3]));
    assert_eq!(points[0]["count"], 6);
    let spans = collector.wait_for_spans_where(
        |s| s.iter().any(|s| s.name == "child"),
        crate::support::WAIT,
    );
    assert!(spans.iter().any(|s| s.name == "child"));
}
