//! The alert rules (deploy/prometheus/alerts.yml) parse and behave as their unit tests
//! (alerts.test.yml) say, checked with Prometheus' own `promtool` (Debian package
//! `prometheus`; scripts/test.sh installs it). That every metric they use is one the
//! gateway exports is checked against the registry in src/telemetry/metrics.rs.

use std::path::Path;
use std::process::Command;

fn promtool(args: &[&str]) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus");
    let output = Command::new("promtool")
        .args(args)
        .current_dir(&dir)
        .output()
        .unwrap_or_else(|err| {
            panic!("cannot run promtool ({err}); install the Debian package `prometheus`")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn the_alert_rules_parse() {
    let text = promtool(&["check", "rules", "alerts.yml"]);
    assert!(text.contains("SUCCESS"), "{text}");
}

#[test]
fn the_alert_rules_pass_their_unit_tests() {
    let text = promtool(&["test", "rules", "alerts.test.yml"]);
    assert!(text.contains("SUCCESS"), "{text}");
}

#[test]
fn every_alert_has_a_summary_a_description_and_a_runbook_entry() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let rules = std::fs::read_to_string(root.join("deploy/prometheus/alerts.yml")).expect("rules");
    let readme = std::fs::read_to_string(root.join("README.md")).expect("readme");
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(alerts.len() >= 15, "{alerts:?}");
    for (n, block) in rules.split("- alert: ").skip(1).enumerate() {
        let name = alerts[n];
        assert!(block.contains("summary:"), "{name} has no summary");
        assert!(block.contains("description:"), "{name} has no description");
        assert!(
            readme.contains(&format!("`{name}`")),
            "{name} has no runbook line in README.md"
        );
    }
}
