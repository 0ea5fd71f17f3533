//! libpq's password file: `PGPASSFILE`, else `~/.pgpass`; lines of
//! `hostname:port:database:username:password`, `*` matching anything, `\:` and `\\` escaping.
//!
//! As libpq does, a file that group or others may read is ignored (with a warning that names
//! the file, never its content): a password readable by everyone is not a secret.

use std::path::{Path, PathBuf};

/// The connection a password is looked up for.
pub struct Lookup<'a> {
    pub host: &'a str,
    pub port: u16,
    pub dbname: &'a str,
    pub user: &'a str,
}

/// The password file libpq would read, if there is one.
pub fn default_path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PGPASSFILE") {
        return Some(PathBuf::from(path));
    }
    std::env::var_os("HOME").map(|home| Path::new(&home).join(".pgpass"))
}

/// The first matching password in the file, or `None` (no file, unsafe mode, no match).
pub fn find(path: &Path, want: &Lookup<'_>) -> Option<Vec<u8>> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                file = %path.display(),
                "password file has group or world access; ignoring it (chmod 0600 it)"
            );
            return None;
        }
    }
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|line| matching_password(line, want))
}

fn matching_password(line: &str, want: &Lookup<'_>) -> Option<Vec<u8>> {
    if line.starts_with('#') {
        return None;
    }
    let fields = split_fields(line);
    let [host, port, db, user, password] = fields.as_slice() else {
        return None;
    };
    let port_text = want.port.to_string();
    let matches = |pattern: &str, value: &str| pattern == "*" || pattern == value;
    // libpq matches "localhost" for Unix-socket connections; a socket directory is our host then.
    let host_ok = matches(host, want.host) || (host == "localhost" && want.host.starts_with('/'));
    (host_ok && matches(port, &port_text) && matches(db, want.dbname) && matches(user, want.user))
        .then(|| password.clone().into_bytes())
}

/// Splits on unescaped `:`; `\x` stands for `x`.
fn split_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let (Some(next), Some(f)) = (chars.next(), fields.last_mut()) {
                    f.push(next);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => {
                if let Some(f) = fields.last_mut() {
                    f.push(c);
                }
            }
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    const WANT: Lookup<'static> = Lookup {
        host: "db.example",
        port: 5432,
        dbname: "shop",
        user: "bridge",
    };

    #[test]
    fn matches_fields_and_wildcards() {
        assert_eq!(
            matching_password("db.example:5432:shop:bridge:pw", &WANT),
            Some(b"pw".to_vec())
        );
        assert_eq!(
            matching_password("*:*:*:bridge:any", &WANT),
            Some(b"any".to_vec())
        );
        assert_eq!(matching_password("other:5432:shop:bridge:pw", &WANT), None);
        assert_eq!(matching_password("db.example:5433:shop:bridge:pw", &WANT), None);
        assert_eq!(matching_password("# db.example:5432:shop:bridge:pw", &WANT), None);
    }

    #[test]
    fn unescapes_colons_and_backslashes_in_the_password() {
        assert_eq!(
            matching_password(r"*:*:*:*:a\:b\\c:d", &WANT),
            Some(br"a:b\c:d".to_vec())
        );
    }

    #[test]
    fn ignores_a_file_others_can_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pgpass");
        std::fs::write(&path, "*:*:*:*:pw\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert_eq!(find(&path, &WANT), None);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        assert_eq!(find(&path, &WANT), Some(b"pw".to_vec()));
    }
}
