//! `zeromesh demo`: a cluster of real members (RocksDB, openraft) in one
//! process, joined by the in-process transport, exercised end to end.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use zeromesh_consensus::{
    ConsensusError, ConsensusNode, Consistency, InProcessRouter, RaftSettings, ReadQuery, ReadReply, WriteReceipt,
};
use zeromesh_protocol::limits::MAX_BATCH_COMMANDS;
use zeromesh_protocol::{MemberInfo, MemoryBatch, MemoryCommand, MemoryPath, MemoryValue, NodeId, PathPrefix};

const WAIT: Duration = Duration::from_secs(30);
const DEMO_BATCH_COMMANDS: usize = 64;
const _: () = assert!(DEMO_BATCH_COMMANDS <= MAX_BATCH_COMMANDS);

struct Demo {
    router: InProcessRouter,
    settings: RaftSettings,
    data: std::path::PathBuf,
    nodes: BTreeMap<NodeId, ConsensusNode>,
}

impl Demo {
    async fn start_node(&mut self, id: NodeId) -> anyhow::Result<()> {
        let dir = self.data.join(format!("node-{id}"));
        let node = ConsensusNode::open(id, &dir, &self.settings, self.router.endpoint(id))
            .await
            .with_context(|| format!("opening member {id} in {}", dir.display()))?;
        self.router.connect(id, node.raft().clone());
        self.nodes.insert(id, node);
        Ok(())
    }

