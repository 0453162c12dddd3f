//! How a directory source learns that files arrived: inotify where the
//! kernel gives it (a file renamed into the directory, written in place
//! and closed, or linked in, is told at once and in the order it came),
//! else a listing
//! of the directory at every poll. With inotify, the directory is listed
//! once at the start (what was there before the watch) and again only when
//! the kernel's event queue overflowed; a poll costs one read instead of a
//! listing of every file the directory holds.

use std::collections::{HashSet, VecDeque};
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use crate::error::EngineError;

/// The events that say a file is complete in the directory.
fn complete() -> AddWatchFlags {
    AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_CLOSE_WRITE
}

/// A directory's arrivals.
pub(crate) enum Watch {
    /// Told by inotify: the files found, in order, not taken yet, and
    /// whether the directory must be listed again (at the start, or after
    /// the event queue overflowed).
    Told { inotify: Inotify, found: VecDeque<String>, queued: HashSet<String>, list: bool },
    /// Listed at every poll: `why` inotify could not be used.
    Listed { why: String },
}

impl Watch {
    /// Watches `dir` with inotify, else falls back to listing it.
    pub(crate) fn new(dir: &Path) -> Watch {
        let told = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).and_then(|inotify| {
            let mask = complete() | AddWatchFlags::IN_CREATE | AddWatchFlags::IN_ONLYDIR;
            inotify.add_watch(dir, mask).map(|_| inotify)
        });
        match told {
            Ok(inotify) => Watch::Told { inotify, found: VecDeque::new(), queued: HashSet::new(), list: true },
            Err(e) => Watch::Listed { why: format!("inotify: {e}") },
        }
    }

    /// A listing at every poll, without trying inotify (for tests).
    #[cfg(test)]
    pub(crate) fn listed() -> Watch {
        Watch::Listed { why: "asked for".into() }
    }

    /// The first file of `dir` that has arrived and `taken` does not hold
    /// (one that has been read, or is being read), in order of arrival;
    /// it is handed out once.
    pub(crate) fn next(&mut self, dir: &Path, taken: &impl Fn(&str) -> bool) -> Result<Option<String>, EngineError> {
        match self {
            Watch::Listed { .. } => Ok(list(dir, taken)?.into_iter().next()),
            Watch::Told { inotify, found, queued, list: again } => {
                // Events first: a file the listing finds too comes in the
                // order its event says, after those that were there before.
                let mut told = Vec::new();
                loop {
                    match inotify.read_events() {
                        Ok(events) if events.is_empty() => break,
                        Ok(events) => {
                            for e in events {
                                if e.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                                    *again = true;
                                }
                                let Some(name) = e.name.and_then(|n| n.into_string().ok()) else { continue };
                                if e.mask.intersects(complete())
                                    || e.mask.contains(AddWatchFlags::IN_CREATE) && linked(&dir.join(&name))
                                {
                                    told.push(name);
                                }
                            }
                        }
                        Err(nix::errno::Errno::EAGAIN) => break,
                        Err(nix::errno::Errno::EINTR) => continue,
                        Err(e) => return Err(EngineError::io(dir, std::io::Error::from(e))),
                    }
                }
                if std::mem::take(again) {
                    // Those told of come in the order they were told.
                    for name in list(dir, taken)? {
                        if !told.contains(&name) && queued.insert(name.clone()) {
                            found.push_back(name);
                        }
                    }
                }
                for name in told {
                    if !name.starts_with('.') && queued.insert(name.clone()) {
                        found.push_back(name);
                    }
                }
                while let Some(name) = found.pop_front() {
                    queued.remove(&name);
                    // Taken already (a replay's), or gone since it came.
                    if !taken(&name) && dir.join(&name).is_file() {
                        return Ok(Some(name));
                    }
                }
                Ok(None)
            }
        }
    }

    /// Waits up to `d` for a file to arrive (without inotify: `d`).
    pub(crate) fn wait(&self, d: Duration) {
        match self {
            Watch::Told { inotify, found, .. } if found.is_empty() => {
                use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
                let mut fds = [PollFd::new(inotify.as_fd(), PollFlags::POLLIN)];
                let ms = PollTimeout::try_from(d).unwrap_or(PollTimeout::MAX);
                let _ = poll(&mut fds, ms);
            }
            Watch::Told { .. } => {}
            Watch::Listed { .. } => std::thread::sleep(d),
        }
    }

    /// Why arrivals are listed instead of told, when they are.
    pub(crate) fn fallback(&self) -> Option<&str> {
        match self {
            Watch::Listed { why } => Some(why),
            Watch::Told { .. } => None,
        }
    }
}

