//! The newest Raft log entries, kept in memory as they were written.
//!
//! Right after an append, openraft reads the same entries back: on the
//! leader to send them to each follower, on every member to apply them once
//! committed. Served from here, those reads skip a RocksDB iterator and a
//! decode of each entry. The cache always holds the log's last entries,
//! contiguous: an append extends it (or replaces it when it does not follow
//! on), a truncation or purge cuts it, and a read it cannot serve whole goes
//! to RocksDB.

use std::collections::VecDeque;

/// Entries kept at most.
pub(crate) const MAX_RECENT_ENTRIES: usize = 1024;
/// Encoded bytes of the entries kept at most.
pub(crate) const MAX_RECENT_BYTES: usize = 4 * 1024 * 1024;

pub(crate) struct RecentEntries<E> {
    /// Index of the first entry in `entries`.
    first: u64,
    /// Each entry with its encoded size.
    entries: VecDeque<(E, usize)>,
    bytes: usize,
}

impl<E> Default for RecentEntries<E> {
    fn default() -> Self {
        RecentEntries { first: 0, entries: VecDeque::new(), bytes: 0 }
    }
}

impl<E: Clone> RecentEntries<E> {
    /// Records entries `first..` just written to the log, each with its
    /// encoded size. Anything kept from `first` on is replaced.
    pub(crate) fn appended(&mut self, first: u64, written: Vec<(E, usize)>) {
        if written.is_empty() {
            return;
        }
        let next = self.first + self.entries.len() as u64;
        if self.entries.is_empty() || first < self.first || first > next {
            self.clear();
            self.first = first;
        } else {
            self.truncated(first);
        }
        for (entry, size) in written {
            self.bytes += size;
            self.entries.push_back((entry, size));
        }
        while self.entries.len() > MAX_RECENT_ENTRIES || (self.bytes > MAX_RECENT_BYTES && self.entries.len() > 1) {
            self.pop_front();
        }
    }

    /// Entries from `index` on were removed from the log.
    pub(crate) fn truncated(&mut self, index: u64) {
        let keep = index.saturating_sub(self.first).min(self.entries.len() as u64) as usize;
        while self.entries.len() > keep {
            if let Some((_, size)) = self.entries.pop_back() {
                self.bytes -= size;
            }
        }
    }

    /// Entries up to `index` (inclusive) were removed from the log.
    pub(crate) fn purged(&mut self, index: u64) {
        while !self.entries.is_empty() && self.first <= index {
            self.pop_front();
        }
        if self.entries.is_empty() {
            self.clear();
        }
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
        self.first = 0;
    }

    /// Entries `start..end`, if every one of them is kept.
    pub(crate) fn range(&self, start: u64, end: u64) -> Option<Vec<E>> {
        let next = self.first + self.entries.len() as u64;
        if self.entries.is_empty() || start < self.first || end > next || start > end {
            return None;
        }
        let from = (start - self.first) as usize;
        let to = (end - self.first) as usize;
        Some(self.entries.range(from..to).map(|(entry, _)| entry.clone()).collect())
    }

    fn pop_front(&mut self) {
        if let Some((_, size)) = self.entries.pop_front() {
            self.bytes -= size;
            self.first += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(range: std::ops::Range<u64>) -> Vec<(u64, usize)> {
        range.map(|index| (index, 10)).collect()
    }

    #[test]
    fn serves_only_ranges_it_holds_whole() {
        let mut recent = RecentEntries::default();
        assert_eq!(recent.range(1, 2), None, "nothing kept yet");
        recent.appended(5, written(5..9));
        assert_eq!(recent.range(5, 9), Some(vec![5, 6, 7, 8]));
        assert_eq!(recent.range(6, 8), Some(vec![6, 7]));
        assert_eq!(recent.range(7, 7), Some(vec![]));
        assert_eq!(recent.range(4, 9), None, "index 4 is not kept");
        assert_eq!(recent.range(5, 10), None, "index 9 is not written");
    }

    #[test]
    fn an_append_that_overlaps_replaces_the_tail() {
        let mut recent = RecentEntries::default();
        recent.appended(1, written(1..6));
        // A new leader's entries from 4 on replace the old ones.
        recent.appended(4, vec![(40, 10), (50, 10)]);
        assert_eq!(recent.range(1, 6), Some(vec![1, 2, 3, 40, 50]));
        assert_eq!(recent.bytes, 50);
    }

    #[test]
    fn an_append_after_a_gap_starts_over() {
        let mut recent = RecentEntries::default();
        recent.appended(1, written(1..4));
        recent.appended(10, written(10..12));
        assert_eq!(recent.range(1, 4), None);
        assert_eq!(recent.range(10, 12), Some(vec![10, 11]));
    }

    #[test]
    fn truncation_and_purge_cut_what_is_kept() {
        let mut recent = RecentEntries::default();
        recent.appended(1, written(1..11));
        recent.truncated(8);
        assert_eq!(recent.range(1, 9), None, "8 was truncated");
        assert_eq!(recent.range(1, 8).map(|entries| entries.len()), Some(7));
        recent.purged(3);
        assert_eq!(recent.range(3, 8), None, "3 was purged");
        assert_eq!(recent.range(4, 8), Some(vec![4, 5, 6, 7]));
        assert_eq!(recent.bytes, 40);
        recent.purged(100);
        assert_eq!(recent.range(4, 5), None);
        assert_eq!(recent.bytes, 0);
        // Truncating below what is kept empties it.
        recent.appended(20, written(20..25));
        recent.truncated(2);
        assert_eq!(recent.range(20, 21), None);
        assert_eq!(recent.bytes, 0);
    }

    #[test]
    fn stays_within_its_bounds() {
        let mut recent = RecentEntries::default();
        let many = MAX_RECENT_ENTRIES as u64 + 10;
        recent.appended(1, written(1..many + 1));
        assert_eq!(recent.entries.len(), MAX_RECENT_ENTRIES);
        assert_eq!(recent.range(11, many + 1).map(|entries| entries.len()), Some(MAX_RECENT_ENTRIES));
        assert_eq!(recent.range(10, 12), None, "the oldest went first");
        let big = MAX_RECENT_BYTES / 2 + 1;
        recent.appended(many + 1, vec![(0, big), (1, big)]);
        assert_eq!(recent.entries.len(), 1, "two entries over the byte bound: the newer one is kept");
        assert_eq!(recent.bytes, big);
    }
}
