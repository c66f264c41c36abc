//! Publishing this node's resource advert: at start, whenever what it says
//! changes, and every advert interval.

use std::sync::Arc;
use std::time::Duration;

use libp2p::identity::Keypair;

use crate::cluster::Cluster;
use crate::mesh::advert::{cores, load_milli, Advert, SignedAdvert};
use crate::plugins::PluginRuntime;

/// Free CPU and memory and the one-minute load, read from /proc (zero elsewhere).
fn machine_load() -> (u64, u64, u64) {
    let (cores, load_milli) = (cores(), load_milli());
    let free_memory_bytes = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|line| line.starts_with("MemAvailable:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024);
    let free_cpu_millicores = (cores * 1000).saturating_sub(load_milli);
    (free_cpu_millicores, free_memory_bytes, load_milli)
}

fn current_advert(cluster: &Cluster, plugins: &PluginRuntime, sequence: u64) -> Advert {
    let (free_cpu_millicores, free_memory_bytes, load_milli) = machine_load();
    Advert {
        peer_id: cluster.mesh.peer_id().to_string(),
        node_id: cluster.node_id(),
        listen_addrs: cluster.mesh.listen_addrs().iter().map(ToString::to_string).collect(),
        api_addr: cluster.info.api_addr.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        free_cpu_millicores,
        free_memory_bytes,
        load_milli,
        cores: cores(),
        runs_plugins: plugins.runs_plugins(),
        plugin_hashes: plugins.module_hashes(),
        free_disk_bytes: cluster.free_disk_bytes(),
        min_free_disk_bytes: cluster.min_free_disk,
        servers: plugins.federation.advertised(),
        sequence,
    }
}

/// How often the data disk is looked at between adverts: crossing its
/// reserve either way is published at once.
const DISK_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Publishes the advert every `interval`, whenever the plugins this node
/// runs or the federated servers it hosts change, and whenever its data disk crosses its reserve, forever.
pub async fn publish(cluster: Arc<Cluster>, plugins: Arc<PluginRuntime>, keypair: Keypair, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    let mut disk_tick = tokio::time::interval(DISK_CHECK_INTERVAL);
    let mut disk_low = cluster.disk_low();
    let mut plugins_changed = plugins.subscribe_loaded();
    let mut servers_changed = plugins.federation.subscribe_changes();
    // Sequence numbers start from the clock so a restarted node's adverts
    // are never taken for older ones.
    let mut sequence = zeromesh_consensus::wall_clock_ms();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = plugins_changed.changed() => if changed.is_err() { return },
            changed = servers_changed.changed() => if changed.is_err() { return },
            _ = disk_tick.tick() => {
                let low = cluster.disk_low();
                if low == disk_low {
                    continue;
                }
                disk_low = low;
                if low {
                    tracing::warn!(free_mib = cluster.free_disk_bytes().unwrap_or(0) >> 20, "the data disk is below its reserve: writes are refused on every node");
                } else {
                    tracing::info!("the data disk is above its reserve again: writes resume");
                }
            }
        }
        sequence += 1;
        match SignedAdvert::sign(&current_advert(&cluster, &plugins, sequence), &keypair) {
            Ok(signed) => cluster.mesh.set_advert(signed).await,
            Err(error) => tracing::warn!(%error, "advert not signed"),
        }
    }
}
