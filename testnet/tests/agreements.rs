//! Agreements on real node processes with authentication, set up through
//! the command line as an operator would: concurrent callers spread over
//! three nodes against a limit, with the leader killed (`kill -9`) while
//! they call, get exactly the limit's worth of calls and the rest refused;
//! every node reads the same usage; a suspension stops calls on every node
//! at once; calls outside the agreement are refused and recorded.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use zeromesh::client::{ApiClient, ClientError};
use zeromesh_testnet::parties::Parties;
use zeromesh_testnet::{connect_when_known, wait_until, Testnet, TestnetOptions};

const WAIT: Duration = Duration::from_secs(60);
/// The agreement's lifetime limit of calls.
const LIMIT: u64 = 24;
const CALLERS: usize = 6;
const ATTEMPTS_PER_CALLER: usize = 8;
/// Successes after which the leader is killed.
const KILL_AFTER: usize = 8;

fn path(path: &Path) -> String {
    path.to_str().expect("a UTF-8 path").to_owned()
}

/// An operator of a testnet, through the command line with its admin token:
/// a provider key the mesh trusts, and an agent spawned with a key of its own.
async fn wait_active(testnet: &Testnet, id: &str) {
    for index in 0..testnet.nodes.len() {
        wait_until(&format!("node {index} to know agreement {id} active"), WAIT, || async {
            let shown = testnet.call(index, "agreement_show", json!({ "id": id })).await.ok()?;
            (shown["state"] == "active").then_some(())
        })
        .await
        .unwrap();
    }
}

/// How one call ended, once it ended for sure.
#[derive(Debug, PartialEq)]
enum Ended {
    Served,
    OverLimit,
}

