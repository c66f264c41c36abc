//! Membership upkeep. On the leader: promote caught-up non-voters until the
//! cluster has its configured voter count, and replace a voter that has not
//! answered for longer than the voter timeout. On a new node: ask to join
//! through the bootstrap peers, with backoff, until admitted.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use libp2p::Multiaddr;
use openraft::ServerState;

use super::service::Cluster;
use crate::mesh::messages::{JoinRequest, MeshError, MeshRequest, MeshResponse};
use crate::mesh::peer_of;

const UPKEEP_INTERVAL: Duration = Duration::from_millis(500);
/// A non-voter within this many entries of the leader's log counts as caught up.
const CAUGHT_UP_LAG_ENTRIES: u64 = 64;
const JOIN_BACKOFF_MIN: Duration = Duration::from_millis(250);
const JOIN_BACKOFF_MAX: Duration = Duration::from_secs(10);
const JOIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a joining node's failed attempts are info lines before they are
/// warnings (the default log level): the nodes of a new cluster may start in
/// any order, but one that stays out says why.
const JOIN_QUIET: Duration = Duration::from_secs(10);

/// The voter set the leader should move to, if any: dead voters replaced and
/// missing voters added, from caught-up, live non-voters.
pub fn next_voters(
    voters: &BTreeSet<u64>,
    candidates: &[u64],
    dead: &BTreeSet<u64>,
    voter_count: usize,
) -> Option<BTreeSet<u64>> {
    let mut next: BTreeSet<u64> = voters.difference(dead).copied().collect();
    let mut fresh = candidates.iter().filter(|id| !voters.contains(id));
    while next.len() < voter_count {
        match fresh.next() {
            Some(id) => {
                next.insert(*id);
            }
            None => break,
        }
    }
    // Removing a dead voter without a replacement would only lower fault
    // tolerance: keep the set until someone can take its place.
    let replaced_all_dead = next.len() >= voters.len().min(voter_count);
    (next != *voters && replaced_all_dead && !next.is_empty()).then_some(next)
}

/// Runs the leader's upkeep forever.
pub async fn upkeep(cluster: Arc<Cluster>) {
    let mut was_leader = false;
    let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
    loop {
        tick.tick().await;
        cluster.keep_own_address().await;
        let view = cluster.consensus.cluster_view();
        let leading = view.state == ServerState::Leader;
        if leading && !was_leader {
            cluster.liveness.reset();
        }
        was_leader = leading;
        if !leading {
            continue;
        }
        let last = view.last_log_index.unwrap_or(0);
        let caught_up = |id: &u64| view.matched.get(id).copied().flatten().unwrap_or(0) + CAUGHT_UP_LAG_ENTRIES >= last;
        let alive = |id: &u64| cluster.liveness.silent_for(*id) < cluster.voter_timeout;
        let dead: BTreeSet<u64> = view.voters.iter().filter(|id| **id != view.node_id && !alive(id)).copied().collect();
        let candidates: Vec<u64> = view.learners.iter().filter(|id| caught_up(id) && alive(id)).copied().collect();
        if let Some(next) = next_voters(&view.voters, &candidates, &dead, cluster.voter_count()) {
            tracing::info!(?dead, from = ?view.voters, to = ?next, "changing voters");
            if let Err(error) = cluster.consensus.replace_voters(next, true).await {
                tracing::warn!(%error, "voter change failed; will retry");
            }
            continue;
        }
        // A non-voter silent this long (a replaced voter that never came
        // back) is removed, so nothing replicates to it or dials it forever.
        let gone: BTreeSet<u64> = view
            .learners
            .iter()
            .filter(|id| cluster.liveness.silent_for(**id) >= cluster.remove_after)
            .copied()
            .collect();
        if !gone.is_empty() {
            tracing::warn!(
                ?gone,
                after_ms = cluster.remove_after.as_millis() as u64,
                "removing members unreachable for too long"
            );
            if let Err(error) = cluster.consensus.remove_members(gone).await {
                tracing::warn!(%error, "member removal failed; will retry");
            }
        }
    }
}

/// Asks the bootstrap peers to admit this node until one does. Returns an
/// error only when the cluster refuses (a wrong token, say).
pub async fn join(cluster: &Cluster, bootstrap: &[Multiaddr], token: &str) -> anyhow::Result<()> {
    let request = JoinRequest { token: token.to_owned(), node_id: cluster.node_id(), info: cluster.info.clone() };
    let mut backoff = JOIN_BACKOFF_MIN;
    let started = tokio::time::Instant::now();
    let not_yet = |address: &Multiaddr, reason: String| {
        if started.elapsed() >= JOIN_QUIET {
            tracing::warn!(%address, %reason, "not a member yet; retrying through this bootstrap address");
        } else {
            tracing::info!(%address, %reason, "not a member yet; retrying through this bootstrap address");
        }
    };
    loop {
        for address in bootstrap {
            // An address without a peer id (a DNS name in a deployment) is
            // dialled first, to learn whose it is.
            let peer = match peer_of(address) {
                Some(peer) => peer,
                None => match cluster.mesh.discover(address.clone(), JOIN_REQUEST_TIMEOUT).await {
                    Ok(peer) => peer,
                    Err(error) => {
                        not_yet(address, format!("not reachable: {error}"));
                        continue;
                    }
                },
            };
            let answer = cluster
                .mesh
                .request(peer, vec![address.clone()], MeshRequest::Join(request.clone()), JOIN_REQUEST_TIMEOUT)
                .await;
            match answer {
                Ok(MeshResponse::Join(Ok(accepted))) => {
                    cluster.remember_token(token)?;
                    tracing::info!(leader = accepted.leader, "joined the cluster as a non-voter");
                    return Ok(());
                }
                Ok(MeshResponse::Join(Err(MeshError::Refused(reason)))) => {
                    anyhow::bail!("the cluster refused to admit this node: {reason}");
                }
                Ok(MeshResponse::Join(Err(MeshError::Invalid(reason)))) => {
                    anyhow::bail!("the cluster refused to admit this node: {reason}");
                }
                Ok(other) => not_yet(address, format!("not accepted yet: {other:?}")),
                Err(error) => not_yet(address, format!("not reachable: {error}")),
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(JOIN_BACKOFF_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[u64]) -> BTreeSet<u64> {
        ids.iter().copied().collect()
    }

    #[test]
    fn caught_up_non_voters_are_promoted_up_to_the_voter_count() {
        assert_eq!(next_voters(&set(&[1]), &[2, 3, 4], &set(&[]), 3), Some(set(&[1, 2, 3])));
        assert_eq!(next_voters(&set(&[1, 2, 3]), &[4], &set(&[]), 3), None);
    }

    #[test]
    fn a_dead_voter_is_replaced_only_when_someone_can_take_its_place() {
        assert_eq!(next_voters(&set(&[1, 2, 3]), &[4], &set(&[3]), 3), Some(set(&[1, 2, 4])));
        assert_eq!(next_voters(&set(&[1, 2, 3]), &[], &set(&[3]), 3), None);
    }
}
