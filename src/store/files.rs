//! File modes of what opsdeck keeps on disk: the data directory is created 0700 and the SQLite
//! database, its WAL and shared-memory files and every backup 0600, since they hold password
//! hashes, sealed secrets and customer data. Unix only; elsewhere these are plain creations.
//!
//! The modes are set on the files themselves rather than through the process umask, which is
//! one value for the whole process (and for tests running beside each other in one). SQLite
//! creates `-wal` and `-shm` with the mode of the database file they belong to, so a database
//! created 0600 keeps every later WAL and shared-memory file 0600 without further help. Files
//! left by an older release (0644) are tightened each time the store is opened; an existing
//! data directory is not changed, only reported, since it was chosen by the operator and may
//! hold other things.

use std::path::{Path, PathBuf};

/// Owner read and write only.
#[cfg(unix)]
const PRIVATE_FILE: u32 = 0o600;
/// Owner only.
#[cfg(unix)]
const PRIVATE_DIR: u32 = 0o700;

/// Creates `dir` and any missing parents with mode 0700. An existing directory is left as it
/// is, with a warning when others may enter it.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let existed = dir.is_dir();
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(PRIVATE_DIR);
    }
    builder.create(dir)?;
    #[cfg(unix)]
    if existed {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir)?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                dir = %dir.display(),
                mode = format!("{:o}", mode & 0o777),
                "the data directory is open to other users; its database files are 0600, \
                 but consider chmod 700 on the directory"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = existed;
    Ok(())
}

/// The files SQLite keeps for the database at `db`: itself, its WAL and its shared memory.
fn sqlite_files(db: &Path) -> [PathBuf; 3] {
    let with = |suffix: &str| {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    [db.to_path_buf(), with("-wal"), with("-shm")]
}

/// Before SQLite opens `db`: creates it empty with mode 0600 when it is missing and `create`
/// is set (SQLite takes an empty file as an empty database, and gives the WAL and
/// shared-memory files it creates later the database's mode), and takes group and other
/// permissions away from the database, WAL and shared-memory files that already exist.
pub fn prepare_sqlite(db: &Path, create: bool) -> std::io::Result<()> {
    if create && !db.exists() {
        match create_private_file(db) {
            Ok(()) => {}
            // Another process (a tool beside `serve`) created it first: tightened below.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    for file in sqlite_files(db) {
        tighten(&file)?;
    }
    Ok(())
}

/// Creates `file`, which must not exist yet, empty with mode 0600.
pub fn create_private_file(file: &Path) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(PRIVATE_FILE);
    }
    opts.open(file).map(drop)
}

/// Takes group and other permissions away from `file`, if it exists.
#[cfg(unix)]
fn tighten(file: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = match std::fs::metadata(file) {
        Ok(meta) => meta.permissions().mode(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if mode & 0o077 != 0 {
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode & 0o700))?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn tighten(_file: &Path) -> std::io::Result<()> {
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn new_files_are_private_and_old_ones_are_tightened() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        create_private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&tmp.path().join("a")), 0o700, "parents too");

        let db = dir.join("opsdeck.db");
        prepare_sqlite(&db, true).unwrap();
        assert_eq!(mode(&db), 0o600);
        assert_eq!(std::fs::metadata(&db).unwrap().len(), 0);

        // An older release's files: world-readable, tightened at the next open.
        let wal = dir.join("opsdeck.db-wal");
        std::fs::write(&wal, b"").unwrap();
        for f in [&db, &wal] {
            std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        prepare_sqlite(&db, false).unwrap();
        assert_eq!((mode(&db), mode(&wal)), (0o600, 0o600));

        // A missing file is not created unless asked.
        let other = dir.join("other.db");
        prepare_sqlite(&other, false).unwrap();
        assert!(!other.exists());
        assert!(
            create_private_file(&db).is_err(),
            "never over an existing file"
        );
    }
}
