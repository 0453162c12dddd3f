//! The simulation's clock: its events in (time, sequence) order, and the
//! hash of its task table.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

/// Something that happens at a simulated time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Event {
    /// A slot's run ends (if its epoch is still current).
    End {
        /// The slot.
        slot: usize,
        /// Its epoch when the run started.
        epoch: u64,
    },
    /// A slot is ready for the next task.
    Ready {
        /// The slot.
        slot: usize,
    },
    /// A straggler may be due for a backup.
    Check,
}

/// The pending events. Ends and checks wait in a heap; slots become ready
/// in time order (now, or a fixed gap after now), so they wait in queues,
/// which halves the heap's work.
#[derive(Default)]
pub(super) struct Events {
    heap: BinaryHeap<Reverse<(u64, u64, Event)>>,
    /// Slots ready now, and after the hand-off gap: (time, sequence).
    ready: [VecDeque<(u64, u64, Event)>; 2],
    seq: u64,
}

impl Events {
    /// Schedules `e` at `at` (`now` being the simulation's time).
    pub(super) fn push(&mut self, at: u64, now: u64, e: Event) {
        self.seq += 1;
        match e {
            Event::Ready { .. } if at == now => self.ready[0].push_back((at, self.seq, e)),
            Event::Ready { .. } => self.ready[1].push_back((at, self.seq, e)),
            _ => self.heap.push(Reverse((at, self.seq, e))),
        }
    }

    /// The next event, in (time, sequence) order.
    pub(super) fn pop(&mut self) -> Option<(u64, Event)> {
        let mut which = None;
        let mut best = (u64::MAX, u64::MAX);
        if let Some(Reverse((at, seq, _))) = self.heap.peek() {
            (best, which) = ((*at, *seq), Some(0));
        }
        for (i, q) in self.ready.iter().enumerate() {
            if let Some(&(at, seq, _)) = q.front()
                && (which.is_none() || (at, seq) < best)
            {
                (best, which) = ((at, seq), Some(i + 1));
            }
        }
        let (at, _, e) = match which? {
            0 => self.heap.pop().expect("peeked").0,
            i => self.ready[i - 1].pop_front().expect("peeked"),
        };
        Some((at, e))
    }
}

/// Hashes task ids (a multiply: they are dense integers, and SipHash
/// was a tenth of a sweep's time).
#[derive(Default, Clone, Copy)]
pub(super) struct TaskHash;

impl std::hash::BuildHasher for TaskHash {
    type Hasher = TaskHasher;

    fn build_hasher(&self) -> TaskHasher {
        TaskHasher(0)
    }
}

/// The hasher [`TaskHash`] builds.
#[derive(Default)]
pub(super) struct TaskHasher(u64);

impl std::hash::Hasher for TaskHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0 ^ v).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}
