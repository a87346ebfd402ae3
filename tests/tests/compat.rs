//! Compatibility with the official Azure SDKs: the Python `azure-data-tables` suite under
//! `tests/compat/python`, run against a real `trestle dev` (three durable replicas) on OS-chosen ports.
//!
//! The virtualenv comes from `scripts/python-venv.sh`, which `scripts/test.sh` runs first.

use std::path::PathBuf;
use std::process::Command;

use trestle_testkit::process::DevProcess;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn t01_python_azure_data_tables_suite_passes_against_trestle_dev() {
    let root = repo_root();
    let python = root.join(".venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run scripts/python-venv.sh (scripts/test.sh does)",
        python.display()
    );
    let data = tempfile::tempdir().unwrap();
    let dev = DevProcess::start(data.path()).unwrap();
    let account = "devstoreaccount1";
    let key =
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
    let conn = format!(
        "DefaultEndpointsProtocol=http;AccountName={account};AccountKey={key};TableEndpoint={}/{account};",
        dev.rest
    );
    let out = Command::new(&python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(root.join("tests/compat/python"))
        .env("TRESTLE_CONN_STR", conn)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the Azure SDK suite failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("passed"), "pytest ran tests: {stdout}");
}
