//! When each member builds its snapshots: every `every` entries, as
//! openraft's own policy would, but at a point of the log of its own.
//!
//! Members apply the same entries, so with one threshold every member would
//! build at the same index, and the builds (and the RocksDB compactions that
//! follow them) would slow all the members of a quorum at once: on a shared
//! or busy machine, every write waits meanwhile. Here the voters, sorted by
//! id, take evenly spaced points of each stretch of `every` entries, so of
//! three voters at most one builds at a time and the other two still commit;
//! non-voting members take evenly spaced points too, starting half a voter's
//! share later. openraft's own policy stays as a backstop at twice the
//! interval ([`crate::RaftSettings`]).

use openraft::StoredMembership;
use tokio::sync::watch;
use zeromesh_protocol::{MemberInfo, NodeId};

use crate::types::LogId;

pub(crate) struct SnapshotSchedule {
    id: NodeId,
    every: u64,
    /// This member's offset, and the membership entry it was worked out
    /// from (`None` before the first apply).
    offset: u64,
    members_from: Option<Option<LogId>>,
    /// Counts the points passed; the node's trigger task asks Raft for a
    /// snapshot each time it moves.
    due: watch::Sender<u64>,
}

impl SnapshotSchedule {
    pub fn new(id: NodeId, every: u64) -> (Self, watch::Receiver<u64>) {
        let (due, receiver) = watch::channel(0);
        (SnapshotSchedule { id, every: every.max(1), offset: 0, members_from: None, due }, receiver)
    }

    /// Entries from `before` (exclusive; `None` when none was applied) to
    /// `after` (inclusive) were just applied, with `members` the cluster's
    /// membership after them.
    pub fn applied(&mut self, before: Option<u64>, after: u64, members: &StoredMembership<NodeId, MemberInfo>) {
        if self.members_from != Some(*members.log_id()) {
            let membership = members.membership();
            self.offset = offset(self.id, membership.voter_ids(), membership.learner_ids(), self.every);
            self.members_from = Some(*members.log_id());
        }
        if passes(before, after, self.offset, self.every) {
            self.due.send_modify(|count| *count += 1);
        }
    }
}

/// How far before each multiple of `every` member `id` builds: the voters
/// sorted by id share each stretch evenly, and so do the learners, half a
/// voter's share later (0 for a node not yet a member).
fn offset(
    id: NodeId,
    voters: impl IntoIterator<Item = NodeId>,
    learners: impl IntoIterator<Item = NodeId>,
    every: u64,
) -> u64 {
    let share = |ids: &[NodeId], of: u128| {
        ids.iter().position(|member| *member == id).map(|rank| rank as u128 * of / ids.len() as u128)
    };
    let (voters, learners) = (sorted(voters), sorted(learners));
    let every = every as u128;
    let offset = match share(&voters, every) {
        Some(offset) => offset,
        None => share(&learners, every).map_or(0, |offset| offset + every / (2 * voters.len().max(1) as u128)),
    };
    (offset % every) as u64
}

fn sorted(ids: impl IntoIterator<Item = NodeId>) -> Vec<NodeId> {
    let mut ids: Vec<NodeId> = ids.into_iter().collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Whether an index `i` with `i + offset` a multiple of `every` lies in
/// `(before, after]`.
fn passes(before: Option<u64>, after: u64, offset: u64, every: u64) -> bool {
    let stretch = |index: u64| (index as u128 + offset as u128) / every as u128;
    // Index 0 itself is no point: nothing is worth a snapshot yet.
    stretch(after) > stretch(before.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voters_sorted_by_id_share_each_stretch_evenly_and_learners_fall_between() {
        let voters = [30, 10, 20];
        assert_eq!(offset(10, voters, [], 900), 0);
        assert_eq!(offset(20, voters, [], 900), 300);
        assert_eq!(offset(30, voters, [], 900), 600);
        assert_eq!(offset(99, voters, [], 900), 0, "a node not yet a member");
        assert_eq!(offset(7, [7], [], 900), 0, "alone");
        // Two learners: at 0 and 450, each shifted by half a voter's 300.
        assert_eq!(offset(5, voters, [40, 5], 900), 150);
        assert_eq!(offset(40, voters, [40, 5], 900), 600);
        assert_eq!(offset(u64::MAX, [1, u64::MAX], [], u64::MAX), u64::MAX / 2, "no overflow");
    }

    /// The indexes at which a member with `offset` is due, applying one
    /// entry at a time from the first.
    fn points(offset: u64, every: u64, last: u64) -> Vec<u64> {
        (1..=last).filter(|index| passes(Some(index - 1), *index, offset, every)).collect()
    }

    #[test]
    fn each_member_is_due_once_per_stretch_at_its_own_point() {
        assert_eq!(points(0, 900, 2000), [900, 1800]);
        assert_eq!(points(300, 900, 2000), [600, 1500]);
        assert_eq!(points(600, 900, 2000), [300, 1200]);
        assert_eq!(points(0, 1, 3), [1, 2, 3]);
    }

    #[test]
    fn a_batch_that_passes_a_point_is_due_once() {
        assert!(passes(Some(250), 350, 600, 900), "300 lies inside");
        assert!(!passes(Some(300), 350, 600, 900), "300 was passed before");
        assert!(passes(Some(10), 5000, 0, 900), "several points at once still count once");
        assert!(!passes(Some(901), 1799, 0, 900));
        assert!(passes(None, 900, 0, 900));
        assert!(!passes(None, 899, 0, 900));
        assert!(!passes(None, 0, 0, 900));
    }

    fn members(at: u64, voters: &[NodeId]) -> StoredMembership<NodeId, MemberInfo> {
        let nodes = voters.iter().map(|id| (*id, MemberInfo::default())).collect::<std::collections::BTreeMap<_, _>>();
        let membership = openraft::Membership::new(vec![voters.iter().copied().collect()], nodes);
        StoredMembership::new(Some(LogId::new(openraft::CommittedLeaderId::new(1, 10), at)), membership)
    }

    #[test]
    fn passing_a_point_moves_the_due_count_and_a_new_membership_moves_the_point() {
        let (mut schedule, due) = SnapshotSchedule::new(20, 900);
        let three = members(1, &[10, 20, 30]);
        schedule.applied(Some(100), 200, &three);
        assert_eq!(*due.borrow(), 0);
        schedule.applied(Some(200), 650, &three);
        assert_eq!(*due.borrow(), 1);
        schedule.applied(Some(650), 900, &three);
        assert_eq!(*due.borrow(), 1, "900 is the point of member 10, not of 20");
        // With 30 gone, 20 takes the second half of each stretch: 1350.
        let two = members(950, &[10, 20]);
        schedule.applied(Some(900), 1300, &two);
        assert_eq!(*due.borrow(), 1);
        schedule.applied(Some(1300), 1350, &two);
        assert_eq!(*due.borrow(), 2);
    }
}
