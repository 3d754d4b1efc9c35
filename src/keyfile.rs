//! Files that hold secret keys (the generated TLS key, the invitation key): readable and
//! writable by their owner only. Mode 0600 is set whenever the server writes such a file, and
//! whenever it reuses one that group or others may access, so a key left readable by a copy, a
//! restore or an old version is closed off at the next start rather than kept as it was (a
//! stricter mode, such as 0400, is left alone).

use std::fs::{File, OpenOptions, Permissions};
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

/// Mode of every key file.
pub const KEY_MODE: u32 = 0o600;

/// Writes `data` to `path`, replacing what was there, and leaves the file at [`KEY_MODE`] (the
/// mode of a file that already existed included).
pub fn write(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(KEY_MODE)
        .open(path)?;
    if file.metadata()?.permissions().mode() & 0o777 != KEY_MODE {
        file.set_permissions(Permissions::from_mode(KEY_MODE))?;
    }
    file.write_all(data)
}

/// Sets the key file at `path` to [`KEY_MODE`] when group or others may access it.
pub fn restrict_to_owner(path: &Path) -> std::io::Result<()> {
    let file = File::open(path)?;
    if file.metadata()?.permissions().mode() & 0o077 != 0 {
        file.set_permissions(Permissions::from_mode(KEY_MODE))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path)
            .expect("exists")
            .permissions()
            .mode()
            & 0o777
    }

    #[test]
    fn a_key_written_over_a_readable_file_ends_up_owner_only() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("key.pem");
        std::fs::write(&path, "old").expect("write");
        std::fs::set_permissions(&path, Permissions::from_mode(0o644)).expect("chmod");
        write(&path, b"new").expect("written");
        assert_eq!(mode(&path), 0o600);
        assert_eq!(std::fs::read(&path).expect("read"), b"new");
    }

    #[test]
    fn a_reused_key_is_made_owner_only() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("key.pem");
        std::fs::write(&path, "k").expect("write");
        std::fs::set_permissions(&path, Permissions::from_mode(0o664)).expect("chmod");
        restrict_to_owner(&path).expect("restricted");
        assert_eq!(mode(&path), 0o600);
        std::fs::set_permissions(&path, Permissions::from_mode(0o400)).expect("chmod");
        restrict_to_owner(&path).expect("nothing to do");
        assert_eq!(mode(&path), 0o400, "a stricter mode stays");
    }
}
