//! The shipped systemd unit: `systemd-analyze verify` accepts it and
//! `systemd-analyze security` scores it 1.5 or lower (SPEC §11, issue 8).

mod common;

use std::process::Command;

use common::*;

/// The unit with ExecStart/ExecReload pointing at the binary under test, so that
/// `verify` can check the executables exist.
fn unit_for_test(dir: &std::path::Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(repo_root().join("systemd/fulcrum.service")).unwrap();
    let text = text.replace("/usr/local/bin/fulcrum", bin().to_str().unwrap());
    let path = dir.join("fulcrum.service");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn systemd_analyze_verify_is_clean() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_for_test(dir.path());
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("systemd-analyze (Debian package systemd) is needed");
    let err = String::from_utf8_lossy(&out.stderr);
    // Only complaints about this unit count (the host's other units are not ours).
    let ours: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("fulcrum.service"))
        .collect();
    assert!(out.status.success() && ours.is_empty(), "{err}");
}

#[test]
fn systemd_analyze_security_scores_at_most_1_5() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_for_test(dir.path());
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze (Debian package systemd) is needed");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no score in:\n{text}"));
    let score: f64 = line
        .split(':')
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the score: {line}"));
    assert!(score <= 1.5, "exposure {score} > 1.5:\n{text}");
}

#[test]
fn prometheus_rules_and_config_pass_promtool() {
    let dir = repo_root().join("deploy/prometheus");
    for args in [
        vec!["check", "rules", "fulcrum-alerts.yml"],
        vec!["test", "rules", "fulcrum-alerts.test.yml"],
        vec!["check", "config", "prometheus.yml"],
    ] {
        let out = Command::new("promtool")
            .args(&args)
            .current_dir(&dir)
            .output()
            .expect("promtool is missing: run scripts/install-test-deps.sh");
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
