//! Compatibility with the official Azure SDKs, each run against a real `trestle dev` (three durable
//! replicas) on OS-chosen ports:
//! - `tests/compat/python`: `azure-data-tables`, the current Python SDK (the full suite);
//! - `tests/compat/python-legacy`: `azure-cosmosdb-table`, the legacy Python SDK (smoke test and the
//!   issue-11 behaviours: relative `$batch` part paths, foreign ETags, filters);
//! - `tests/compat/js`: `@azure/data-tables` on Node (smoke test and the issue-11 behaviours: 413 seen
//!   by a client that writes its whole body first, CORS, `x-ms-version`).
//!
//! The environments come from `scripts/python-venv.sh` (virtualenvs `.venv`, `.venv-legacy`, and
//! `tests/compat/js/node_modules` from its lock file), which `scripts/test.sh` runs first.

use std::path::{Path, PathBuf};
use std::process::Command;

use trestle_testkit::process::DevProcess;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The development account's connection string for a running `trestle dev`.
fn connection_string(dev: &DevProcess) -> String {
    let account = "devstoreaccount1";
    let key =
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
    format!(
        "DefaultEndpointsProtocol=http;AccountName={account};AccountKey={key};TableEndpoint={}/{account};",
        dev.rest
    )
}

/// Runs one pytest suite with the interpreter of `venv` against a fresh `trestle dev`.
fn pytest_suite_passes(venv: &str, suite: &str) {
    let root = repo_root();
    let python = root.join(venv).join("bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run scripts/python-venv.sh (scripts/test.sh does)",
        python.display()
    );
    let data = tempfile::tempdir().unwrap();
    let dev = DevProcess::start(data.path()).unwrap();
    let out = Command::new(&python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(root.join(suite))
        .env("TRESTLE_CONN_STR", connection_string(&dev))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the {suite} suite failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("passed"), "pytest ran tests: {stdout}");
}

#[test]
fn t01_python_azure_data_tables_suite_passes_against_trestle_dev() {
    pytest_suite_passes(".venv", "tests/compat/python");
}

#[test]
fn t02_legacy_python_azure_cosmosdb_table_suite_passes_against_trestle_dev() {
    pytest_suite_passes(".venv-legacy", "tests/compat/python-legacy");
}

#[test]
fn t03_javascript_data_tables_suite_passes_against_trestle_dev() {
    let suite = repo_root().join("tests/compat/js");
    assert!(
        Path::new(&suite.join("node_modules/@azure/data-tables")).is_dir(),
        "{} has no node_modules: run scripts/python-venv.sh (scripts/test.sh does)",
        suite.display()
    );
    let data = tempfile::tempdir().unwrap();
    let dev = DevProcess::start(data.path()).unwrap();
    let out = Command::new("node")
        .args(["--test", "--test-reporter=spec"])
        .current_dir(&suite)
        .env("TRESTLE_CONN_STR", connection_string(&dev))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the JavaScript SDK suite failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("pass"), "node ran tests: {stdout}");
}
