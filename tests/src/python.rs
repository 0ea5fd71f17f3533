//! The project's Python: the virtual environment `scripts/bootstrap` makes (`.venv` at the
//! workspace root), never the system's — a stock Debian or Ubuntu refuses pip installs there.
//! `OUTBOX_PYTHON` names another interpreter (one that has moto and cfn-lint).

use std::path::PathBuf;

pub fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("OUTBOX_PYTHON") {
        return PathBuf::from(python);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("python3")
}
