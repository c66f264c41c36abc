//! A cluster of three or four real nodes (RocksDB, openraft) in one process:
//! election, replication, crash and restart, snapshot catch-up, membership.

mod common;

use std::collections::BTreeSet;

use common::*;
use zeromesh_consensus::{ConsensusError, Consistency, RaftSettings, ReadQuery, ReadReply};
use zeromesh_protocol::{CommandOutcome, MemoryBatch, MemoryCommand, MemoryValue, PathPrefix};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_cluster_elects_a_leader_and_replicates() {
    let cluster = TestCluster::start(3, test_settings()).await;
    let leader = cluster.leader().await;

    let mut last_index = 0;
    for i in 0..20 {
        let receipt = cluster.write(put(&format!("agent-7/notes/{i}"), &format!("note {i}"))).await;
        assert_eq!(receipt.outcomes, vec![CommandOutcome::Written { version: 1 }]);
        assert!(receipt.log_index > last_index, "log indexes rise with every write");
        last_index = receipt.log_index;
    }

    for id in 1..=3 {
        cluster.wait_applied(id, last_index).await;
        let record = cluster.local_get(id, "agent-7/notes/19").await.expect("replicated to every node");
        assert_eq!(record.value, b"note 19");
        assert_eq!(record.version, 1);
        assert!(record.written_at_ms > 0, "the leader stamps the time");
    }

    let listed = cluster
        .node(leader)
        .read(
            Consistency::Linearizable,
            ReadQuery::List { prefix: PathPrefix::parse("agent-7/notes/").unwrap(), after: None, limit: Some(5) },
        )
        .await
        .expect("a linearizable list on the leader");
    let ReadReply::List(page) = listed else { panic!("a list answers a page") };
    assert_eq!(page.records.len(), 5);
    assert!(page.next_cursor.is_some(), "more pages follow");

    let before = cluster.node(leader).cluster_view().last_log_index;
    let oversized = MemoryBatch {
        commands: vec![MemoryCommand::Put {
            path: path("agent-7/too-big"),
            value: MemoryValue {
                value: vec![0; zeromesh_protocol::limits::MAX_VALUE_BYTES + 1],
                content_type: String::new(),
                tags: vec![],
            },
        }],
    };
    let refused = cluster.node(leader).write(oversized).await;
    assert!(
        matches!(&refused, Err(ConsensusError::Invalid(error)) if error.to_string().contains("over the limit")),
        "an over-limit value is refused before it reaches the log: {refused:?}"
    );
    assert_eq!(cluster.node(leader).cluster_view().last_log_index, before, "a refused write appends nothing");

    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let refused = cluster
        .node(follower)
        .read(Consistency::Linearizable, ReadQuery::Get { path: path("agent-7/notes/1"), version: None })
        .await;
    assert!(
        matches!(refused, Err(ConsensusError::NotLeader { leader: Some(id), .. }) if id == leader),
        "a follower points linearizable reads at the leader: {refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_fsyncs_its_own_proposals_in_the_background_and_followers_before_they_answer() {
    let cluster = TestCluster::start(3, test_settings()).await;
    let leader = cluster.leader().await;
    let fsyncs_before: Vec<u64> = (1..=3).map(|id| cluster.node(id).log_durability().background_fsyncs()).collect();
    let mut last_index = 0;
    for i in 0..20 {
        last_index = cluster.write(put(&format!("agent-7/durable/{i}"), "v")).await.log_index;
        // Answered means applied, which waits for the leader's own fsync.
        assert!(cluster.node(leader).log_durability().durable() >= last_index, "write {i} answered before on disk");
    }
    for id in 1..=3 {
        cluster.wait_applied(id, last_index).await;
        let durability = cluster.node(id).log_durability();
        assert!(durability.durable() >= last_index, "node {id} applied past its log on disk");
        let background = durability.background_fsyncs() - fsyncs_before[id as usize - 1];
        if id == leader {
            assert!(background > 0, "the leader's proposals were fsynced before replication, not beside it");
        } else {
            assert_eq!(background, 0, "follower {id} must fsync an append before it answers");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linearizable_read_rides_out_followers_that_miss_one_confirmation_round() {
    let cluster = TestCluster::start(3, test_settings()).await;
    let leader = cluster.leader().await;
    cluster.write(put("agent-7/read/1", "v")).await;
    let followers: Vec<_> = (1..=3).filter(|id| *id != leader).collect();
    for id in &followers {
        cluster.router.isolate(*id);
    }
    let read = cluster
        .node(leader)
        .read(Consistency::Linearizable, ReadQuery::Get { path: path("agent-7/read/1"), version: None });
    let heal = async {
        // The fault's length: longer than a confirmation round's deadline
        // (the heartbeat interval), shorter than an election timeout, so the
        // followers still take this leader's heartbeats once they hear it.
        tokio::time::sleep(std::time::Duration::from_millis(3 * test_settings().heartbeat_interval_ms)).await;
        for id in &followers {
            cluster.router.heal(*id);
        }
    };
    let (answer, ()) = tokio::join!(read, heal);
    let answer = answer.expect("the read is retried until a quorum confirms the leader");
    assert!(matches!(answer, ReadReply::Record(Some(_))), "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_leader_loses_no_acknowledged_write_and_rejoins_after_restart() {
    let mut cluster = TestCluster::start(3, test_settings()).await;

    // A stream of writes; every acknowledged one is remembered.
    let mut acknowledged = Vec::new();
    for i in 0..30 {
        let receipt = cluster.write(put(&format!("agent-1/stream/{i}"), &format!("v{i}"))).await;
        acknowledged.push((i, receipt.log_index));
    }
    let old_leader = cluster.leader().await;
    cluster.crash(old_leader).await;

    let new_leader = cluster.leader().await;
    assert_ne!(new_leader, old_leader, "a surviving node takes over");
    for i in 30..60 {
        let receipt = cluster.write(put(&format!("agent-1/stream/{i}"), &format!("v{i}"))).await;
        acknowledged.push((i, receipt.log_index));
    }

    cluster.start_node(old_leader).await;
    let last_index = acknowledged.last().unwrap().1;
    cluster.wait_applied(old_leader, last_index).await;
    let view = cluster
        .node(old_leader)
        .wait_for("the restarted node to follow the new leader", DEADLINE, |view| view.leader.is_some())
        .await
        .unwrap();
    assert!(view.voters.contains(&old_leader), "the restarted node is still a voter");

    let leader = cluster.leader().await;
    for (i, _) in &acknowledged {
        let key = format!("agent-1/stream/{i}");
        let record = cluster
            .node(leader)
            .read(Consistency::Linearizable, ReadQuery::Get { path: path(&key), version: None })
            .await
            .unwrap();
        assert!(matches!(record, ReadReply::Record(Some(_))), "acknowledged write {key} survived");
        assert!(cluster.local_get(old_leader, &key).await.is_some(), "the restarted node has {key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_node_whose_log_was_purged_catches_up_by_snapshot() {
    let settings = RaftSettings { snapshot_every_entries: 50, log_entries_kept_after_snapshot: 0, ..test_settings() };
    let mut cluster = TestCluster::start(3, settings).await;
    let leader = cluster.leader().await;
    let lagging = (1..=3).find(|id| *id != leader).unwrap();
    cluster.crash(lagging).await;

    let mut last_index = 0;
    for i in 0..300 {
        // Several commands per entry: batching rides one Raft entry.
        let batch = MemoryBatch {
            commands: (0..3)
                .map(|j| MemoryCommand::Put {
                    path: path(&format!("agent-3/bulk/{i}-{j}")),
                    value: MemoryValue {
                        value: vec![b'x'; 100],
                        content_type: "application/octet-stream".into(),
                        tags: vec![format!("batch-{i}")],
                    },
                })
                .collect(),
        };
        last_index = cluster.write(batch).await.log_index;
    }
    let leader = cluster.leader().await;
    let view = cluster
        .node(leader)
        .wait_for("the leader to snapshot and purge its log", DEADLINE, |view| {
            view.purged_index.is_some_and(|purged| purged > 100)
        })
        .await
        .expect("the log is purged after a snapshot");
    assert!(view.snapshot_index.is_some());

    cluster.start_node(lagging).await;
    cluster.wait_applied(lagging, last_index).await;
    let lagging_view = cluster.node(lagging).cluster_view();
    assert!(
        lagging_view.snapshot_index.is_some_and(|index| index > 100),
        "the lagging node caught up by installing a snapshot: {lagging_view:?}"
    );
    let record = cluster.local_get(lagging, "agent-3/bulk/0-0").await.expect("state from the snapshot");
    assert_eq!(record.tags, vec!["batch-0".to_owned()]);
    assert!(cluster.local_get(lagging, "agent-3/bulk/299-2").await.is_some());

    // Restarted again, it recovers from its own snapshot and log.
    cluster.crash(lagging).await;
    cluster.start_node(lagging).await;
    cluster.wait_applied(lagging, last_index).await;
    assert!(cluster.local_get(lagging, "agent-3/bulk/150-1").await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_build_their_snapshots_at_points_of_their_own() {
    // Members 1, 2 and 3 share each stretch of 60 entries: they build at
    // indexes 60k, 60k - 20 and 60k - 40, not all at the same index.
    let every = 60;
    let settings = RaftSettings { snapshot_every_entries: every, ..test_settings() };
    let cluster = TestCluster::start(3, settings).await;
    let mut last_index = 0;
    let mut i = 0;
    while last_index < 130 {
        last_index = cluster.write(put(&format!("agent-5/step/{i}"), "one entry")).await.log_index;
        i += 1;
    }
    for id in 1..=3u64 {
        cluster.wait_applied(id, last_index).await;
        let view = cluster
            .node(id)
            .wait_for("a second snapshot of the member's own", DEADLINE, |view| {
                view.snapshot_index.is_some_and(|index| index >= 80)
            })
            .await
            .expect("each member builds snapshots");
        let index = view.snapshot_index.unwrap();
        // A build starts a few entries after its point, at most.
        let third = (index + (id - 1) * every / 3) % every / (every / 3);
        assert_eq!(third, 0, "member {id} built at {index}, not just after one of its own points");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fourth_node_joins_as_a_learner_catches_up_and_is_promoted_to_voter() {
    let mut cluster = TestCluster::start(3, test_settings()).await;
    for i in 0..50 {
        cluster.write(put(&format!("agent-4/early/{i}"), "before the join")).await;
    }
    cluster.start_node(4).await;
    let leader = cluster.leader().await;
    let joined_at = cluster.node(leader).add_learner(4, member(4)).await.expect("add a learner");
    cluster.wait_applied(4, joined_at).await;
    let view = cluster.node(4).cluster_view();
    assert!(view.learners.contains(&4), "node 4 knows it is a learner: {view:?}");
    assert!(cluster.local_get(4, "agent-4/early/49").await.is_some(), "a learner has caught up once added");

    cluster.node(leader).promote_to_voter(4).await.expect("promote the learner");
    let voters = BTreeSet::from([1, 2, 3, 4]);
    for id in 1..=4 {
        cluster
            .node(id)
            .wait_for("node 4 to be a voter", DEADLINE, |view| view.voters == voters && view.learners.is_empty())
            .await
            .expect("every node sees four voters");
    }
    let receipt = cluster.write(put("agent-4/late/1", "after the promotion")).await;
    cluster.wait_applied(4, receipt.log_index).await;
    assert!(cluster.local_get(4, "agent-4/late/1").await.is_some());
}

/// Increments the counter at `key` `times` times by read-then-compare-and-set
/// through the leader, retrying on conflicts. Returns how many conflicts it saw.
async fn increment(cluster: &TestCluster, key: &str, times: u64) -> u64 {
    let mut conflicts = 0;
    let mut done = 0;
    while done < times {
        let leader = cluster.leader().await;
        let read = cluster
            .node(leader)
            .read(Consistency::Linearizable, ReadQuery::Get { path: path(key), version: None })
            .await;
        let (version, value) = match read {
            Ok(ReadReply::Record(Some(record))) => {
                (record.version, String::from_utf8(record.value).unwrap().parse::<u64>().unwrap())
            }
            Ok(ReadReply::Record(None)) => (0, 0),
            Ok(other) => panic!("unexpected reply {other:?}"),
            Err(_) => continue,
        };
        let cas = MemoryCommand::CompareAndSet {
            path: path(key),
            expected_version: version,
            value: MemoryValue {
                value: (value + 1).to_string().into_bytes(),
                content_type: "text/plain".into(),
                tags: vec![],
            },
        };
        match cluster.write(MemoryBatch { commands: vec![cas] }).await.outcomes.as_slice() {
            [CommandOutcome::Written { .. }] => done += 1,
            [CommandOutcome::VersionMismatch { .. }] => conflicts += 1,
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    conflicts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_compare_and_set_clients_never_lose_an_increment() {
    let cluster = TestCluster::start(3, test_settings()).await;
    let key = "agent-5/counter";
    let per_client = 10;
    let (a, b, c, d) = tokio::join!(
        increment(&cluster, key, per_client),
        increment(&cluster, key, per_client),
        increment(&cluster, key, per_client),
        increment(&cluster, key, per_client),
    );
    let leader = cluster.leader().await;
    let Ok(ReadReply::Record(Some(record))) =
        cluster.node(leader).read(Consistency::Linearizable, ReadQuery::Get { path: path(key), version: None }).await
    else {
        panic!("the counter exists");
    };
    assert_eq!(record.value, (4 * per_client).to_string().into_bytes(), "every acknowledged increment counted");
    assert_eq!(record.version, 4 * per_client, "one version per successful compare-and-set");
    // Conflicts are allowed, not required: they show how much the clients interleaved.
    eprintln!("compare-and-set conflicts seen: {}", a + b + c + d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_keeps_its_own_plugin_modules_and_drops_all_but_the_named_ones() {
    let cluster = TestCluster::start(1, test_settings()).await;
    let node = cluster.node(1);
    let (kept, dropped) = ([1u8; 32], [2u8; 32]);
    node.keep_module(kept, b"kept module".to_vec()).await.expect("keep a module");
    node.keep_module(dropped, b"dropped module".to_vec()).await.expect("keep a module");
    assert_eq!(node.module(dropped).await.expect("read a module"), Some(b"dropped module".to_vec()));

    node.drop_modules_except(BTreeSet::from([kept])).await.expect("drop modules");

    assert_eq!(node.module(kept).await.expect("read a module"), Some(b"kept module".to_vec()));
    assert_eq!(node.module(dropped).await.expect("read a module"), None);
    assert!(node.installed_plugins().await.expect("read the registry").is_empty());
    assert!(node.tokens().await.expect("read the tokens").is_empty());
    assert_eq!(node.token("0123456789abcdef").expect("read a token"), None);
}
