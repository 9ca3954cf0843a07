//! `fulcrum check` and `--version`, run as a user runs them: the real binary, real
//! files, exit codes and output lines.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fulcrum(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fulcrum"))
        .args(args)
        .current_dir(root())
        .env_remove("FULCRUM_CONFIG")
        .env_remove("FULCRUM_NODE_NAME")
        .env_remove("FULCRUM_NODE_ZONE")
        .output()
        .expect("run fulcrum")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn shipped_config_passes_with_a_one_line_summary() {
    let out = fulcrum(&["check", "-c", "config/fulcrum.yaml"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(
        stdout.contains("4 listeners, 5 target groups, 5 rules"),
        "{stdout}"
    );
    // --config works as well as -c
    let out = fulcrum(&["check", "--config", "config/fulcrum.yaml"]);
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn demo_config_passes() {
    if Path::new(&root().join("config/demo.yaml")).exists() {
        let out = fulcrum(&["check", "-c", "config/demo.yaml"]);
        assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    }
}

#[test]
fn config_file_from_the_environment() {
    let out = Command::new(env!("CARGO_BIN_EXE_fulcrum"))
        .args(["check"])
        .current_dir(root())
        .env("FULCRUM_CONFIG", "config/fulcrum.yaml")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    // An empty value counts as unset: the default path, not a usage error.
    let out = Command::new(env!("CARGO_BIN_EXE_fulcrum"))
        .args(["check"])
        .current_dir(root())
        .env("FULCRUM_CONFIG", "")
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    if std::path::Path::new("/etc/fulcrum/fulcrum.yaml").exists() {
        assert_ne!(out.status.code(), Some(2), "stderr: {stderr}");
    } else {
        assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
        assert!(stderr.contains("/etc/fulcrum/fulcrum.yaml"), "{stderr}");
    }
}

/// Each fixture lists the errors it must produce as `# expect: LINE:COL: path: message`
/// (the message may be a prefix); check must exit 1 and print exactly those.
#[test]
fn bad_configs_exit_1_with_every_error_at_its_place() {
    let dir = root().join("tests/fixtures/check");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 9, "fixtures missing: {files:?}");
    for file in files {
        let rel = file
            .strip_prefix(root())
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let expects: Vec<String> = std::fs::read_to_string(&file)
            .unwrap()
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .map(|e| format!("{rel}:{e}"))
            .collect();
        assert!(!expects.is_empty(), "{rel} has no # expect: lines");
        let out = fulcrum(&["check", "-c", &rel]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{rel}: {stderr}");
        assert!(out.stdout.is_empty(), "{rel}: stdout {}", text(&out.stdout));
        let lines: Vec<&str> = stderr.lines().collect();
        for want in &expects {
            assert!(
                lines.iter().any(|l| l.starts_with(want.as_str())),
                "{rel}: missing `{want}` in:\n{stderr}"
            );
        }
        assert_eq!(
            lines.len(),
            expects.len(),
            "{rel}: unexpected errors:\n{stderr}"
        );
    }
}

#[test]
fn a_missing_file_is_an_error_not_a_panic() {
    let out = fulcrum(&["check", "-c", "does/not/exist.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("does/not/exist.yaml:1:1: (file): cannot read the config file"),
        "{stderr}"
    );
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(fulcrum(&["check", "--bogus"]).status.code(), Some(2));
    assert_eq!(fulcrum(&["frobnicate"]).status.code(), Some(2));
    assert_eq!(fulcrum(&[]).status.code(), Some(2));
}

#[test]
fn version() {
    let out = fulcrum(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stdout).trim(),
        format!("fulcrum {}", env!("CARGO_PKG_VERSION"))
    );
}
