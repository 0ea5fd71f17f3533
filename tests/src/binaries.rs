//! Where the project's binaries are: beside the running executable (target/<profile>/), or
//! in `OUTBOX_BIN_DIR`.

use std::path::PathBuf;

pub fn path(name: &str) -> anyhow::Result<PathBuf> {
    let dir = match std::env::var_os("OUTBOX_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let exe = std::env::current_exe()?;
            let mut dir = exe.parent().map(PathBuf::from).unwrap_or_default();
            // Test executables live in target/<profile>/deps.
            if dir.ends_with("deps") {
                dir.pop();
            }
            dir
        }
    };
    let bin = dir.join(name);
    anyhow::ensure!(
        bin.exists(),
        "{} is missing: build the binaries first (cargo build --workspace --bins)",
        bin.display()
    );
    Ok(bin)
}
