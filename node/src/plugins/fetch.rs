//! Getting a plugin module by SHA-256: from this node's blob store, else
//! from peers (those whose advert lists the hash first, then every member).
//! A module is kept only if its SHA-256 matches.

use std::time::Duration;

use zeromesh_plugins::sha256;

use crate::cluster::{member_address, Cluster, ServiceError};
use crate::mesh::messages::{MeshRequest, MeshResponse};

/// How long one peer may take to send a module.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// The module with `hash`, stored locally once fetched; `None` when no
/// peer that was asked holds it.
pub async fn module(cluster: &Cluster, hash: &[u8; 32]) -> Result<Option<Vec<u8>>, ServiceError> {
    let local = cluster.consensus.module(*hash).await?;
    if let Some(module) = local.filter(|module| sha256(module) == *hash) {
        return Ok(Some(module));
    }
    let hash_hex = hex::encode(hash);
    let own_peer = cluster.mesh.peer_id();
    let mut candidates = Vec::new();
    for known in cluster.mesh.adverts() {
        if known.advert.plugin_hashes.contains(&hash_hex) {
            if let Ok(peer) = known.advert.peer_id.parse::<libp2p::PeerId>() {
                let addresses = known.advert.listen_addrs.iter().filter_map(|address| address.parse().ok()).collect();
                candidates.push((peer, addresses));
            }
        }
    }
    for (node_id, info) in cluster.consensus.members() {
        if let Ok((peer, address)) = member_address(node_id, &info) {
            if !candidates.iter().any(|(known, _)| *known == peer) {
                candidates.push((peer, vec![address]));
            }
        }
    }
    for (peer, addresses) in candidates.into_iter().filter(|(peer, _)| *peer != own_peer) {
        let answer = cluster
            .mesh
            .request(peer, addresses, MeshRequest::FetchPluginModule { sha256: *hash }, FETCH_TIMEOUT)
            .await;
        match answer {
            Ok(MeshResponse::FetchPluginModule(Some(module))) if sha256(&module) == *hash => {
                cluster.consensus.keep_module(*hash, module.clone()).await?;
                tracing::info!(%peer, module = %hash_hex, bytes = module.len(), "fetched a plugin module");
                return Ok(Some(module));
            }
            Ok(MeshResponse::FetchPluginModule(Some(_))) => {
                tracing::warn!(%peer, module = %hash_hex, "a peer sent a module whose hash does not match; ignored");
            }
            Ok(_) => {}
            Err(error) => tracing::debug!(%peer, %error, "plugin module fetch failed"),
        }
    }
    Ok(None)
}
