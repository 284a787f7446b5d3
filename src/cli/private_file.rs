//! Files that hold secrets (`--state-out`): always a new file, never an existing one.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rand::RngCore;

/// Attempts at a free temporary name before giving up (a name is 64 random bits).
const ATTEMPTS: usize = 8;

/// Writes `text` to a new file with mode 0600 in `path`'s directory, then renames it over
/// `path`. Opening an existing path would write through a symlink or a hard link, and keep
/// the old file's mode (a refresh token in a world-readable file); `create_new` (O_CREAT |
/// O_EXCL) never opens an existing name nor follows a link, and the rename replaces the
/// name `path`, not what it pointed at.
pub fn write_new(path: &Path, text: &str) -> std::io::Result<()> {
    let (temp, mut file) = create_temp(path)?;
    let written = file
        .write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&temp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written?;
    // The rename is durable once the directory is; a failure here loses nothing written.
    if let Ok(dir) = std::fs::File::open(directory(path)) {
        let _ = dir.sync_all();
    }
    Ok(())
}

fn directory(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn create_temp(path: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name"))?;
    let mut last = None;
    for _ in 0..ATTEMPTS {
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(name);
        temp_name.push(format!(".{:016x}.tmp", rand::rng().next_u64()));
        let temp = directory(path).join(temp_name);
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
        {
            Ok(file) => return Ok((temp, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.expect("at least one attempt"))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use super::*;

    struct Dir(PathBuf);

    impl Dir {
        fn new(label: &str) -> Dir {
            let path = std::env::temp_dir().join(format!(
                "token-rotator-private-{label}-{}-{:x}",
                std::process::id(),
                rand::rng().next_u64()
            ));
            std::fs::create_dir(&path).unwrap();
            Dir(path)
        }

        fn names(&self) -> Vec<String> {
            let mut names: Vec<String> = std::fs::read_dir(&self.0)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    }

    #[test]
    fn an_existing_world_readable_file_is_replaced_not_written_through() {
        let dir = Dir::new("existing");
        let path = dir.0.join("state.yaml");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let other_name = dir.0.join("other-name");
        std::fs::hard_link(&path, &other_name).unwrap();
        let inode = std::fs::metadata(&path).unwrap().ino();

        write_new(&path, "secret").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "secret");
        assert_eq!(mode(&path), 0o600);
        assert_ne!(std::fs::metadata(&path).unwrap().ino(), inode);
        assert_eq!(std::fs::read_to_string(&other_name).unwrap(), "old");
        assert_eq!(mode(&other_name), 0o644);
        assert_eq!(dir.names(), ["other-name", "state.yaml"]);
    }

    #[test]
    fn a_symlink_at_the_destination_is_replaced_and_its_target_untouched() {
        let dir = Dir::new("symlink");
        let victim = dir.0.join("victim");
        std::fs::write(&victim, "victim").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
        let path = dir.0.join("state.yaml");
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        // A dangling link too: following it would create the file it names.
        let dangling = dir.0.join("dangling.yaml");
        std::os::unix::fs::symlink(dir.0.join("created-through-link"), &dangling).unwrap();

        write_new(&path, "secret").unwrap();
        write_new(&dangling, "secret").unwrap();
        for p in [&path, &dangling] {
            assert!(std::fs::symlink_metadata(p).unwrap().file_type().is_file());
            assert_eq!(mode(p), 0o600);
            assert_eq!(std::fs::read_to_string(p).unwrap(), "secret");
        }
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "victim");
        assert_eq!(mode(&victim), 0o644);
        assert_eq!(dir.names(), ["dangling.yaml", "state.yaml", "victim"]);
    }

    #[test]
    fn a_failed_write_leaves_the_destination_and_no_temporary_file() {
        let dir = Dir::new("failed");
        // A directory at the destination: the rename fails, and the old entry stays.
        let path = dir.0.join("state.yaml");
        std::fs::create_dir(&path).unwrap();
        assert!(write_new(&path, "secret").is_err());
        assert!(path.is_dir());
        assert_eq!(dir.names(), ["state.yaml"]);
        // A directory that does not exist: nothing is created anywhere.
        assert!(write_new(&dir.0.join("missing/state.yaml"), "secret").is_err());
        assert_eq!(dir.names(), ["state.yaml"]);
    }
}
