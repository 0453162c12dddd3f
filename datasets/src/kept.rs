//! Bytes of objects read ahead of their use, so that they are not fetched
//! twice. A csv file's record boundaries need its quote state, so the
//! splitter scans an object from its start; it keeps what it read here,
//! and the splits it finds are read from here rather than fetched again:
//! the object's bytes cross the network once.
//!
//! Bounded: past [`CAP`] bytes the oldest windows go (their splits are
//! fetched again, as without this), and a window goes once every byte of
//! it has been taken. A split is taken once; a second read of it (a
//! retry, a backup, an error's location) fetches it.

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;
use object_store::path::Path as Key;

/// Bytes kept at most: far more than a run's splits in flight at the
/// default chunk size, and a bound whatever the concurrency.
pub(crate) const CAP: u64 = 256 << 20;

/// The windows kept, oldest first.
#[derive(Default)]
pub(crate) struct Kept {
    windows: Mutex<Windows>,
}

#[derive(Default)]
struct Windows {
    list: VecDeque<Window>,
    bytes: u64,
}

/// Bytes `[start, start + bytes.len())` of one object.
struct Window {
    /// The object: its store's address and its key.
    object: (usize, Key),
    start: u64,
    bytes: Bytes,
    /// Bytes of it taken so far.
    taken: u64,
}

impl Window {
    fn end(&self) -> u64 {
        self.start + self.bytes.len() as u64
    }
}

impl std::fmt::Debug for Kept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let w = self.windows.lock().expect("not poisoned");
        write!(f, "Kept({} windows, {} bytes)", w.list.len(), w.bytes)
    }
}

impl Kept {
    /// Keeps `bytes`, read at `start` of `object`.
    pub(crate) fn keep(&self, object: (usize, Key), start: u64, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        let mut w = self.windows.lock().expect("not poisoned");
        w.bytes += bytes.len() as u64;
        w.list.push_back(Window { object, start, bytes, taken: 0 });
        while w.bytes > CAP {
            let Some(old) = w.list.pop_front() else { break };
            w.bytes -= old.bytes.len() as u64;
        }
    }

    /// Bytes `[offset, offset + len)` of `object`, with up to `more` bytes
    /// after them where they are kept too, if all of the first `len` are
    /// kept; they are taken (a window goes once all of it is taken).
    pub(crate) fn take(&self, object: &(usize, Key), offset: u64, len: u64, more: u64) -> Option<Bytes> {
        if len == 0 {
            return None;
        }
        let mut w = self.windows.lock().expect("not poisoned");
        // The windows of the object from the one holding `offset` on, each
        // starting where the one before ends.
        let first = w.list.iter().position(|x| x.object == *object && x.start <= offset && offset < x.end())?;
        let mut run = vec![first];
        let mut end = w.list[first].end();
        let want = offset + len;
        for (i, x) in w.list.iter().enumerate().skip(first + 1) {
            if end >= want + more {
                break;
            }
            if x.object == *object && x.start == end {
                run.push(i);
                end = x.end();
            }
        }
        if end < want {
            return None;
        }
        let stop = end.min(want + more);
        let out = if run.len() == 1 {
            let x = &w.list[first];
            x.bytes.slice((offset - x.start) as usize..(stop - x.start) as usize)
        } else {
            let mut v = Vec::with_capacity((stop - offset) as usize);
            for &i in &run {
                let x = &w.list[i];
                let (a, b) = (offset.max(x.start), stop.min(x.end()));
                if a < b {
                    v.extend_from_slice(&x.bytes[(a - x.start) as usize..(b - x.start) as usize]);
                }
            }
            Bytes::from(v)
        };
        for &i in &run {
            let x = &mut w.list[i];
            let (a, b) = (offset.max(x.start), stop.min(x.end()));
            x.taken += b.saturating_sub(a);
        }
        let mut gone = 0;
        w.list.retain(|x| {
            let done = x.taken >= x.bytes.len() as u64;
            if done {
                gone += x.bytes.len() as u64;
            }
            !done
        });
        w.bytes -= gone;
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(n: usize) -> (usize, Key) {
        (n, Key::from("k"))
    }

    #[test]
    fn splits_are_taken_across_windows_and_windows_go_once_taken() {
        let kept = Kept::default();
        let data: Vec<u8> = (0..=255).collect();
        kept.keep(object(1), 0, Bytes::copy_from_slice(&data[..100]));
        kept.keep(object(2), 0, Bytes::copy_from_slice(&data[..50]));
        kept.keep(object(1), 100, Bytes::copy_from_slice(&data[100..256]));
        // Across the first two windows of object 1 (the other object's in
        // between is not one of them).
        assert_eq!(kept.take(&object(1), 90, 20, 0).unwrap(), &data[90..110]);
        // Not all kept: nothing.
        assert!(kept.take(&object(1), 250, 10, 0).is_none());
        assert!(kept.take(&object(3), 0, 1, 0).is_none());
        // With more after it, as far as kept.
        assert_eq!(kept.take(&object(1), 0, 10, 1000).unwrap(), &data[0..256]);
        // Everything of object 1 was taken: its windows are gone.
        assert!(kept.take(&object(1), 0, 1, 0).is_none());
        assert_eq!(kept.take(&object(2), 10, 5, 0).unwrap(), &data[10..15]);
    }

    #[test]
    fn the_oldest_go_past_the_cap() {
        let kept = Kept::default();
        let mb = Bytes::from(vec![7u8; 1 << 20]);
        for i in 0..(CAP >> 20) + 2 {
            kept.keep(object(1), i << 20, mb.clone());
        }
        assert!(kept.take(&object(1), 0, 1, 0).is_none(), "the first went");
        assert!(kept.take(&object(1), 2 << 20, 1, 0).is_some());
        assert!(kept.windows.lock().unwrap().bytes <= CAP);
    }
}
