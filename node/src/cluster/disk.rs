//! Free space on the data disk. Each node keeps `min_free_disk_mb` free
//! and says in its adverts how much it has; while this node's disk, or any
//! member's, is below its reserve, writes are refused on every node, as
//! etcd's NOSPACE alarm does: a follower whose disk filled up could no
//! longer append, nor a leader commit. Reads go on. Writes resume by
//! themselves once space is freed (at the next advert, within a second of
//! the change on the node itself).

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use super::service::{Cluster, ServiceError};

/// Bytes free for this process on the filesystem holding `dir`.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    let stats = rustix::fs::statvfs(dir).ok()?;
    Some(stats.f_bavail.saturating_mul(stats.f_frsize))
}

/// How long a verdict on the disks stands before writes look again: the
/// check reads the filesystem, the membership and every advert, too much to
/// do for each write.
const VERDICT_KEPT: Duration = Duration::from_millis(250);

/// Why writes are refused now, if they are, and when that was found.
pub(super) type DiskVerdict = std::sync::Mutex<Option<(Instant, Option<String>)>>;

fn low_disk(who: &str, free: u64, reserve: u64) -> String {
    format!(
        "{who} has {} MiB free on its data disk, below the {} MiB it keeps free: writes are refused on every node until space is freed there",
        free >> 20,
        reserve >> 20
    )
}

impl Cluster {
    /// Bytes free on this node's data disk (`None` if it cannot be read).
    pub fn free_disk_bytes(&self) -> Option<u64> {
        free_bytes(&self.data_dir)
    }

    /// Whether this node's data disk is below its reserve.
    pub fn disk_low(&self) -> bool {
        self.free_disk_bytes().is_some_and(|free| free < self.min_free_disk)
    }

    /// Refuses a write while this node's data disk, or any member's (as its
    /// latest advert says), is below its reserve ([`VERDICT_KEPT`] old at most).
    pub(super) fn check_disk(&self) -> Result<(), ServiceError> {
        let mut verdict = self.disk_verdict.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let refusal = match &*verdict {
            Some((found, refusal)) if found.elapsed() < VERDICT_KEPT => refusal.clone(),
            _ => {
                let refusal = self.disk_refusal();
                *verdict = Some((Instant::now(), refusal.clone()));
                refusal
            }
        };
        refusal.map_or(Ok(()), |reason| Err(ServiceError::Unavailable(reason)))
    }

    fn disk_refusal(&self) -> Option<String> {
        if let Some(free) = self.free_disk_bytes().filter(|free| *free < self.min_free_disk) {
            return Some(low_disk("this node", free, self.min_free_disk));
        }
        // Only members count: any peer of an open mesh can publish an advert.
        let members: HashSet<String> = self
            .consensus
            .members()
            .values()
            .filter_map(|info| info.p2p_addr.rsplit_once("/p2p/").map(|(_, peer)| peer.to_owned()))
            .collect();
        for known in self.mesh.adverts() {
            let advert = known.advert;
            let Some(free) = advert.free_disk_bytes else { continue };
            if free < advert.min_free_disk_bytes && members.contains(&advert.peer_id) {
                let who = format!("node {} ({})", advert.node_id, advert.peer_id);
                return Some(low_disk(&who, free, advert.min_free_disk_bytes));
            }
        }
        None
    }
}