/// Calls `echo` under idempotency key `key`, from node `*node` on, moving to
/// the next node (and retrying with the same key) whenever the answer is not
/// definitive: a connection lost, a node down, a proposal whose fate is unknown.
async fn call_until_definitive(
    api: &[String],
    token: &str,
    node: &mut usize,
    client: &mut Option<ApiClient>,
    key: &str,
) -> Ended {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        assert!(tokio::time::Instant::now() < deadline, "call {key} got no definitive answer in time");
        if client.is_none() {
            match ApiClient::connect_with(&api[*node], None, Some(token.to_owned())).await {
                Ok(connected) => *client = Some(connected),
                Err(_) => {
                    *node = (*node + 1) % api.len();
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
        }
        let params = json!({
            "name": "echo",
            "arguments": { "key": key },
            "_meta": { "zeromesh/idempotency-key": key },
        });
        match client.as_mut().expect("connected").request("tools/call", params).await {
            Ok(result) if result["isError"] == false => {
                assert_eq!(result["structuredContent"]["key"], key);
                assert_eq!(result["_meta"]["zeromesh/usage"]["agreement"], "cap");
                assert_eq!(result["_meta"]["zeromesh/usage"]["used"]["calls"], 1);
                return Ended::Served;
            }
            Err(ClientError::Rpc { code: -32004, message }) => {
                assert!(message.contains(&format!("the limit of {LIMIT} calls per lifetime is reached")), "{message}");
                return Ended::OverLimit;
            }
            other => {
                // Not definitive: the call may or may not have been reserved.
                // The same key through another node counts it once.
                let _ = other;
                *client = None;
                *node = (*node + 1) % api.len();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The calls agreement `cap` has counted, as node `index` reads it.
async fn used_on(testnet: &Testnet, index: usize) -> Option<u64> {
    let usage = testnet.call(index, "agreement_usage", json!({ "id": "cap" })).await.ok()?;
    usage["limits"][0]["used"].as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_more_calls_than_the_limit_succeed_across_nodes_with_the_leader_killed() {
    let mut testnet =
        Testnet::start(3, TestnetOptions { auth: true, ..Default::default() }).await.expect("a testnet starts");
    // A provider publishes echo; the agent signs an agreement with it.
    let parties = Parties::new(&testnet, "meter", &["echo", "memory_*"]);
    let api = parties.api.clone();
    parties.install_example("echo", &[]);
    let limit = format!("calls={LIMIT}/lifetime");
    assert!(parties.create("cap", "meter", "echo", &[&limit]).contains("agreement cap draft: created"));
    let half = parties.run(&["agreement", "activate", "cap", "--node", &api[1]]).unwrap_err().to_string();
    assert!(half.contains("the consumer has not signed"), "{half}");
    let activated = parties.sign_and_activate("cap");
    assert!(activated.contains("agreement cap active: activated"), "{activated}");
    let token = parties.agent_token("meter");
    for index in 0..3 {
        wait_until(&format!("node {index} to serve echo under the agreement"), WAIT, || async {
            let shown = testnet.call(index, "agreement_show", json!({ "id": "cap" })).await.ok()?;
            let offered = testnet.client(index).await.ok()?.request("tools/list", json!({})).await.ok()?;
            let has_echo = offered["tools"].as_array()?.iter().any(|tool| tool["name"] == "echo");
            (shown["state"] == "active" && has_echo).then_some(())
        })
        .await
        .unwrap();
    }

    // A tool outside the agreement is refused, runs nothing, and is recorded.
    // The token was created through node 0: node 1 knows it once it applied it.
    let mut probe = connect_when_known(&api[1], &token, WAIT).await.unwrap();
    match probe.call_tool("memory_get", json!({ "path": "meter/x" })).await {
        Err(ClientError::Rpc { code: -32003, message }) => {
            assert!(message.contains("none of them covers memory_get"), "{message}")
        }
        other => panic!("memory_get is outside meter's agreement: {other:?}"),
    }

    let served = Arc::new(AtomicUsize::new(0));
    let leader = testnet.leader(WAIT).await.unwrap();
    let mut callers = Vec::new();
    for caller in 0..CALLERS {
        let (api, token, served) = (api.clone(), token.clone(), served.clone());
        callers.push(tokio::spawn(async move {
            let (mut node, mut client, mut ended) = (caller % 3, None, Vec::new());
            for attempt in 0..ATTEMPTS_PER_CALLER {
                let key = format!("caller{caller}-call{attempt}");
                let outcome = call_until_definitive(&api, &token, &mut node, &mut client, &key).await;
                if outcome == Ended::Served {
                    served.fetch_add(1, Ordering::SeqCst);
                }
                ended.push(outcome);
            }
            ended
        }));
    }
    wait_until("some calls to be served before the kill", WAIT, || async {
        (served.load(Ordering::SeqCst) >= KILL_AFTER).then_some(())
    })
    .await
    .unwrap();
    testnet.kill9(leader).await.unwrap();
    let mut outcomes = Vec::new();
    for caller in callers {
        outcomes.extend(caller.await.expect("a caller finished"));
    }
    let attempts = CALLERS * ATTEMPTS_PER_CALLER;
    let succeeded = outcomes.iter().filter(|outcome| **outcome == Ended::Served).count();
    let refused = outcomes.iter().filter(|outcome| **outcome == Ended::OverLimit).count();
    assert_eq!(succeeded as u64, LIMIT, "exactly the limit's worth of calls succeeded");
    assert_eq!(refused, attempts - LIMIT as usize, "every other attempt was refused");

    // Every node, the killed one restarted too, reads the same usage.
    testnet.restart(leader).await.unwrap();
    for index in 0..3 {
        let used = wait_until(&format!("node {index} to read the usage"), WAIT, || async {
            used_on(&testnet, index).await.filter(|used| *used == LIMIT)
        })
        .await;
        assert!(used.is_ok(), "node {index} reads {:?} calls used", used_on(&testnet, index).await);
    }
    // A refusal's violation is applied after the last counted call: node 0 may
    // read usage at the limit before it has applied every refusal.
    let over_limit_on_0 = || async {
        let violations = testnet.call(0, "agreement_violations", json!({})).await.ok()?;
        let over = |violation: &&Value| violation["reason"].as_str().unwrap_or_default().contains("over the limit");
        Some((violations["violations"].as_array()?.iter().filter(over).count(), violations))
    };
    let recorded = wait_until("node 0 to apply a violation for every refusal", WAIT, || async {
        over_limit_on_0().await.filter(|(over_limit, _)| *over_limit >= refused)
    })
    .await;
    let Ok((_, violations)) = recorded else {
        panic!("over-limit violations on node 0 for {refused} refusals: {:?}", over_limit_on_0().await.map(|(n, _)| n))
    };
    let outside = violations["violations"][0]["reason"].as_str().unwrap_or_default();
    assert!(outside.contains("none of them covers memory_get"), "the first violation: {outside}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_agreement_stops_calls_on_every_node_at_once() {
    let testnet =
        Testnet::start(3, TestnetOptions { auth: true, ..Default::default() }).await.expect("a testnet starts");
    let parties = Parties::new(&testnet, "writer", &["memory_*"]);
    let api = parties.api.clone();
    parties.create("notes", "writer", "memory_*", &["calls=1000/hour", "bytes_out=1000000/day"]);
    parties.sign_and_activate("notes");
    let token = parties.agent_token("writer");
    let mut clients = parties.clients(&token).await;
    wait_active(&testnet, "notes").await;
    // A subscriber on another node hears each change of the usage.
    let mut watcher = testnet.client(1).await.unwrap();
    watcher.request("resources/subscribe", json!({ "uri": "agreement://notes/usage" })).await.unwrap();
    for client in &mut clients {
        let params = json!({ "name": "memory_put", "arguments": { "path": "writer/note", "value": "v" } });
        let written = client.request("tools/call", params).await.unwrap();
        let usage: &Value = &written["_meta"]["zeromesh/usage"];
        assert_eq!(usage["agreement"], "notes");
        assert!(usage["used"]["bytes_out"].as_u64().unwrap() > 0, "{usage}");
        assert!(usage["logIndex"].as_u64().unwrap() > 0, "{usage}");
    }
    let heard = watcher.next_notification(WAIT).await.expect("the subscriber is told the usage changed");
    assert_eq!(heard["params"]["uri"], "agreement://notes/usage", "{heard}");
    let read = watcher.request("resources/read", json!({ "uri": "agreement://notes/usage" })).await.unwrap();
    let from_resource: Value = serde_json::from_str(read["contents"][0]["text"].as_str().unwrap()).unwrap();
    assert!(from_resource["limits"][0]["used"].as_u64().unwrap() >= 1, "{from_resource}");
    // Node 1 reads the usage once it has applied the last call's settlement
    // (committed before that call answered, through another node).
    let settled = wait_until("node 1 to apply every settlement", WAIT, || async {
        let shown = testnet.call(1, "agreement_usage", json!({ "id": "notes" })).await.ok()?;
        (shown["limits"][1]["used"].as_u64()? < 1000).then_some(shown)
    })
    .await;
    let shown = settled.expect("only the bytes sent are counted, not the reservations");
    assert_eq!(shown["limits"][0]["used"], 3);
    assert!(shown["limits"][1]["used"].as_u64().unwrap() > 0, "{shown}");

    parties.run(&["agreement", "suspend", "notes", "--reason", "quarterly audit", "--node", &api[2]]).unwrap();
    for (index, client) in clients.iter_mut().enumerate() {
        match client.call_tool("memory_put", json!({ "path": "writer/note", "value": "after" })).await {
            Err(ClientError::Rpc { code: -32003, message }) => {
                assert!(message.contains("agreement notes is suspended: quarterly audit"), "node {index}: {message}")
            }
            other => panic!("node {index} served a call after the suspension: {other:?}"),
        }
    }
    let note = testnet.call(0, "memory_get", json!({ "path": "writer/note" })).await.unwrap();
    assert_eq!(note["record"]["value"], "v", "no refused call wrote");
    let history = parties.run(&["agreement", "show", "notes", "--node", &api[1]]).unwrap();
    assert!(history.contains("suspended: quarterly audit"), "{history}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_served_from_leases_never_exceed_the_limit_and_usage_equals_the_calls_that_ran() {
    const LEASED_LIMIT: u64 = 40;
    let options = TestnetOptions { args: vec!["--lease-calls".into(), "4".into()], auth: true, ..Default::default() };
    let testnet = Testnet::start(3, options).await.expect("a testnet starts");
    let parties = Parties::new(&testnet, "lessee", &["memory_*"]);
    let limit = format!("calls={LEASED_LIMIT}/lifetime");
    parties.create("leased", "lessee", "memory_*", &[&limit]);
    parties.sign_and_activate("leased");
    let token = parties.agent_token("lessee");
    wait_active(&testnet, "leased").await;
    let api = parties.api.clone();

    // Two rounds: the first stays under the limit (10 calls per node from
    // leases of 4 leave leases part-used), the second runs into it.
    let (mut served, mut refused, mut entries) = (0, 0, Vec::new());
    for round in 0..2 {
        let (round_served, round_refused, round_entries) = call_leased(&api, &token, 5).await;
        served += round_served;
        refused += round_refused;
        entries.extend(round_entries);
        assert!(served <= LEASED_LIMIT, "{served} calls served over a limit of {LEASED_LIMIT}");
        if round == 0 {
            assert_eq!((served, refused), (30, 0), "the first round stays under the limit");
        }
        // Once every lease is back, usage on every node is the calls that ran.
        for index in 0..3 {
            wait_until(&format!("node {index} to count the {served} calls that ran"), WAIT, || async {
                let usage = testnet.call(index, "agreement_usage", json!({ "id": "leased" })).await.ok()?;
                (usage["limits"][0]["used"].as_u64()? == served).then_some(())
            })
            .await
            .unwrap();
        }
    }
    assert_eq!(served + refused, 60);
    assert_eq!(served, LEASED_LIMIT, "with every lease returned, the whole allowance was served");
    entries.sort_unstable();
    entries.dedup();
    assert!((entries.len() as u64) < served, "calls shared leases: {} reservations for {served} calls", entries.len());
}

/// Six callers, two per node, each making `attempts` calls with no key of
/// their own (so they are served from leases); counts the served and the
/// refused calls and the lease entries the served ones came from.
async fn call_leased(api: &[String], token: &str, attempts: usize) -> (u64, u64, Vec<u64>) {
    let mut callers = Vec::new();
    for caller in 0..CALLERS {
        let (node, token) = (api[caller % 3].clone(), token.to_owned());
        callers.push(tokio::spawn(async move {
            let mut client = connect_when_known(&node, &token, WAIT).await.unwrap();
            let (mut served, mut refused, mut lease_entries) = (0u64, 0u64, Vec::new());
            for _ in 0..attempts {
                let params = json!({ "name": "memory_get", "arguments": { "path": "lessee/none" } });
                match client.request("tools/call", params).await {
                    Ok(result) => {
                        served += 1;
                        lease_entries.push(result["_meta"]["zeromesh/usage"]["logIndex"].as_u64().unwrap());
                    }
                    Err(ClientError::Rpc { code: -32004, .. }) => refused += 1,
                    Err(other) => panic!("a call failed without a fault: {other}"),
                }
            }
            (served, refused, lease_entries)
        }));
    }
    let (mut served, mut refused, mut entries) = (0, 0, Vec::new());
    for caller in callers {
        let (caller_served, caller_refused, caller_entries) = caller.await.unwrap();
        served += caller_served;
        refused += caller_refused;
        entries.extend(caller_entries);
    }
    (served, refused, entries)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cedar_policy_that_forbids_a_tool_for_a_tag_stops_the_call_on_every_node_and_is_recorded() {
    let testnet =
        Testnet::start(3, TestnetOptions { auth: true, ..Default::default() }).await.expect("a testnet starts");
    let parties = Parties::new(&testnet, "scribe", &["memory_*"]);
    let api = parties.api.clone();
    parties.create("scribing", "scribe", "memory_*", &["calls=1000/hour"]);
    parties.sign_and_activate("scribing");
    wait_active(&testnet, "scribing").await;
    let token = parties.agent_token("scribe");
    let mut clients = parties.clients(&token).await;
    let put = |value: &str| json!({ "path": "scribe/note", "value": value });
    clients[0].call_tool("memory_put", put("before")).await.expect("the permit lets the agent write");

    // A set that does not fit the schema, or edits a version that is gone, changes nothing.
    let typo =
        parties.set_policies(r#"@id("typo") forbid(principal, action, resource) when { principal.tag == "x" };"#, &[]);
    assert!(typo.contains("the policy set is not valid: typo: "), "{typo}");
    let stale = parties.set_policies("permit(principal, action, resource);", &["--expect-version", "0"]);
    assert!(stale.contains("the policy set is at version 1"), "{stale}");
    let mut watcher = testnet.client(2).await.unwrap();
    watcher.request("resources/subscribe", json!({ "uri": "policy://current" })).await.unwrap();

    let read_only = r#"
        @id("agents-may-call")
        permit(principal, action, resource);

        @id("tested-agents-read-only")
        forbid(principal, action == Action::"call", resource)
        when { principal.tags.contains("tested") && resource.name == "memory_put" };
    "#;
    let set = parties.set_policies(read_only, &["--expect-version", "1", "--description", "read-only agents"]);
    assert!(set.contains("policy set version 2: agents-may-call (permit), tested-agents-read-only (forbid)"), "{set}");
    // Every node refuses at once: a node that has not applied version 2 yet
    // decides under version 1, and apply refuses that reservation.
    for (index, client) in clients.iter_mut().enumerate() {
        match client.call_tool("memory_put", put("after")).await {
            Err(ClientError::Rpc { code: -32003, message }) => assert!(
                message.contains("denied by policy tested-agents-read-only (policy set version 2)"),
                "node {index}: {message}"
            ),
            other => panic!("node {index} let a forbidden call through: {other:?}"),
        }
        let read = client.call_tool("memory_get", json!({ "path": "scribe/note" })).await.unwrap();
        assert_eq!(read["record"]["value"], "before", "node {index}: the refused call wrote nothing");
    }
    let heard = watcher.next_notification(WAIT).await.expect("the subscriber hears the policy set change");
    assert_eq!(heard["params"]["uri"], "policy://current", "{heard}");

    let recorded = wait_until("node 0 to apply the three policy violations", WAIT, || async {
        let violations = testnet.call(0, "agreement_violations", json!({})).await.ok()?;
        let denied: Vec<Value> = violations["violations"]
            .as_array()?
            .iter()
            .filter(|violation| violation["reason"].as_str().unwrap_or_default().contains("tested-agents-read-only"))
            .cloned()
            .collect();
        (denied.len() >= 3).then_some(denied)
    })
    .await
    .unwrap();
    assert!(recorded.iter().all(|violation| violation["tool"] == "memory_put" && violation["agent"] == "scribe"));
    let shown = parties.run(&["policy", "show", "--node", &api[0]]).unwrap();
    assert!(shown.starts_with("// policy set version 2: agents-may-call (permit)"), "{shown}");
    assert!(shown.contains("// read-only agents") && shown.contains("principal.tags.contains(\"tested\")"), "{shown}");
    let history = parties.run(&["policy", "history", "--node", &api[2]]).unwrap();
    assert!(history.starts_with("version 2 at log index") && history.contains("version 1 at"), "{history}");
}

/// Agreement `metered`'s calls: 70 of them, each reserved through the log
/// (a caller's own idempotency key), so each is a usage record.
const PROVED_CALLS: usize = 70;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proof_of_usage_shows_a_window_within_its_limit_offline_and_anything_altered_fails() {
    let options = TestnetOptions {
        auth: true,
        args: ["--checkpoint-interval-ms", "300"].map(String::from).to_vec(),
        ..Default::default()
    };
    let testnet = Testnet::start(3, options).await.expect("a testnet starts");
    let parties = Parties::new(&testnet, "audited", &["echo"]);
    parties.install_example("echo", &[]);
    assert!(parties
        .create("metered", "audited", "echo", &["calls=80/lifetime", "bytes_in=100000/day"])
        .contains("created"));
    assert!(parties.sign_and_activate("metered").contains("active"));
    wait_active(&testnet, "metered").await;
    let token = parties.agent_token("audited");
    let mut client = connect_when_known(&parties.api[1], &token, WAIT).await.unwrap();
    wait_until("node 1 to offer echo", WAIT, || async {
        let offered = testnet.client(1).await.ok()?.request("tools/list", json!({})).await.ok()?;
        offered["tools"].as_array()?.iter().any(|tool| tool["name"] == "echo").then_some(())
    })
    .await
    .unwrap();
    for call in 0..PROVED_CALLS {
        let key = format!("proved-{call}");
        let params =
            json!({ "name": "echo", "arguments": { "key": key }, "_meta": { "zeromesh/idempotency-key": key } });
        let result = client.request("tools/call", params).await.unwrap();
        assert_eq!(result["isError"], false, "{result}");
    }

    // Node 2 proves the calls window (70 records: two chained proofs).
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str| path(&dir.path().join(name));
    let keys = parties.run(&["trace", "keys", "--node", &parties.api[0]]).unwrap();
    std::fs::write(file("voters.txt"), keys).unwrap();
    let prove = |window: &str, out: &str| {
        parties.run(&[
            "trace",
            "prove-usage",
            "--agreement",
            "metered",
            "--window",
            window,
            "--out",
            out,
            "--node",
            &parties.api[2],
        ])
    };
    prove("calls/lifetime", &file("calls.json")).expect("node 2 proves the calls window");
    let verify = |proof: &str| parties.run(&["trace", "verify", "--proof", proof, "--keys", &file("voters.txt")]);
    let verified = verify(&file("calls.json")).expect("the proof of usage verifies offline");
    assert!(
        verified.starts_with(&format!("OK: the {PROVED_CALLS} usage records of metered's limit calls=80/lifetime")),
        "{verified}"
    );
    assert!(verified.contains("sum to at most 80; the amounts are not revealed"), "{verified}");
    let bundle: Value = serde_json::from_str(&std::fs::read_to_string(file("calls.json")).unwrap()).unwrap();
    assert_eq!(bundle["chunks"].as_array().unwrap().len(), 2, "70 records take two chained proofs");
    assert!(!bundle.to_string().contains("\"amount\""), "no amount leaves the node");

    // A record's entry alone, with the commitments its leaf carries.
    let index = bundle["records"][7]["index"].as_u64().unwrap().to_string();
    parties
        .run(&["trace", "prove", "--index", &index, "--out", &file("entry.json"), "--node", &parties.api[0]])
        .unwrap();
    let verified = verify(&file("entry.json")).expect("a usage record's entry is proved like any other");
    assert!(verified.starts_with(&format!("OK: entry {index} (Usage command")), "{verified}");

    // Another limit's window, through the same key.
    prove("bytes_in/day", &file("bytes.json")).expect("node 2 proves the bytes window");
    let verified = verify(&file("bytes.json")).expect("the bytes proof verifies");
    assert!(verified.contains("limit bytes_in=100000/day"), "{verified}");

    // Anything altered fails, with the reason.
    let flip_hex = |text: &str| format!("{}{}", if text.starts_with('0') { '1' } else { '0' }, &text[1..]);
    let altered = |change: &dyn Fn(&mut Value)| {
        let mut copy = bundle.clone();
        change(&mut copy);
        copy
    };
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "a record left out",
            altered(&|b| {
                b["records"].as_array_mut().unwrap().remove(3);
            }),
            "record 4 of the window where record 3 belongs",
        ),
        (
            "the last record left out",
            altered(&|b| {
                b["records"].as_array_mut().unwrap().pop();
            }),
            "the proof of usage",
        ),
        (
            "a record's leaf",
            altered(&|b| {
                use base64::Engine;
                let engine = base64::engine::general_purpose::STANDARD;
                let mut bytes = engine.decode(b["records"][5]["leaf"].as_str().unwrap()).unwrap();
                *bytes.last_mut().unwrap() ^= 1;
                b["records"][5]["leaf"] = json!(engine.encode(bytes));
            }),
            "leaf",
        ),
        (
            "a proof",
            altered(&|b| {
                let proof = b["chunks"][1]["proof"].as_str().unwrap().to_owned();
                b["chunks"][1]["proof"] = json!(flip_hex(&proof));
            }),
            "the proof of usage",
        ),
        (
            "a carried sum",
            altered(&|b| {
                b["chunks"][0]["carry_out"] = b["chunks"][1]["carry_out"].clone();
            }),
            "the proof of usage",
        ),
        (
            "the key's entry",
            altered(&|b| {
                use base64::Engine;
                let engine = base64::engine::general_purpose::STANDARD;
                let mut bytes = engine.decode(b["key"]["payload"].as_str().unwrap()).unwrap();
                let at = bytes.len() - 40;
                bytes[at] ^= 1;
                b["key"]["payload"] = json!(engine.encode(bytes));
            }),
            "the payload was altered",
        ),
    ];
    for (what, tampered, reason) in cases {
        std::fs::write(file("tampered.json"), tampered.to_string()).unwrap();
        let error = verify(&file("tampered.json")).expect_err(what).to_string();
        assert!(error.contains("FAILED") && error.contains(reason), "{what}: {error}");
    }

    // What cannot be proved is refused with what to do.
    let error = prove("fuel/minute", &file("none.json")).unwrap_err().to_string();
    assert!(error.contains("its limits are: calls/lifetime, bytes_in/day"), "{error}");
}
