//! The trace log on real node processes: every node computes the same root
//! at the same size, a node that caught up through a snapshot too; the
//! voters cosign checkpoints; an entry's inclusion and the log's
//! consistency are proved and checked offline with the command line, and
//! any altered byte fails with its reason; a voter whose tree differs
//! refuses to sign and raises the alarm, and the others still make a
//! majority.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use zeromesh_testnet::{cli_as, wait_until, Testnet, TestnetOptions};

const WAIT: Duration = Duration::from_secs(60);

/// Every running node's `(trace_size, trace_root)` once they all agree on
/// the size; `None` while they differ.
async fn agreed_trace(testnet: &Testnet) -> Option<(u64, Vec<String>)> {
    let mut seen = Vec::new();
    for index in (0..testnet.nodes.len()).filter(|index| testnet.nodes[*index].is_running()) {
        let status = testnet.status(index).await.ok()?;
        seen.push((status["trace"]["size"].as_u64()?, status["trace"]["root"].as_str()?.to_owned()));
    }
    let size = seen[0].0;
    seen.iter().all(|(other, _)| *other == size).then(|| (size, seen.into_iter().map(|(_, root)| root).collect()))
}

/// The latest checkpoint through the command line, once it covers `size` entries.
async fn checkpoint_covering(admin: &str, api: &str, size: u64) -> String {
    wait_until(&format!("a checkpoint of at least {size} entries"), WAIT, || async move {
        let text = cli_as(Some(admin), &["trace", "checkpoint", "--node", api]).ok()?;
        let covered: u64 = text.lines().nth(1)?.parse().ok()?;
        (covered >= size).then_some(text)
    })
    .await
    .expect("the voters cosign a checkpoint")
}

fn put(admin: &str, api: &str, path: &str, value: &str) -> u64 {
    let out = cli_as(Some(admin), &["memory", "put", path, value, "--node", api]).expect("written");
    out.trim()
        .rsplit(' ')
        .next()
        .and_then(|index| index.parse().ok())
        .unwrap_or_else(|| panic!("no log index in {out:?}"))
}

fn verify(admin: &str, proof: &Path, keys: &Path, extra: &[&str]) -> anyhow::Result<String> {
    let mut args = vec!["trace", "verify", "--proof", proof.to_str().unwrap(), "--keys", keys.to_str().unwrap()];
    args.extend_from_slice(extra);
    cli_as(Some(admin), &args)
}

fn altered(bundle: &Value, change: impl FnOnce(&mut Value)) -> Value {
    let mut copy = bundle.clone();
    change(&mut copy);
    copy
}

