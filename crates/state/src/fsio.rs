//! Durable, private file operations: owner-only modes, fsync of files and of the directories
//! that name them, atomic replacement.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use crate::error::{io_error, StateError};

/// How old a temporary file must be before a reader removes it. A writer is seconds away from
/// renaming its file; one that is older died (or its host did).
pub(crate) const TEMP_GRACE: Duration = Duration::from_secs(15 * 60);

/// A name no other writer uses: `.<name>.<pid>-<n>.tmp` (a leading dot, so listings skip it).
pub(crate) fn temp_name(name: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!(".{name}.{}-{n}.tmp", std::process::id())
}

pub(crate) fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".tmp")
}

/// Creates a directory (and its parents) readable by the owner only; tightens it if it exists.
/// The parent of each directory that was missing is synced: a new directory's name is an entry
/// in its parent, and until that is synced a crash can take the directory, and the synced state
/// files in it, away.
pub(crate) fn private_dir(dir: &Path) -> Result<(), StateError> {
    let mut missing = Vec::new();
    let mut d = dir;
    while !d.as_os_str().is_empty() && !d.is_dir() {
        missing.push(d);
        d = d.parent().unwrap_or(Path::new(""));
    }
    make_private_dir(dir)?;
    for m in missing.iter().rev() {
        match m.parent() {
            Some(p) if !p.as_os_str().is_empty() => sync_dir(p)?,
            // A relative path's first component is in the working directory.
            _ => sync_dir(Path::new("."))?,
        }
    }
    Ok(())
}

fn make_private_dir(dir: &Path) -> Result<(), StateError> {
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        b.mode(0o700);
        b.create(dir).map_err(io_error("create directory", dir))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(io_error("restrict permissions of", dir))?;
    }
    #[cfg(not(unix))]
    b.create(dir).map_err(io_error("create directory", dir))?;
    Ok(())
}

/// Creates a new file readable by the owner only; fails if it exists.
pub(crate) fn create_private(path: &Path) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path)
}

/// Opens a lock file readable by the owner only, making it if it is missing (never truncated:
/// its content does not matter, only the `flock` on it).
pub(crate) fn open_lock_file(path: &Path) -> Result<File, StateError> {
    let mut o = OpenOptions::new();
    o.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path).map_err(io_error("open", path))
}

/// Writes `bytes` to a new private file and makes its content durable.
pub(crate) fn write_durable(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let mut f = create_private(path).map_err(io_error("create", path))?;
    f.write_all(bytes).map_err(io_error("write", path))?;
    f.sync_all().map_err(io_error("sync", path))
}

/// Makes the names in `dir` durable (a rename is only durable once its directory is synced).
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StateError> {
    #[cfg(unix)]
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("sync directory", dir))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Replaces `dir/name` with `bytes` atomically: a reader sees the old or the new content.
pub(crate) fn replace_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StateError> {
    let tmp = dir.join(temp_name(name));
    let path = dir.join(name);
    if let Err(e) = write_durable(&tmp, bytes) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    if let Err(e) = fs::rename(&tmp, &path) {
        let _ = fs::remove_file(&tmp);
        return Err(io_error("rename into place", path)(e));
    }
    sync_dir(dir)
}

/// The whole file, or `None` when it does not exist.
pub(crate) fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, StateError> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error("read", path)(e)),
    }
}

/// Removes a file; one already gone is fine (another reader may have removed it).
pub(crate) fn remove(path: &Path) -> Result<(), StateError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error("remove", path)(e)),
    }
}

/// Removes the temporary files in `dir` older than [`TEMP_GRACE`]: leftovers of writers that
/// died between creating and renaming them. Younger ones may belong to a live writer.
pub(crate) fn remove_stale_temps(dir: &Path) -> Result<usize, StateError> {
    let now = SystemTime::now();
    let mut removed = 0;
    for entry in fs::read_dir(dir).map_err(io_error("list", dir))? {
        let entry = entry.map_err(io_error("list", dir))?;
        let name = entry.file_name();
        if !name.to_str().is_some_and(is_temp_name) {
            continue;
        }
        let modified = match entry.metadata().and_then(|m| m.modified()) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_error("inspect", entry.path())(e)),
        };
        if now
            .duration_since(modified)
            .is_ok_and(|age| age >= TEMP_GRACE)
        {
            remove(&entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}
