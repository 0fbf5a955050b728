//! Replacing the database file with a backup without ever leaving a half-written file in its
//! place.
//!
//! The backup is copied to a temporary file beside the target and synced (`stage`); only then
//! is the previous file linked to its kept name and the copy renamed over the target, which is
//! atomic (`swap_in`). A copy that fails (a full disk) or a crash before the rename leaves the
//! live file as it was; a crash after it leaves the restored one.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::backup::BackupError;

/// The name the previous database is kept under: `<file name>.before-restore-<ms>` beside it.
pub fn kept_name(target: &Path, now_ms: i64) -> PathBuf {
    sibling(target, &format!("before-restore-{now_ms}"))
}

/// `<file name>.<suffix>` in the target's folder.
fn sibling(target: &Path, suffix: &str) -> PathBuf {
    let mut name = target
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(format!(".{suffix}"));
    target.with_file_name(name)
}

fn io_error(what: &str, path: &Path, e: &io::Error) -> BackupError {
    BackupError::Io(format!("{what} {}: {e}", path.display()))
}

/// Copies `backup` to a new temporary file beside `target` with `copy` and syncs it; returns
/// its path. On any failure the temporary file is removed and `target` was never touched.
pub fn stage(
    backup: &Path,
    target: &Path,
    now_ms: i64,
    copy: impl FnOnce(&mut File, &mut File) -> io::Result<u64>,
) -> Result<PathBuf, BackupError> {
    if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| io_error("cannot create", parent, &e))?;
    }
    let temp = sibling(
        target,
        &format!("restore-{now_ms}-{}.tmp", std::process::id()),
    );
    let mut source = File::open(backup).map_err(|e| io_error("cannot read", backup, &e))?;
    let mut staged = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp)
        .map_err(|e| io_error("cannot create", &temp, &e))?;
    let written = copy(&mut source, &mut staged)
        .and_then(|_| staged.flush())
        .and_then(|()| staged.sync_all());
    drop(staged);
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(io_error(
            "cannot copy the backup to",
            &temp,
            &io::Error::new(e.kind(), format!("{e}; the database was left as it was")),
        ));
    }
    Ok(temp)
}

/// The copy a restore uses: the whole file.
pub fn copy_all(source: &mut File, staged: &mut File) -> io::Result<u64> {
    io::copy(source, staged)
}

/// Puts a staged copy in place of `target`. The previous file, if any, stays under
/// [`kept_name`] (a hard link, so no second copy of it is written); the rename that replaces
/// `target` is atomic. Returns the kept file's path.
pub fn swap_in(staged: &Path, target: &Path, now_ms: i64) -> Result<Option<PathBuf>, BackupError> {
    let kept = if target.exists() {
        let kept = kept_name(target, now_ms);
        if std::fs::hard_link(target, &kept).is_err() {
            // A file system without hard links: a copy, synced, before anything is replaced.
            std::fs::copy(target, &kept)
                .and_then(|_| File::open(&kept)?.sync_all())
                .map_err(|e| {
                    let _ = std::fs::remove_file(staged);
                    io_error("cannot keep the previous database as", &kept, &e)
                })?;
        }
        Some(kept)
    } else {
        None
    };
    std::fs::rename(staged, target).map_err(|e| {
        let _ = std::fs::remove_file(staged);
        io_error("cannot rename the restored copy to", target, &e)
    })?;
    if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
        // The rename is durable once the folder is synced.
        if let Ok(dir) = File::open(parent) {
            let _ = dir.sync_all();
        }
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_copy_that_runs_out_of_space_leaves_the_database_untouched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("tally.redb");
        let backup = dir.path().join("backup.redb");
        std::fs::write(&target, b"the live database").expect("write");
        std::fs::write(&backup, vec![7u8; 64 * 1024]).expect("write");
        let full = stage(&backup, &target, 5, |source, staged| {
            let mut half = vec![0u8; 32 * 1024];
            io::Read::read_exact(source, &mut half)?;
            staged.write_all(&half)?;
            Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "No space left on device",
            ))
        });
        let error = full.expect_err("the copy failed").to_string();
        assert!(error.contains("No space left"), "{error}");
        assert!(error.contains("left as it was"), "{error}");
        assert_eq!(std::fs::read(&target).expect("read"), b"the live database");
        assert_eq!(names(dir.path()), ["backup.redb", "tally.redb"]);
    }

    #[test]
    fn a_restore_swaps_atomically_and_keeps_the_previous_file_by_its_documented_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("tally.redb");
        let backup = dir.path().join("backup.redb");
        std::fs::write(&target, b"old").expect("write");
        std::fs::write(&backup, b"new").expect("write");
        let staged = stage(&backup, &target, 9, copy_all).expect("staged");
        assert_eq!(std::fs::read(&target).expect("read"), b"old");
        let kept = swap_in(&staged, &target, 9).expect("swapped");
        assert_eq!(kept, Some(dir.path().join("tally.redb.before-restore-9")));
        assert_eq!(std::fs::read(&target).expect("read"), b"new");
        assert_eq!(
            std::fs::read(dir.path().join("tally.redb.before-restore-9")).expect("read"),
            b"old"
        );
        assert_eq!(
            names(dir.path()),
            ["backup.redb", "tally.redb", "tally.redb.before-restore-9"]
        );
    }
}