fn flip_hex(text: &str) -> String {
    let first = if text.starts_with('0') { '1' } else { '0' };
    format!("{first}{}", &text[1..])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voters_cosign_checkpoints_and_entries_are_proved_offline_even_by_a_node_that_installed_a_snapshot() {
    let options = TestnetOptions {
        auth: true,
        args: ["--checkpoint-interval-ms", "300", "--snapshot-every-entries", "100"].map(String::from).to_vec(),
        ..Default::default()
    };
    let mut testnet = Testnet::start(3, options).await.expect("a testnet starts");
    let admin = testnet.admin_token.clone().expect("an admin token");
    let api: Vec<String> = testnet.nodes.iter().map(|node| node.address.api.clone()).collect();
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str| dir.path().join(name);

    let first = put(&admin, &api[1], "agent-7/notes/today", "met the client");
    put(&admin, &api[2], "agent-7/notes/tomorrow", "send the offer");
    let (size, roots) = wait_until("every node at the same trace size", WAIT, || agreed_trace(&testnet)).await.unwrap();
    assert!(size > first, "the tree holds entry {first}: {size} leaves");
    assert!(roots.iter().all(|root| *root == roots[0]), "roots at size {size} differ: {roots:?}");

    // An entry's inclusion, proved through one node and checked with no node.
    let old = checkpoint_covering(&admin, &api[0], first + 1).await;
    std::fs::write(file("old.txt"), &old).unwrap();
    let keys = cli_as(Some(&admin), &["trace", "keys", "--node", &api[2]]).unwrap();
    assert_eq!(keys.lines().count(), 3, "{keys}");
    std::fs::write(file("keys.txt"), &keys).unwrap();
    let index = first.to_string();
    let proof = file("proof.json");
    cli_as(Some(&admin), &["trace", "prove", "--index", &index, "--out", proof.to_str().unwrap(), "--node", &api[1]])
        .unwrap();
    let verified = verify(&admin, &proof, &file("keys.txt"), &[]).expect("the proof verifies");
    assert!(verified.starts_with(&format!("OK: entry {first} (Memory command")), "{verified}");
    assert!(verified.contains("cosigned by"), "{verified}");

    // Any altered byte fails, with the reason.
    let bundle: Value = serde_json::from_str(&std::fs::read_to_string(&proof).unwrap()).unwrap();
    let flip_last = |field: &str| {
        altered(&bundle, |b| {
            use base64::Engine;
            let engine = base64::engine::general_purpose::STANDARD;
            let mut bytes = engine.decode(b[field].as_str().unwrap()).unwrap();
            *bytes.last_mut().unwrap() ^= 1;
            b[field] = json!(engine.encode(bytes));
        })
    };
    let cases = [
        ("entry's leaf", flip_last("leaf"), "the entry was altered"),
        ("entry's payload", flip_last("payload"), "the payload was altered"),
        (
            "node hash",
            altered(&bundle, |b| b["path"][0] = json!(flip_hex(b["path"][0].as_str().unwrap()))),
            "the proof leads to root",
        ),
        (
            "checkpoint",
            altered(&bundle, |b| {
                let text = b["checkpoint"].as_str().unwrap().replacen("zeromesh/", "zeromesx/", 1);
                b["checkpoint"] = json!(text);
            }),
            "does not verify",
        ),
        (
            "signature",
            altered(&bundle, |b| {
                let text = b["checkpoint"].as_str().unwrap();
                let at = text.rfind(' ').unwrap() + 20; // past the key id, inside the signature
                let mut bytes = text.as_bytes().to_vec();
                bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
                b["checkpoint"] = json!(String::from_utf8(bytes).unwrap());
            }),
            "does not verify",
        ),
    ];
    for (what, tampered, reason) in cases {
        std::fs::write(file("tampered.json"), tampered.to_string()).unwrap();
        let error = verify(&admin, &file("tampered.json"), &file("keys.txt"), &[]).expect_err(what).to_string();
        assert!(error.contains("FAILED") && error.contains(reason), "altered {what}: {error}");
    }
    // Keys of other nodes do not make a majority.
    let stranger = "12D3KooWStranger+01234567+AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\n";
    std::fs::write(file("stranger.txt"), stranger).ok();
    assert!(verify(&admin, &proof, &file("stranger.txt"), &[]).is_err());

    // Enough writes for a snapshot; a new node catches up through it and
    // computes the same root; the old checkpoint is a prefix of the new.
    let mut client = testnet.client(0).await.unwrap();
    for n in 0..120 {
        client.call_tool("memory_put", json!({ "path": format!("agent-7/bulk/{n}"), "value": "x" })).await.unwrap();
    }
    let joined = testnet.add_node().await.unwrap();
    testnet
        .wait_for_cluster("the fourth node to be a member", WAIT, |status| {
            status["members"].as_array().is_some_and(|members| members.len() == 4)
        })
        .await
        .unwrap();
    let status = testnet.status(joined).await.unwrap();
    let (size, roots) =
        wait_until("the new node at the others' trace size", WAIT, || agreed_trace(&testnet)).await.unwrap();
    assert!(
        roots.iter().all(|root| *root == roots[0]),
        "roots at size {size} differ: {roots:?}; the new node's log:\n{}",
        testnet.nodes[joined].log_tail(100)
    );
    let snapshot = testnet.status(joined).await.unwrap()["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|member| member["node_id"] == status["node_id"])
        .and_then(|member| member["snapshot_index"].as_u64());
    assert!(snapshot.is_some(), "the new node caught up through a snapshot");

    let new_api = testnet.nodes[joined].address.api.clone();
    checkpoint_covering(&admin, &new_api, size).await;
    let consistency = file("consistency.json");
    let from = old.lines().nth(1).unwrap();
    cli_as(
        Some(&admin),
        &["trace", "consistency", "--from", from, "--out", consistency.to_str().unwrap(), "--node", &new_api],
    )
    .unwrap();
    let old_path = file("old.txt");
    let verified =
        verify(&admin, &consistency, &file("keys.txt"), &["--old-checkpoint", old_path.to_str().unwrap()]).unwrap();
    assert!(verified.starts_with("OK: log zeromesh/"), "{verified}");
    let bundle: Value = serde_json::from_str(&std::fs::read_to_string(&consistency).unwrap()).unwrap();
    let wrong = altered(&bundle, |b| b["old_root"] = json!(flip_hex(b["old_root"].as_str().unwrap())));
    std::fs::write(file("tampered.json"), wrong.to_string()).unwrap();
    let error =
        verify(&admin, &file("tampered.json"), &file("keys.txt"), &["--old-checkpoint", old_path.to_str().unwrap()])
            .unwrap_err()
            .to_string();
    assert!(error.contains("is not the one the older checkpoint signs"), "{error}");

    // The first entry, proved by the node that never held it in its log.
    cli_as(Some(&admin), &["trace", "prove", "--index", &index, "--out", proof.to_str().unwrap(), "--node", &new_api])
        .unwrap();
    let verified = verify(&admin, &proof, &file("keys.txt"), &[]).expect("the snapshot's nodes prove old entries");
    assert!(verified.contains(&format!("OK: entry {first}")), "{verified}");
    assert!(verified.contains("compacted"), "the new node never held the entry's bytes: {verified}");
}

/// The checkpoint size node `index` keeps, once it keeps one.
async fn kept_checkpoint_size(testnet: &Testnet, index: usize) -> Option<u64> {
    let answer = testnet.call(index, "trace_checkpoint", json!({})).await.ok()?;
    answer["checkpoint"].as_str()?.lines().nth(1)?.parse().ok()
}

/// A member cut off while a checkpoint was handed out gets it once it is
/// back, though no write follows to make another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_missed_a_checkpoint_is_handed_it_again_without_a_new_write() {
    let options =
        TestnetOptions { args: ["--checkpoint-interval-ms", "300"].map(String::from).to_vec(), ..Default::default() };
    let testnet = Testnet::start(3, options).await.expect("a testnet starts");
    let leader = testnet.leader(WAIT).await.unwrap();
    let away = (leader + 1) % 3;
    testnet.call(leader, "memory_put", json!({ "path": "a/before", "value": "x" })).await.unwrap();
    let (size, _) = wait_until("every node at the same trace size", WAIT, || agreed_trace(&testnet)).await.unwrap();
    wait_until("every node to keep a checkpoint", WAIT, || async {
        for index in 0..3 {
            (kept_checkpoint_size(&testnet, index).await? >= size).then_some(())?;
        }
        Some(())
    })
    .await
    .unwrap();

    testnet.isolate(away).await.unwrap();
    testnet.call(leader, "memory_put", json!({ "path": "a/while-away", "value": "x" })).await.unwrap();
    let grown = testnet.status(leader).await.unwrap()["trace"]["size"].as_u64().unwrap();
    wait_until("the leader to keep a checkpoint of the new entry", WAIT, || async {
        (kept_checkpoint_size(&testnet, leader).await? >= grown).then_some(())
    })
    .await
    .unwrap();
    assert!(kept_checkpoint_size(&testnet, away).await.unwrap_or(0) < grown, "the isolated member got it while away");

    testnet.heal().await.unwrap();
    wait_until("the member back to keep the checkpoint it missed", WAIT, || async {
        (kept_checkpoint_size(&testnet, away).await? >= grown).then_some(())
    })
    .await
    .unwrap_or_else(|error| panic!("{error}\n{}", testnet.logs()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voter_whose_tree_was_altered_refuses_to_cosign_and_raises_the_alarm() {
    let options =
        TestnetOptions { args: ["--checkpoint-interval-ms", "300"].map(String::from).to_vec(), ..Default::default() };
    let mut testnet = Testnet::start(3, options).await.expect("a testnet starts");
    let leader = testnet.leader(WAIT).await.unwrap();
    let victim = (leader + 1) % 3;
    let mut client = testnet.client(leader).await.unwrap();
    for n in 0..20 {
        client.call_tool("memory_put", json!({ "path": format!("a/{n}"), "value": "x" })).await.unwrap();
    }
    let (size, _) = wait_until("every node at the same trace size", WAIT, || agreed_trace(&testnet)).await.unwrap();

    // Alter the largest complete subtree's hash on the stopped victim's disk.
    testnet.kill9(victim).await.unwrap();
    {
        use zeromesh_trace::merkle::{Hash, NodeId};
        let store = zeromesh_storage::Store::open(&testnet.nodes[victim].data_dir.join("raft")).unwrap();
        let level = 63 - size.leading_zeros() as u8;
        let mut batch = store.state_batch();
        batch.put_trace_node(NodeId { level, index: 0 }, Hash([7; 32])).unwrap();
        batch.commit().unwrap();
    }
    testnet.restart(victim).await.unwrap();
    client.call_tool("memory_put", json!({ "path": "a/after", "value": "x" })).await.unwrap();

    wait_until("the victim to count a root mismatch", WAIT, || async {
        testnet.metric(victim, "zeromesh_trace_root_mismatches_total").await.filter(|count| *count > 0)
    })
    .await
    .unwrap();
    assert!(testnet.nodes[victim].log_tail(200).contains("ALARM"), "{}", testnet.nodes[victim].log_tail(50));

    // The two others still cosign: a majority of three.
    let answer = wait_until("a checkpoint past the alteration", WAIT, || async {
        let answer = testnet.call(leader, "trace_checkpoint", json!({})).await.ok()?;
        let text = answer["checkpoint"].as_str()?.to_owned();
        let covered: u64 = text.lines().nth(1)?.parse().ok()?;
        (covered > size).then_some(answer)
    })
    .await
    .unwrap();
    let text = answer["checkpoint"].as_str().unwrap();
    assert_eq!(text.lines().filter(|line| line.starts_with('\u{2014}')).count(), 2, "{text}");
    let victim_peer = &testnet.nodes[victim].address.peer_id;
    assert!(!text.contains(victim_peer.as_str()), "the victim must not have cosigned: {text}");
    assert!(testnet.metric(leader, "zeromesh_trace_root_mismatches_total").await == Some(0));
}
