//! The web UI end to end, in a real browser: a store filled by running the
//! feature guest, `wasi-observe ui` on a free port, and headless Chromium
//! driven over the DevTools protocol with real mouse clicks: trace list ->
//! trace -> span detail, then logs and metrics. Screenshots are kept in
//! `target/tmp/ui-test/` (`CARGO_TARGET_TMPDIR`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use headless_chrome::protocol::cdp::Page::CaptureScreenshotFormatOption;
use headless_chrome::{Browser, LaunchOptions, Tab};
use test_programs_artifacts::*;

/// The browser: `$CHROME`, else Debian's `chromium` (or the usual names).
fn find_chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CHROME").filter(|p| !p.is_empty()) {
        return Some(p.into());
    }
    let path = std::env::var_os("PATH")?;
    for name in ["chromium", "chromium-browser", "google-chrome", "chrome"] {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

fn cli(db: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wasi-observe"));
    for (k, _) in std::env::vars() {
        if k.starts_with("OTEL_") || k.starts_with("WASI_OBSERVE_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("WASI_OBSERVE_DB", db)
        .env("XDG_DATA_HOME", db.parent().unwrap());
    cmd
}

/// Kills the server when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn text_of(tab: &Tab, selector: &str) -> String {
    tab.wait_for_element(selector)
        .unwrap_or_else(|e| panic!("{selector}: {e}"))
        .get_inner_text()
        .unwrap()
}

fn screenshot(tab: &Tab, dir: &Path, name: &str) {
    let png = tab
        .capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true)
        .unwrap();
    let path = dir.join(name);
    std::fs::write(&path, png).unwrap();
    eprintln!("screenshot: {}", path.display());
}

#[test]
fn browse_traces_spans_logs_and_metrics_in_chromium() {
    let Some(chromium) = find_chromium() else {
        eprintln!();
        eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
        eprintln!("!!! SKIPPED: the web UI browser test needs Chromium, and none was found.");
        eprintln!(
            "!!! Install it with `apt-get install -y chromium` (.ci/run does) or set CHROME."
        );
        eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
        return;
    };
    let work = std::env::temp_dir().join(format!("wasi-observe-ui-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let db = work.join("telemetry.db");
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-test");
    std::fs::create_dir_all(&shots).unwrap();

    // Fill the store.
    let out = cli(&db)
        .args(["run", TRACER_FEATURES_COMPONENT])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    let ids = |name: &str| -> (String, String) {
        let line = printed
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap();
        let mut it = line.split_whitespace().skip(1);
        (it.next().unwrap().into(), it.next().unwrap().into())
    };
    let (trace_id, _) = ids("root");
    let (_, grandchild_id) = ids("grandchild");

    // Serve it on a free port; the first line says where.
    let mut child = cli(&db)
        .args(["ui", "--addr", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let _server = Server(child);
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("http://127.0.0.1:"))
        .unwrap_or_else(|| panic!("no URL in {first:?}"))
        .to_string();

    let profile = work.join("chromium-profile");
    let args: Vec<&std::ffi::OsStr> = [
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ]
    .iter()
    .map(std::ffi::OsStr::new)
    .collect();
    let browser = Browser::new(
        LaunchOptions::default_builder()
            .path(Some(chromium))
            .headless(true)
            .sandbox(false)
            .window_size(Some((1400, 900)))
            .user_data_dir(Some(profile))
            .args(args)
            .idle_browser_timeout(Duration::from_secs(120))
            .build()
            .unwrap(),
    )
    .expect("starting chromium");
    let tab = browser.new_tab().unwrap();
    tab.set_default_timeout(Duration::from_secs(20));

    // The trace list.
    tab.navigate_to(&url)
        .unwrap()
        .wait_until_navigated()
        .unwrap();
    tab.wait_for_element("#trace-list tr.trace-row").unwrap();
    let rows = tab.find_elements("#trace-list tr.trace-row").unwrap();
    assert_eq!(rows.len(), 2);
    let list = text_of(&tab, "#trace-list");
    assert!(list.contains("root") && list.contains("detached"), "{list}");
    assert!(list.contains("tracer_features"));
    assert!(text_of(&tab, "#store-info").contains("2 traces"));
    screenshot(&tab, &shots, "01-trace-list.png");

    // Search narrows the list.
    tab.wait_for_element("#f-q").unwrap().click().unwrap();
    tab.type_str("detach").unwrap();
    tab.wait_for_element("#f-submit").unwrap().click().unwrap();
    tab.wait_for_xpath(
        "//tr[contains(@class,'trace-row')]/td[@class='root-name' and text()='detached']",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        tab.find_elements("#trace-list tr.trace-row").unwrap().len(),
        1
    );
    // Errors only: the other one.
    tab.wait_for_element("#f-q").unwrap().click().unwrap();
    tab.press_key("End").unwrap();
    for _ in 0.."detach".len() {
        tab.press_key("Backspace").unwrap();
    }
    tab.wait_for_element("#f-errors").unwrap().click().unwrap();
    tab.wait_for_element("#f-submit").unwrap().click().unwrap();
    tab.wait_for_xpath(
        "//tr[contains(@class,'trace-row')]/td[@class='root-name' and text()='root']",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        tab.find_elements("#trace-list tr.trace-row").unwrap().len(),
        1
    );

    // Click the trace: its waterfall.
    tab.wait_for_element(&format!("tr.trace-row[data-trace-id='{trace_id}']"))
        .unwrap()
        .click()
        .unwrap();
    tab.wait_for_element("#waterfall .span-row").unwrap();
    assert_eq!(text_of(&tab, "#trace-title"), "root");
    assert_eq!(text_of(&tab, "#trace-id"), trace_id);
    let spans: Vec<String> = tab
        .find_elements("#waterfall .span-row .span-name")
        .unwrap()
        .iter()
        .map(|e| {
            e.get_inner_text()
                .unwrap()
                .trim()
                .trim_start_matches(['✓', '✗'])
                .trim()
                .to_string()
        })
        .collect();
    assert_eq!(spans, ["root", "child", "grandchild-renamed", "dropped"]);
    let logs = tab.find_elements("#waterfall .log-row").unwrap();
    assert_eq!(logs.len(), 7, "the trace's logs, in the waterfall");
    assert!(text_of(&tab, "#waterfall").contains("a warn message"));
    assert!(text_of(&tab, "#span-detail").contains("Click a span"));

    // Click a span: its details.
    tab.wait_for_element(&format!(".span-row[data-span-id='{grandchild_id}']"))
        .unwrap()
        .click()
        .unwrap();
    tab.wait_for_element("#detail-name").unwrap();
    assert_eq!(text_of(&tab, "#detail-name"), "grandchild-renamed");
    assert_eq!(text_of(&tab, "#detail-span-id"), grandchild_id);
    let detail = text_of(&tab, "#span-detail");
    assert!(detail.contains("error: it broke"), "{detail}");
    assert!(detail.contains("producer"), "{detail}");
    let links = text_of(&tab, "#detail-links");
    assert!(
        links.contains("4bf92f3577b34da6a3ce929d0e0e4736 / 00f067aa0ba902b7"),
        "{links}"
    );
    assert!(
        links.contains("link-attr") && links.contains("start") && links.contains("added"),
        "{links}"
    );
    screenshot(&tab, &shots, "02-span-detail.png");

    // Another span: attributes, events, correlated logs.
    let child_row = tab
        .wait_for_xpath("//div[contains(@class,'span-row') and @title='child']")
        .unwrap();
    child_row.click().unwrap();
    tab.wait_for_xpath("//h3[@id='detail-name' and text()='child']")
        .unwrap();
    let events = text_of(&tab, "#detail-events");
    assert!(
        events.contains("explicit-time") && events.contains("now"),
        "{events}"
    );
    let logs = text_of(&tab, "#detail-logs");
    assert!(
        logs.contains("a warn message") && logs.contains("a critical message"),
        "{logs}"
    );
    tab.wait_for_xpath("//div[contains(@class,'span-row') and @title='root']")
        .unwrap()
        .click()
        .unwrap();
    tab.wait_for_xpath("//h3[@id='detail-name' and text()='root']")
        .unwrap();
    let attrs = text_of(&tab, "#detail-attributes");
    assert!(
        attrs.contains("late") && attrs.contains("overwritten") && attrs.contains("[1,2,3]"),
        "{attrs}"
    );
    screenshot(&tab, &shots, "03-root-detail.png");

    // Logs.
    tab.wait_for_element("#nav-logs").unwrap().click().unwrap();
    tab.wait_for_element("#log-list tr.log-entry").unwrap();
    assert_eq!(
        tab.find_elements("#log-list tr.log-entry").unwrap().len(),
        8
    );
    assert!(text_of(&tab, "#log-list").contains("a critical message"));
    screenshot(&tab, &shots, "04-logs.png");

    // Metrics: current values, and a chart per instrument.
    tab.wait_for_element("#nav-metrics")
        .unwrap()
        .click()
        .unwrap();
    tab.wait_for_element("#metric-list tr.metric-row").unwrap();
    let metrics = text_of(&tab, "#metric-list");
    assert!(
        metrics.contains("requests") && metrics.contains("route=/a"),
        "{metrics}"
    );
    assert!(metrics.contains("count 4 · sum 138"), "{metrics}");
    tab.wait_for_element("svg.chart-svg[data-metric='requests'] circle")
        .unwrap();
    tab.wait_for_element("svg.chart-svg[data-metric='temperature']")
        .unwrap();
    screenshot(&tab, &shots, "05-metrics.png");

    // A log record's fields follow its message in the waterfall and in the
    // span's details (the SDK guest's `event with a noisy field`).
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let out = cli(&db)
        .args(["run", SDK_FEATURES_COMPONENT, traceparent])
        .output()
        .unwrap();
    assert!(out.status.success());
    let found = cli(&db)
        .args(["logs", "--search", "event with a noisy field", "--json"])
        .output()
        .unwrap();
    let found: serde_json::Value = serde_json::from_slice(&found.stdout).unwrap();
    let noisy_trace = found[0]["trace_id"]
        .as_str()
        .expect("its trace")
        .to_string();
    // The page routes by its hash: no navigation, a hash change.
    tab.evaluate(&format!("location.hash = '#/trace/{noisy_trace}'"), false)
        .unwrap();
    tab.wait_for_xpath(&format!(
        "//span[@id='trace-id' and text()='{noisy_trace}']"
    ))
    .unwrap();
    let waterfall = text_of(&tab, "#waterfall");
    assert!(
        waterfall.contains("event with a noisy field noisy=\"noisy\""),
        "{waterfall}"
    );
    tab.wait_for_xpath("//div[contains(@class,'span-row') and @title='with_noisy_field']")
        .unwrap()
        .click()
        .unwrap();
    tab.wait_for_xpath("//h3[@id='detail-name' and text()='with_noisy_field']")
        .unwrap();
    let logs = text_of(&tab, "#detail-logs");
    assert!(
        logs.contains("event with a noisy field noisy=\"noisy\""),
        "{logs}"
    );
    screenshot(&tab, &shots, "06-log-fields.png");

    let _ = std::fs::remove_dir_all(&work);
}