/// Whether the file made at `path` is a link to one complete already (a
/// hard link, `ln`, or a symbolic one): made so, it is never written,
/// and so never closed after writing.
fn linked(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink() || m.is_file() && m.nlink() > 1)
}

/// The files of `dir` not starting with `.` that `taken` does not hold,
/// the one modified first (to the millisecond, then by name) first.
fn list(dir: &Path, taken: &impl Fn(&str) -> bool) -> Result<Vec<String>, EngineError> {
    let entries = std::fs::read_dir(dir).map_err(|e| EngineError::io(dir, e))?;
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| EngineError::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || taken(&name) {
            continue;
        }
        // A file gone between the listing and now is passed over; a
        // symbolic link is the file it names.
        let Ok(meta) = std::fs::metadata(entry.path()) else { continue };
        if meta.is_file() {
            let modified = meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok());
            found.push((modified.map_or(0, |d| d.as_millis()), name));
        }
    }
    found.sort();
    Ok(found.into_iter().map(|(_, name)| name).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arrive(dir: &Path, name: &str) {
        let tmp = dir.join(format!(".{name}"));
        std::fs::write(&tmp, "x\n").unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }

    fn drain(watch: &mut Watch, dir: &Path, taken: &mut HashSet<String>) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let t = taken.clone();
            match watch.next(dir, &|n: &str| t.contains(n)).unwrap() {
                Some(name) => {
                    taken.insert(name.clone());
                    out.push(name);
                }
                None => return out,
            }
        }
    }

    #[test]
    fn inotify_tells_files_in_the_order_they_were_renamed_in_once_each() {
        let dir = tempfile::tempdir().unwrap();
        arrive(dir.path(), "before");
        let mut watch = Watch::new(dir.path());
        assert_eq!(watch.fallback(), None);
        // Written after the watch: z before a, whatever their names say.
        arrive(dir.path(), "z");
        arrive(dir.path(), "a");
        // Written in place: told once it is closed; a dot file never.
        std::fs::write(dir.path().join("inplace"), "x\n").unwrap();
        std::fs::write(dir.path().join(".hidden"), "x\n").unwrap();
        let mut taken = HashSet::new();
        assert_eq!(drain(&mut watch, dir.path(), &mut taken), ["before", "z", "a", "inplace"]);
        // Nothing twice; a later arrival is told.
        watch.wait(Duration::from_millis(1));
        assert!(drain(&mut watch, dir.path(), &mut taken).is_empty());
        arrive(dir.path(), "later");
        assert_eq!(drain(&mut watch, dir.path(), &mut taken), ["later"]);
        // A link to a complete file is told when it is made; a file
        // created and still open is not, until it is closed.
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::write(elsewhere.path().join("f"), "x\n").unwrap();
        std::fs::hard_link(elsewhere.path().join("f"), dir.path().join("hard")).unwrap();
        std::os::unix::fs::symlink(elsewhere.path().join("f"), dir.path().join("soft")).unwrap();
        let open = std::fs::File::create(dir.path().join("open")).unwrap();
        assert_eq!(drain(&mut watch, dir.path(), &mut taken), ["hard", "soft"]);
        drop(open);
        assert_eq!(drain(&mut watch, dir.path(), &mut taken), ["open"]);
    }

    #[test]
    fn a_listing_takes_the_file_modified_first_and_passes_over_those_taken() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b", "a", ".part"] {
            std::fs::write(dir.path().join(name), "x\n").unwrap();
        }
        let old = std::time::SystemTime::now() - Duration::from_secs(60);
        std::fs::File::options().write(true).open(dir.path().join("b")).unwrap().set_modified(old).unwrap();
        let mut watch = Watch::listed();
        let mut taken = HashSet::new();
        assert_eq!(drain(&mut watch, dir.path(), &mut taken), ["b", "a"]);
    }
}