    async fn leader(&self) -> anyhow::Result<NodeId> {
        let started = Instant::now();
        loop {
            for node in self.nodes.values() {
                if let Some(leader) = node.cluster_view().leader {
                    if let Some(leader_node) = self.nodes.get(&leader) {
                        if leader_node.raft().ensure_linearizable().await.is_ok() {
                            return Ok(leader);
                        }
                    }
                }
            }
            if started.elapsed() > WAIT {
                bail!("no leader was elected within {WAIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn write(&self, batch: MemoryBatch) -> anyhow::Result<WriteReceipt> {
        let started = Instant::now();
        loop {
            let leader = self.leader().await?;
            match self.nodes[&leader].write(batch.clone()).await {
                Ok(receipt) => return Ok(receipt),
                Err(ConsensusError::NotLeader { .. }) if started.elapsed() < WAIT => continue,
                Err(error) => return Err(error.into()),
            }
        }
    }

    async fn count(&self, id: NodeId, prefix: &str) -> anyhow::Result<usize> {
        let mut after = None;
        let mut count = 0;
        loop {
            let query = ReadQuery::List { prefix: PathPrefix::parse(prefix)?, after, limit: Some(1000) };
            let ReadReply::List(page) = self.nodes[&id].read(Consistency::Stale, query).await? else {
                bail!("a list read answered something else");
            };
            count += page.records.len();
            match page.next_cursor {
                Some(cursor) => after = Some(cursor),
                None => return Ok(count),
            }
        }
    }
}

fn text(value: &str) -> MemoryValue {
    MemoryValue { value: value.as_bytes().to_vec(), content_type: "text/plain".into(), tags: vec!["demo".into()] }
}

pub async fn run(data: &Path, voter_count: u64, writes: u64, clean: bool) -> anyhow::Result<()> {
    if clean && data.exists() {
        std::fs::remove_dir_all(data).with_context(|| format!("removing {}", data.display()))?;
    }
    let fresh = !data.join("node-1").exists();
    let mut demo = Demo {
        router: InProcessRouter::new(),
        settings: RaftSettings {
            snapshot_every_entries: 500,
            log_entries_kept_after_snapshot: 100,
            ..RaftSettings::default()
        },
        data: data.to_owned(),
        nodes: BTreeMap::new(),
    };
    for id in 1..=voter_count {
        demo.start_node(id).await?;
    }
    if fresh {
        let members = (1..=voter_count)
            .map(|id| (id, MemberInfo { p2p_addr: format!("in-process/{id}"), api_addr: String::new() }))
            .collect();
        demo.nodes[&1].initialize(members).await?;
        println!("started a new {voter_count}-member cluster in {} (RocksDB per member)", data.display());
    } else {
        let leader = demo.leader().await?;
        let before = demo.count(leader, "demo-agent/").await?;
        println!("reopened the cluster in {}: {before} memories recovered from RocksDB", data.display());
    }
    let leader = demo.leader().await?;
    println!("leader: member {leader}, term {}", demo.nodes[&leader].cluster_view().term);

    let run_tag = demo.nodes[&leader].cluster_view().last_log_index.unwrap_or(0);
    let started = Instant::now();
    let mut last = None;
    let mut written = 0u64;
    while written < writes {
        let size = (writes - written).min(DEMO_BATCH_COMMANDS as u64);
        let commands = (written..written + size)
            .map(|i| {
                Ok(MemoryCommand::Put {
                    path: MemoryPath::parse(&format!("demo-agent/run-{run_tag}/note-{i}"))?,
                    value: text(&format!("note {i}")),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        last = Some(demo.write(MemoryBatch { commands }).await?);
        written += size;
    }
    let elapsed = started.elapsed();
    let last = last.context("at least one write")?;
    println!(
        "wrote {writes} memories in {:.2?} ({:.0} puts/s, fsynced, {DEMO_BATCH_COMMANDS} per Raft entry); last log index {}",
        elapsed,
        writes as f64 / elapsed.as_secs_f64(),
        last.log_index
    );

    let path = MemoryPath::parse(&format!("demo-agent/run-{run_tag}/status"))?;
    let first = demo
        .write(MemoryBatch {
            commands: vec![MemoryCommand::CompareAndSet {
                path: path.clone(),
                expected_version: 0,
                value: text("draft"),
            }],
        })
        .await?;
    let lost = demo
        .write(MemoryBatch {
            commands: vec![MemoryCommand::CompareAndSet {
                path: path.clone(),
                expected_version: 0,
                value: text("late"),
            }],
        })
        .await?;
    println!("compare-and-set on {path}: first {:?}, second {:?}", first.outcomes[0], lost.outcomes[0]);

    let leader = demo.leader().await?;
    let ReadReply::Record(Some(record)) = demo.nodes[&leader]
        .read(Consistency::Linearizable, ReadQuery::Get { path: path.clone(), version: None })
        .await?
    else {
        bail!("{path} is missing after an acknowledged write");
    };
    println!(
        "linearizable read of {path} on the leader: {:?} (version {}, log index {})",
        String::from_utf8_lossy(&record.value),
        record.version,
        record.log_index
    );

    if voter_count >= 3 {
        println!("crashing the leader (member {leader}) without shutdown ...");
        let node = demo.nodes.remove(&leader).context("the leader is running")?;
        demo.router.disconnect(leader);
        let probe = node.release_probe();
        drop(node);
        let new_leader = demo.leader().await?;
        println!("member {new_leader} took over");
        let receipt = demo
            .write(MemoryBatch {
                commands: vec![MemoryCommand::Put {
                    path: path.clone(),
                    value: text("written while a member was down"),
                }],
            })
            .await?;
        let started = Instant::now();
        while !probe.is_released() {
            if started.elapsed() > WAIT {
                bail!("the crashed member's store was not released within {WAIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        demo.start_node(leader).await?;
        demo.nodes[&leader]
            .wait_for("the restarted member to catch up", WAIT, |view| {
                view.applied_index.is_some_and(|applied| applied >= receipt.log_index)
            })
            .await?;
        let recovered = demo.count(leader, &format!("demo-agent/run-{run_tag}/")).await?;
        println!(
            "restarted member {leader} from its directory: it holds all {recovered} memories of this run and rejoined"
        );
    }

    for (id, node) in &demo.nodes {
        let view = node.cluster_view();
        println!(
            "member {id}: {:?}, term {}, applied index {:?}, snapshot index {:?}",
            view.state, view.term, view.applied_index, view.snapshot_index
        );
    }
    for (_, node) in std::mem::take(&mut demo.nodes) {
        node.shutdown().await?;
    }
    println!("stopped cleanly; run again with the same --data to see the memories recovered");
    Ok(())
}
