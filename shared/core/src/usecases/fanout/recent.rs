//! The run's recent frames, as the messages a subscriber is sent, kept until persistence has
//! them and beyond that within a byte bound. A subscriber catches up from here first, and from
//! the store only for frames older than this holds — and those are always stored, since a frame
//! leaves this memory only once persistence has confirmed it.

use std::collections::VecDeque;
use std::sync::Arc;

/// One frame, ready to post (all its parts).
#[derive(Clone)]
pub(super) struct Recent {
    pub seq: u64,
    pub bytes: usize,
    pub messages: Arc<Vec<String>>,
}

/// What the memory holds of the frames after a cursor.
pub(super) enum Held {
    /// All of them (possibly none).
    All(Vec<Recent>),
    /// Not the next one: it is older than what is held, and stored.
    Older,
    /// This memory did not see the run's frames (its executor is not the one that ran it): the
    /// store is the only source.
    Unknown,
}

pub(super) struct RecentFrames {
    /// Saw every frame of the run as it was published.
    complete: bool,
    frames: VecDeque<Recent>,
    bytes: usize,
    /// Bytes kept once persistence has caught up; unconfirmed frames are kept whatever their size.
    cap: usize,
    /// Persistence has every frame up to here.
    stored_through: u64,
    /// The last frame let go of.
    evicted_through: u64,
}

impl RecentFrames {
    /// The memory of a run this executor publishes from its first frame.
    pub fn new(cap: usize) -> Self {
        Self { complete: true, frames: VecDeque::new(), bytes: 0, cap, stored_through: 0, evicted_through: 0 }
    }

    /// A frame just published (frames come in `seq` order, without gaps).
    pub fn push(&mut self, recent: Recent) {
        self.bytes += recent.bytes;
        self.frames.push_back(recent);
        self.evict();
    }

    /// Persistence has every frame through `seq`.
    pub fn stored(&mut self, seq: u64) {
        self.stored_through = self.stored_through.max(seq);
        self.evict();
    }

    fn evict(&mut self) {
        while self.bytes > self.cap
            && let Some(front) = self.frames.front()
            && front.seq <= self.stored_through
        {
            self.bytes -= front.bytes;
            self.evicted_through = front.seq;
            self.frames.pop_front();
        }
    }

    /// What this memory holds of the frames after `cursor`.
    pub fn after(&self, cursor: u64) -> Held {
        if !self.complete {
            return Held::Unknown;
        }
        match self.frames.front() {
            Some(front) if front.seq <= cursor + 1 => {
                Held::All(self.frames.iter().filter(|r| r.seq > cursor).cloned().collect())
            }
            Some(_) => Held::Older,
            None if self.evicted_through > cursor => Held::Older,
            None => Held::All(Vec::new()),
        }
    }
}

impl Default for RecentFrames {
    /// The memory of a run this executor did not run: it knows none of its frames.
    fn default() -> Self {
        Self { complete: false, ..Self::new(0) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: u64, bytes: usize) -> Recent {
        Recent { seq, bytes, messages: Arc::new(vec![format!("frame {seq}")]) }
    }

    fn seqs(found: Held) -> Option<Vec<u64>> {
        match found {
            Held::All(frames) => Some(frames.iter().map(|r| r.seq).collect()),
            Held::Older => None,
            Held::Unknown => panic!("a memory that saw the run knows"),
        }
    }

    #[test]
    fn unconfirmed_frames_stay_whatever_their_size_and_confirmed_ones_go_past_the_bound() {
        let mut recent = RecentFrames::new(10);
        for seq in 1..=5 {
            recent.push(frame(seq, 4));
        }
        assert_eq!(seqs(recent.after(0)), Some(vec![1, 2, 3, 4, 5]), "nothing stored yet: all kept");
        recent.stored(3);
        assert_eq!(seqs(recent.after(0)), None, "1 to 3 went (stored, over the bound): the store has them");
        assert_eq!(seqs(recent.after(3)), Some(vec![4, 5]), "what is newer is still here");
        recent.stored(5);
        assert_eq!(seqs(recent.after(3)), Some(vec![4, 5]), "within the bound, confirmed frames stay");
        assert_eq!(seqs(recent.after(5)), Some(vec![]), "caught up");
    }

    #[test]
    fn an_empty_memory_knows_whether_anything_was_missed() {
        let mut recent = RecentFrames::new(0);
        assert_eq!(seqs(recent.after(0)), Some(vec![]), "nothing published yet");
        recent.push(frame(1, 1));
        recent.stored(1);
        assert_eq!(seqs(recent.after(0)), None, "frame 1 is in the store only");
        assert_eq!(seqs(recent.after(1)), Some(vec![]), "caught up");
    }

    #[test]
    fn the_memory_of_a_run_it_did_not_see_sends_everyone_to_the_store() {
        assert!(matches!(RecentFrames::default().after(0), Held::Unknown));
    }
}
