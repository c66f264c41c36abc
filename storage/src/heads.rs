//! The heads of recently written paths, kept in memory.
//!
//! Every write the state machine applies needs the head of its path's
//! latest version (its number, whether it is a deletion, the bytes it
//! holds) to number the new version and count the agent's quota. Read from
//! RocksDB that is a search of the memtable and of every level's files
//! under it, on every member, for every write: on a follower the largest
//! single cost of an apply. A path written recently is found here instead.
//!
//! Only commits fill it, after their write: what it holds is always the
//! head of a committed latest version. A snapshot install clears it. It
//! keeps the heads of the paths written last, within
//! [`MAX_CACHED_HEAD_BYTES`].

use hashlink::LruCache;

use crate::tables::Head;

/// What the heads may take of memory, counted as each path's bytes plus
/// [`HEAD_OVERHEAD_BYTES`]: about 70,000 paths of 20 bytes.
pub(crate) const MAX_CACHED_HEAD_BYTES: usize = 8 << 20;
/// What one kept head costs besides its path's bytes: its entry (the head,
/// the path's pointer and the cache's links: 56 bytes), the rounding of
/// the path's allocation, and the table's slot with its spare room.
const HEAD_OVERHEAD_BYTES: usize = 96;

pub(crate) struct Heads {
    heads: LruCache<Box<str>, Head>,
    bytes: usize,
    max_bytes: usize,
}

impl Heads {
    pub(crate) fn new(max_bytes: usize) -> Heads {
        Heads { heads: LruCache::new_unbounded(), bytes: 0, max_bytes }
    }

    /// The head of `path`'s latest version, if kept.
    pub(crate) fn get(&mut self, path: &str) -> Option<Head> {
        self.heads.get(path).copied()
    }

    /// Keeps the heads a commit just wrote, in the order it wrote them
    /// (a later one of the same path wins), dropping the least recently
    /// used beyond the limit.
    pub(crate) fn committed(&mut self, written: Vec<(Box<str>, Head)>) {
        for (path, head) in written {
            let cost = path.len() + HEAD_OVERHEAD_BYTES;
            if self.heads.insert(path, head).is_none() {
                self.bytes += cost;
            }
        }
        while self.bytes > self.max_bytes {
            let Some((path, _)) = self.heads.remove_lru() else { break };
            self.bytes -= path.len() + HEAD_OVERHEAD_BYTES;
        }
    }

    pub(crate) fn clear(&mut self) {
        self.heads.clear();
        self.bytes = 0;
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.heads.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(version: u64) -> Head {
        Head { version, deleted: false, stored_bytes: 10 }
    }

    fn path(n: usize) -> Box<str> {
        format!("agent-a/{n:04}").into()
    }

    #[test]
    fn the_last_write_of_a_path_wins_and_the_least_recently_used_go_first() {
        let cost = path(0).len() + HEAD_OVERHEAD_BYTES;
        let mut heads = Heads::new(3 * cost);
        heads.committed(vec![(path(0), head(1)), (path(1), head(1)), (path(0), head(2))]);
        assert_eq!(heads.get(&path(0)), Some(head(2)));
        // Path 1 is now the least recently used: a third and a fourth path
        // leave room for only three.
        heads.committed(vec![(path(2), head(1)), (path(3), head(1))]);
        assert_eq!(heads.len(), 3);
        assert_eq!(heads.get(&path(1)), None);
        assert_eq!(heads.get(&path(0)), Some(head(2)));
        heads.clear();
        assert_eq!(heads.get(&path(0)), None);
        heads.committed((0..100).map(|n| (path(n), head(1))).collect());
        assert_eq!(heads.len(), 3, "the limit holds after a clear");
    }
}
