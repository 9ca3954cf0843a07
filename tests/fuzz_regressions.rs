//! Replays the committed fuzz inputs (the seed corpora in `fuzz/corpus/<target>/` and
//! every crash input kept in `fuzz/regressions/<target>/`) through the same check the
//! fuzz target runs (`fulcrum::fuzzing`), on stable, without libFuzzer.

use std::path::{Path, PathBuf};

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    files
}

/// Runs every input of `target`; fails naming each input whose check panicked.
fn replay(target: &str) {
    let (_, check) = fulcrum::fuzzing::TARGETS
        .into_iter()
        .find(|(name, _)| *name == target)
        .unwrap_or_else(|| panic!("no check named {target}"));
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let corpus = inputs(&fuzz.join("corpus").join(target));
    assert!(!corpus.is_empty(), "fuzz/corpus/{target}/ has no seeds");
    let regressions = inputs(&fuzz.join("regressions").join(target));
    let mut failed = Vec::new();
    for path in corpus.iter().chain(&regressions) {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if std::panic::catch_unwind(|| check(&data)).is_err() {
            failed.push(path.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{target}: failing inputs:\n{}",
        failed.join("\n")
    );
}

#[test]
fn every_target_is_replayed_here() {
    let mut names: Vec<&str> = fulcrum::fuzzing::TARGETS.iter().map(|(n, _)| *n).collect();
    names.sort_unstable();
    let mut on_disk: Vec<String> =
        inputs(&Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/fuzz_targets"))
            .iter()
            .filter_map(|p| Some(p.file_stem()?.to_str()?.to_owned()))
            .collect();
    on_disk.sort_unstable();
    assert_eq!(
        names, on_disk,
        "fuzz/fuzz_targets/ and fulcrum::fuzzing::TARGETS differ"
    );
}

#[test]
fn request_head() {
    replay("request_head");
}

#[test]
fn response_head() {
    replay("response_head");
}

#[test]
fn chunked() {
    replay("chunked");
}

#[test]
fn proxy_v2() {
    replay("proxy_v2");
}

#[test]
fn pattern() {
    replay("pattern");
}

#[test]
fn rule_table() {
    replay("rule_table");
}

#[test]
fn config() {
    replay("config");
}
