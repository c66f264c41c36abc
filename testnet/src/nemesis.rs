//! The nemesis: a testnet with authentication under concurrent clients
//! while faults are injected, round after round, then healed, every node
//! killed and restarted, and the recorded history checked.
//!
//! Clients put, read (linearizably) and compare-and-set a few hot memory
//! paths through random nodes; an agent calls `memory_put` under an
//! agreement with a small lifetime limit of calls, each call with an
//! idempotency key. Each round injects one fault or two at once: `kill -9`
//! (then a restart on the same ports, or on new ones), SIGSTOP/SIGCONT, the
//! isolation switch, with the nodes in network namespaces partitions and
//! one-way drops in the kernel, and a wall clock stepped an hour
//! (`--test-clock-file`), of a random node or of the leader. At the end:
//!
//! - every path's history is linearizable ([`crate::linearizable`]);
//! - every acknowledged write is on every node, at its version, with its value;
//! - every kept version's time, in log order, never goes back and stays
//!   near the run's real time;
//! - the agreement never counted more calls than its limit, and counted
//!   exactly the calls that succeeded (calls whose answer never came are
//!   retried with the same idempotency key until their answer is definitive);
//! - every node came back, and all agree on the memories, the membership and
//!   the trace log's root.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};
use zeromesh::client::{ApiClient, ClientError};
use zeromesh_protocol::limits::MAX_HISTORY_VERSIONS_PER_PATH;

use crate::linearizable::{self, Input, Operation, Output, Verdict};
use crate::{cli_as, wait_until, Network, Testnet, TestnetOptions};

/// How long one client operation may take before its outcome counts as unknown.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a harness call to one node (isolate, heal, status) may take.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the mesh may take to recover after a fault is healed.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(60);
/// Hot paths per round. Each round writes its own, so that most versions
/// are still kept at the end, to be checked by value on every node.
const KEYS_PER_ROUND: usize = 4;
/// The agreement's lifetime limit of calls, per round of the run, plus a few.
const CALLS_PER_ROUND: u64 = 4;
/// How long the checker may search one path's history.
const CHECK_TIMEOUT: Duration = Duration::from_secs(120);
/// The agent the nemesis (and the dashboard test) calls as.
pub const AGENT: &str = "meter";
/// Its agreement: `calls=<limit>/lifetime` over `memory_*`.
pub const AGREEMENT: &str = "cap";

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub nodes: usize,
    pub rounds: usize,
    pub seed: u64,
    /// Concurrent memory clients.
    pub clients: usize,
    /// Where the history, the faults, the summary and the node logs go.
    pub out: PathBuf,
    /// With [`Network::Namespaces`], partitions drop packets in the kernel too.
    pub network: Network,
    /// Wall clocks are stepped too (`--test-clock-file`).
    pub clock_steps: bool,
}

/// What a run found.
pub struct Report {
    pub summary: String,
    pub violations: Vec<String>,
}

/// SplitMix64: a seeded generator for the run's choices. (The `rand`
/// crate's feature set in this workspace is its dependents'; adding ours
/// would make the node's own build differ from the test build's.)
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..bound`.
    pub fn below(&mut self, bound: usize) -> usize {
        (self.next_u64() % bound as u64) as usize
    }

    fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.next_u64() % (to - from + 1))
    }
}

/// One client operation as it was seen.
#[derive(Debug, Clone)]
struct Record {
    client: usize,
    node: usize,
    key: String,
    input: Input,
    /// `None`: it failed and changed nothing (a refusal, or a read that got no answer).
    output: Option<Output>,
    error: Option<String>,
    invoked: u64,
    completed: Option<u64>,
}

impl Record {
    fn kind(&self) -> &'static str {
        match self.input {
            Input::Put { .. } => "put",
            Input::Get => "get",
            Input::Cas { .. } => "cas",
        }
    }

    fn outcome(&self) -> &'static str {
        match &self.output {
            None if self.completed.is_none() => "no answer",
            None => "failed",
            Some(Output::Written { .. }) => "written",
            Some(Output::Mismatch { .. }) => "mismatch",
            Some(Output::Found { .. }) => "found",
            Some(Output::Missing) => "missing",
            Some(Output::Unknown) => "unknown",
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "client": self.client, "node": self.node, "key": self.key, "op": self.kind(),
            "input": format!("{:?}", self.input), "output": self.output.as_ref().map(|output| format!("{output:?}")),
            "error": self.error, "invoked_ns": self.invoked, "completed_ns": self.completed,
        })
    }
}

/// How an agent call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Served,
    OverLimit,
    Unknown,
}

/// What the clients share with the nemesis.
struct Shared {
    origin: Instant,
    stop: AtomicBool,
    round: AtomicUsize,
    /// Every node's API address, updated when a node moves.
    apis: RwLock<Vec<String>>,
    admin: String,
    agent_token: String,
    records: Mutex<Vec<Record>>,
    calls: Mutex<Vec<(String, Call)>>,
}

impl Shared {
    fn now(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    fn api(&self, node: usize) -> String {
        self.apis.read().expect("addresses")[node].clone()
    }

    fn node_count(&self) -> usize {
        self.apis.read().expect("addresses").len()
    }
}

fn key_name(round: usize, key: usize) -> String {
    format!("nemesis/r{round}-k{key}")
}

async fn connect(shared: &Shared, node: usize, token: &str) -> Option<ApiClient> {
    let api = shared.api(node);
    let connecting = ApiClient::connect_with(&api, None, Some(token.to_owned()));
    tokio::time::timeout(OPERATION_TIMEOUT, connecting).await.ok()?.ok()
}

/// One memory client: random operations on the round's hot paths through a
/// random node, moving to another node now and then and after any failure.
async fn memory_client(shared: Arc<Shared>, client: usize, mut rng: Rng) {
    let mut connection: Option<(usize, ApiClient)> = None;
    let mut versions: HashMap<String, u64> = HashMap::new();
    let mut sequence = 0u64;
    while !shared.stop.load(Ordering::SeqCst) {
        if connection.is_none() || rng.below(25) == 0 {
            let node = rng.below(shared.node_count());
            match connect(&shared, node, &shared.admin).await {
                Some(api) => connection = Some((node, api)),
                None => {
                    connection = None;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
        }
        let (node, api) = connection.as_mut().expect("connected");
        let node = *node;
        let key = key_name(shared.round.load(Ordering::SeqCst), rng.below(KEYS_PER_ROUND));
        sequence += 1;
        let value = format!("c{client}-{sequence}");
        let expected = versions.get(&key).copied().unwrap_or(0);
        let (input, tool, arguments) = match rng.below(10) {
            0..=3 => (Input::Get, "memory_get", json!({ "path": key, "consistency": "linearizable" })),
            4..=6 => (Input::Put { value: value.clone() }, "memory_put", json!({ "path": key, "value": value })),
            _ => (
                Input::Cas { expected, value: value.clone() },
                "memory_cas",
                json!({ "path": key, "value": value, "expected_version": expected }),
            ),
        };
        let invoked = shared.now();
        let answer = tokio::time::timeout(OPERATION_TIMEOUT, api.call_tool(tool, arguments)).await;
        let completed = shared.now();
        let is_read = input == Input::Get;
        let (output, error, completed) = match answer {
            Ok(Ok(result)) => match read_output(&input, &result) {
                Some(output) => (Some(output), None, Some(completed)),
                None => (None, Some(format!("an answer the nemesis cannot read: {result}")), Some(completed)),
            },
            // A refusal: the tool ran and said nothing was done.
            Ok(Err(ClientError::Tool(message))) => (None, Some(message), Some(completed)),
            Ok(Err(error)) => {
                connection = None;
                if is_read {
                    (None, Some(error.to_string()), Some(completed))
                } else {
                    (Some(Output::Unknown), Some(error.to_string()), None)
                }
            }
            Err(_) => {
                connection = None;
                let error = Some(format!("no answer within {OPERATION_TIMEOUT:?}"));
                if is_read {
                    (None, error, None)
                } else {
                    (Some(Output::Unknown), error, None)
                }
            }
        };
        match &output {
            Some(Output::Written { version }) | Some(Output::Found { version, .. }) => {
                versions.insert(key.clone(), *version);
            }
            Some(Output::Mismatch { current }) => {
                versions.insert(key.clone(), *current);
            }
            _ => {}
        }
        let record = Record { client, node, key, input, output, error, invoked, completed };
        shared.records.lock().expect("records").push(record);
    }
}

fn read_output(input: &Input, result: &Value) -> Option<Output> {
    if *input == Input::Get {
        if result["found"] == false {
            return Some(Output::Missing);
        }
        let record = &result["record"];
        return Some(Output::Found {
            version: record["version"].as_u64()?,
            value: record["value"].as_str()?.to_owned(),
        });
    }
    match result["outcome"].as_str()? {
        "written" => Some(Output::Written { version: result["version"].as_u64()? }),
        "version_mismatch" => Some(Output::Mismatch { current: result["current_version"].as_u64()? }),
        _ => None,
    }
}

/// Calls `memory_put` as the agent under idempotency key `key` through `node`.
async fn agent_call(shared: &Shared, node: usize, key: &str) -> Call {
    let Some(mut api) = connect(shared, node, &shared.agent_token).await else { return Call::Unknown };
    let params = json!({
        "name": "memory_put",
        "arguments": { "path": format!("{AGENT}/calls"), "value": key },
        "_meta": { "zeromesh/idempotency-key": key },
    });
    match tokio::time::timeout(OPERATION_TIMEOUT, api.request("tools/call", params)).await {
        Ok(Ok(result)) if result["isError"] == false => Call::Served,
        Ok(Err(ClientError::Rpc { code: -32004, .. })) => Call::OverLimit,
        _ => Call::Unknown,
    }
}

/// The agent: one call every 150 to 400 ms through a random node.
async fn agent_caller(shared: Arc<Shared>, mut rng: Rng) {
    let mut sequence = 0;
    while !shared.stop.load(Ordering::SeqCst) {
        sequence += 1;
        let key = format!("call-{sequence}");
        let ended = agent_call(&shared, rng.below(shared.node_count()), &key).await;
        shared.calls.lock().expect("calls").push((key, ended));
        tokio::time::sleep(rng.millis(150, 400)).await;
    }
}

/// A fault the nemesis injects for one round.
#[derive(Debug, Clone)]
enum Fault {
    /// `kill -9`, then a restart on the same ports.
    Kill(usize),
    /// `kill -9`, then a restart on new ports.
    Move(usize),
    /// SIGSTOP, then SIGCONT.
    Pause(usize),
    /// Cut off from every other node, both ways, then healed.
    Isolate(usize),
    /// The first paused while the second is cut off.
    PauseAndIsolate(usize, usize),
    /// Packets between these nodes and the rest dropped in the kernel, both ways.
    Partition(Vec<usize>),
    /// Packets to the node (`deaf`) or from it dropped in the kernel: it
    /// still sends but hears nothing, or hears but is not heard.
    OneWay { node: usize, deaf: bool },
    /// A partition while a node on the other side is paused.
    PartitionAndPause(Vec<usize>, usize),
    /// The node's wall clock set an hour ahead (or back), then right again.
    ClockStep { node: usize, ahead: bool },
}

impl Fault {
    fn kind(&self) -> &'static str {
        match self {
            Fault::Kill(_) => "kill -9",
            Fault::Move(_) => "kill -9, restart on new ports",
            Fault::Pause(_) => "pause (SIGSTOP)",
            Fault::Isolate(_) => "isolate",
            Fault::PauseAndIsolate(..) => "pause one + isolate another",
            Fault::Partition(_) => "partition (kernel drops)",
            Fault::OneWay { .. } => "one-way drops",
            Fault::PartitionAndPause(..) => "partition + pause",
            Fault::ClockStep { .. } => "wall clock stepped an hour",
        }
    }
}

/// Node `index`'s answer to `tool`, or an error after [`CONTROL_TIMEOUT`].
async fn control(testnet: &Testnet, index: usize, tool: &str, arguments: Value) -> anyhow::Result<Value> {
    let call = testnet.call(index, tool, arguments);
    Ok(tokio::time::timeout(CONTROL_TIMEOUT, call).await.context("no answer")??)
}

async fn choose_fault(testnet: &Testnet, options: &Options, rng: &mut Rng) -> Fault {
    let nodes = testnet.nodes.len();
    let random = rng.below(nodes);
    // Half the time, aim at the leader.
    let target = match rng.below(2) {
        0 => testnet.leader_seen_by(random).await.unwrap_or(random),
        _ => random,
    };
    let other = (target + 1 + rng.below(nodes - 1)) % nodes;
    // The target alone or with another node: a minority of five.
    let side = if rng.below(2) == 0 { vec![target] } else { vec![target, other] };
    if options.clock_steps && rng.below(8) == 0 {
        return Fault::ClockStep { node: target, ahead: rng.below(2) == 0 };
    }
    let kinds = if options.network == Network::Namespaces { 15 } else { 9 };
    match rng.below(kinds) {
        0 | 1 => Fault::Kill(target),
        2 => Fault::Move(target),
        3 | 4 => Fault::Pause(target),
        5 | 6 => Fault::Isolate(target),
        7 | 8 => Fault::PauseAndIsolate(target, other),
        9 | 10 => Fault::Partition(side),
        11 | 12 => Fault::OneWay { node: target, deaf: rng.below(2) == 0 },
        _ => {
            let across: Vec<usize> = (0..nodes).filter(|node| !side.contains(node)).collect();
            let paused = across[rng.below(across.len())];
            Fault::PartitionAndPause(side, paused)
        }
    }
}

/// Drops packets between `side` and every other node, both ways.
fn partition(testnet: &Testnet, side: &[usize]) -> anyhow::Result<()> {
    for inside in side {
        for outside in (0..testnet.nodes.len()).filter(|node| !side.contains(node)) {
            testnet.drop_packets(*inside, outside)?;
            testnet.drop_packets(outside, *inside)?;
        }
    }
    Ok(())
}

/// Injects `fault`, holds it for `hold`, and undoes it.
async fn inject(testnet: &mut Testnet, shared: &Shared, fault: &Fault, hold: Duration) -> anyhow::Result<()> {
    match *fault {
        Fault::Kill(index) | Fault::Move(index) => {
            testnet.kill9(index).await?;
            tokio::time::sleep(hold).await;
            if matches!(*fault, Fault::Move(_)) {
                testnet.restart_elsewhere(index).await?;
            } else {
                testnet.restart(index).await?;
            }
            shared.apis.write().expect("addresses")[index] = testnet.nodes[index].address.api.clone();
        }
        Fault::Pause(index) => {
            testnet.pause(index)?;
            tokio::time::sleep(hold).await;
            testnet.resume(index)?;
        }
        Fault::Isolate(index) => {
            testnet.isolate(index).await?;
            tokio::time::sleep(hold).await;
            testnet.heal().await?;
        }
        Fault::PauseAndIsolate(paused, isolated) => {
            testnet.isolate(isolated).await?;
            testnet.pause(paused)?;
            tokio::time::sleep(hold).await;
            testnet.resume(paused)?;
            testnet.heal().await?;
        }
        Fault::Partition(ref side) => {
            partition(testnet, side)?;
            tokio::time::sleep(hold).await;
            testnet.heal_network()?;
        }
        Fault::OneWay { node, deaf } => {
            for other in (0..testnet.nodes.len()).filter(|other| *other != node) {
                if deaf {
                    testnet.drop_packets(other, node)?;
                } else {
                    testnet.drop_packets(node, other)?;
                }
            }
            tokio::time::sleep(hold).await;
            testnet.heal_network()?;
        }
        Fault::ClockStep { node, ahead } => {
            testnet.set_clock(node, if ahead { "+1h" } else { "-1h" })?;
            tokio::time::sleep(hold).await;
            testnet.set_clock(node, "+0")?;
        }
        Fault::PartitionAndPause(ref side, paused) => {
            partition(testnet, side)?;
            testnet.pause(paused)?;
            tokio::time::sleep(hold).await;
            testnet.resume(paused)?;
            testnet.heal_network()?;
        }
    }
    Ok(())
}

/// Sets up the agent, its key, the policy and agreement `cap` with a
/// lifetime limit of `limit` calls, through the command line; the agent's token.
pub fn set_up_agreement(testnet: &Testnet, admin: &str, keys: &Path, limit: u64) -> anyhow::Result<String> {
    let run = |args: &[&str]| cli_as(Some(admin), args);
    let key = |party: &str| keys.join(format!("{party}.key")).to_string_lossy().into_owned();
    let public = |party: &str| format!("{}.pub", key(party));
    let api: Vec<String> = testnet.nodes.iter().map(|node| node.address.api.clone()).collect();
    run(&["plugin", "keygen", "--out", &key("provider")])?;
    run(&["plugin", "keygen", "--out", &key("consumer")])?;
    run(&["plugin", "trust", &public("provider"), "--node", &api[0]])?;
    let consumer = public("consumer");
    run(&["agent", "spawn", AGENT, "--owner", "nemesis", "--tool", "memory_*", "--key", &consumer, "--node", &api[0]])?;
    let policies = keys.join("policies.cedar");
    std::fs::write(&policies, r#"@id("agents-may-call") permit(principal, action, resource);"#)?;
    run(&["policy", "set", &policies.to_string_lossy(), "--node", &api[0]])?;
    let provider = public("provider");
    let limit = format!("calls={limit}/lifetime");
    run(&[
        "agreement",
        "create",
        AGREEMENT,
        "--consumer",
        AGENT,
        "--provider",
        &provider,
        "--tool",
        "memory_*",
        "--expires-in",
        "24h",
        "--limit",
        &limit,
        "--node",
        &api[0],
    ])?;
    run(&["agreement", "sign", AGREEMENT, "--key", &key("consumer"), "--node", &api[0]])?;
    run(&["agreement", "sign", AGREEMENT, "--key", &key("provider"), "--node", &api[0]])?;
    run(&["agreement", "activate", AGREEMENT, "--node", &api[0]])?;
    Ok(run(&["token", "create", "--role", "agent", "--agent", AGENT, "--node", &api[0]])?.trim().to_owned())
}

/// Runs the nemesis as `options` say.
pub async fn run(options: &Options) -> anyhow::Result<Report> {
    anyhow::ensure!(options.nodes >= 3, "the nemesis needs at least 3 nodes");
    std::fs::create_dir_all(&options.out)?;
    let started = Instant::now();
    let testnet_options =
        TestnetOptions { auth: true, network: options.network, clock_steps: options.clock_steps, ..Default::default() };
    let mut testnet = Testnet::start(options.nodes, testnet_options).await?;
    let run = run_on(&mut testnet, options, started).await;
    save_logs(&options.out, &testnet)?;
    run.with_context(|| format!("node logs in {}", options.out.display()))
}

async fn run_on(testnet: &mut Testnet, options: &Options, started: Instant) -> anyhow::Result<Report> {
    let started_wall_ms = wall_ms();
    let mut rng = Rng::new(options.seed);
    let admin = testnet.admin_token.clone().context("node 0 printed no admin token")?;
    let keys = tempfile::tempdir()?;
    let limit = CALLS_PER_ROUND * options.rounds as u64 + 6;
    let agent_token = set_up_agreement(testnet, &admin, keys.path(), limit)?;
    for index in 0..testnet.nodes.len() {
        wait_until(&format!("node {index} to hold the agreement active"), RECOVERY_TIMEOUT, || async {
            let shown = control(testnet, index, "agreement_show", json!({ "id": AGREEMENT })).await.ok()?;
            (shown["state"] == "active").then_some(())
        })
        .await?;
    }

    let shared = Arc::new(Shared {
        origin: Instant::now(),
        stop: AtomicBool::new(false),
        round: AtomicUsize::new(0),
        apis: RwLock::new(testnet.nodes.iter().map(|node| node.address.api.clone()).collect()),
        admin,
        agent_token,
        records: Mutex::new(Vec::new()),
        calls: Mutex::new(Vec::new()),
    });
    let mut workers = Vec::new();
    for client in 0..options.clients {
        let rng = Rng::new(options.seed ^ (client as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d));
        workers.push(tokio::spawn(memory_client(shared.clone(), client, rng)));
    }
    workers.push(tokio::spawn(agent_caller(shared.clone(), Rng::new(options.seed.rotate_left(17)))));

    let mut violations = Vec::new();
    let mut faults: Vec<(usize, Fault, Duration)> = Vec::new();
    let mut fault_log = String::new();
    for round in 0..options.rounds {
        shared.round.store(round, Ordering::SeqCst);
        tokio::time::sleep(rng.millis(1000, 2000)).await;
        let fault = choose_fault(testnet, options, &mut rng).await;
        let hold = rng.millis(2000, 6000);
        let at = started.elapsed();
        inject(testnet, &shared, &fault, hold).await.with_context(|| format!("round {round}: {fault:?}"))?;
        writeln!(
            fault_log,
            "{}",
            json!({ "round": round, "at_ms": at.as_millis() as u64, "fault": format!("{fault:?}"), "hold_ms": hold.as_millis() as u64 })
        )?;
        let recovered = testnet.leader(RECOVERY_TIMEOUT).await;
        if let Err(error) = recovered {
            violations.push(format!(
                "round {round}: no leader agreed within {RECOVERY_TIMEOUT:?} of healing {fault:?}: {error:#}"
            ));
            faults.push((round, fault, hold));
            break;
        }
        eprintln!("nemesis: round {round}: {fault:?} for {hold:?}, recovered ({:.0?} elapsed)", started.elapsed());
        faults.push((round, fault, hold));
    }
    shared.stop.store(true, Ordering::SeqCst);
    for worker in workers {
        worker.await?;
    }

    // Calls whose answer never came: the same key again until the answer is definitive.
    let unknown_calls: Vec<String> = {
        let calls = shared.calls.lock().expect("calls");
        calls.iter().filter(|(_, call)| *call == Call::Unknown).map(|(key, _)| key.clone()).collect()
    };
    for key in &unknown_calls {
        let mut node = 0;
        let ended = wait_until(&format!("a definitive answer to agent call {key}"), RECOVERY_TIMEOUT, || {
            node += 1;
            let (shared, node) = (&shared, node % options.nodes);
            async move { Some(agent_call(shared, node, key).await).filter(|ended| *ended != Call::Unknown) }
        })
        .await;
        match ended {
            Ok(ended) => {
                let mut calls = shared.calls.lock().expect("calls");
                calls.iter_mut().filter(|(called, _)| called == key).for_each(|(_, call)| *call = ended);
            }
            Err(error) => violations.push(format!("{error:#}")),
        }
    }

    // Every node killed at once, then every node restarted.
    for index in 0..testnet.nodes.len() {
        testnet.kill9(index).await?;
    }
    for index in 0..testnet.nodes.len() {
        testnet.restart(index).await?;
    }
    let converged = converge(testnet).await;
    if let Err(error) = &converged {
        violations.push(format!("after the final restart: {error:#}"));
    }

    let records = shared.records.lock().expect("records").clone();
    let calls = shared.calls.lock().expect("calls").clone();
    let mut verdicts = Vec::new();
    verdicts.push(check_linearizable(&records, &mut violations).await);
    if converged.is_ok() {
        verdicts.push(check_acknowledged(testnet, &records, &mut violations).await);
        verdicts.push(check_entry_times(testnet, started_wall_ms, &mut violations).await);
        verdicts.push(check_usage(testnet, &calls, limit, &mut violations).await);
        verdicts.push(check_same_state(testnet, &mut violations).await);
    }

    let summary = summarise(options, started.elapsed(), &records, &calls, &faults, &verdicts, &violations);
    save(&options.out, &records, &fault_log, &summary)?;
    Ok(Report { summary, violations })
}

/// Waits until every node answers, all agree on the leader, the membership
/// and the trace log's size and root.
async fn converge(testnet: &Testnet) -> anyhow::Result<()> {
    testnet.leader(RECOVERY_TIMEOUT).await?;
    let nodes = testnet.nodes.len();
    wait_until("every node to agree on the membership and the trace root", RECOVERY_TIMEOUT, || async move {
        let mut seen = None;
        for index in 0..nodes {
            let status = control(testnet, index, "cluster_status", json!({})).await.ok()?;
            let members = status["members"].as_array()?.len();
            let view = (
                status["voters"].clone(),
                status["non_voters"].clone(),
                status["trace"]["size"].clone(),
                status["trace"]["root"].clone(),
            );
            if members != nodes || seen.as_ref().is_some_and(|seen| *seen != view) {
                return None;
            }
            seen = Some(view);
        }
        Some(())
    })
    .await
}

/// Every path's history, checked for linearizability.
async fn check_linearizable(records: &[Record], violations: &mut Vec<String>) -> String {
    let mut by_key: BTreeMap<String, Vec<(usize, Operation)>> = BTreeMap::new();
    for (index, record) in records.iter().enumerate() {
        let Some(output) = record.output.clone() else { continue };
        let operation = Operation {
            client: record.client,
            input: record.input.clone(),
            output,
            invoked: record.invoked,
            completed: record.completed,
        };
        by_key.entry(record.key.clone()).or_default().push((index, operation));
    }
    let keys = by_key.len();
    let started = Instant::now();
    let checked = tokio::task::spawn_blocking(move || {
        by_key
            .into_iter()
            .map(|(key, operations)| {
                let history: Vec<Operation> = operations.iter().map(|(_, operation)| operation.clone()).collect();
                let verdict = linearizable::check(&history, Instant::now() + CHECK_TIMEOUT);
                let indices: Vec<usize> = operations.iter().map(|(index, _)| *index).collect();
                (key, verdict, indices)
            })
            .collect::<Vec<_>>()
    })
    .await
    .expect("the checker ran");
    let mut failed = 0;
    for (key, verdict, indices) in checked {
        match verdict {
            Verdict::Linearizable => {}
            Verdict::Inconclusive => {
                failed += 1;
                violations.push(format!("{key}: the checker gave up after {CHECK_TIMEOUT:?}"));
            }
            Verdict::Violation { stuck, explained } => {
                failed += 1;
                let shown: Vec<String> =
                    explained.iter().rev().take(5).rev().map(|index| describe(&records[indices[*index]])).collect();
                violations.push(format!(
                    "{key} is not linearizable: no order places {} after the longest explained prefix of {} operations, ending {}",
                    describe(&records[indices[stuck]]),
                    explained.len(),
                    shown.join("; ")
                ));
            }
        }
    }
    let verdict = if failed == 0 { "PASS" } else { "FAIL" };
    format!("linearizable: {verdict} ({keys} paths, {failed} failed, checked in {:.1?})", started.elapsed())
}

fn describe(record: &Record) -> String {
    format!(
        "client {} via node {}: {:?} -> {:?} [{:.3} s, {}]",
        record.client,
        record.node,
        record.input,
        record.output,
        record.invoked as f64 / 1e9,
        record.completed.map_or("no answer".into(), |completed| format!("{:.3} s", completed as f64 / 1e9))
    )
}

/// Every acknowledged write, on every node, at its version with its value.
async fn check_acknowledged(testnet: &Testnet, records: &[Record], violations: &mut Vec<String>) -> String {
    let mut acknowledged: BTreeMap<&str, Vec<(u64, &str)>> = BTreeMap::new();
    for record in records {
        if let (Some(Output::Written { version }), Input::Put { value } | Input::Cas { value, .. }) =
            (&record.output, &record.input)
        {
            acknowledged.entry(record.key.as_str()).or_default().push((*version, value.as_str()));
        }
    }
    let (mut checked, mut superseded, mut missing) = (0, 0, 0);
    for index in 0..testnet.nodes.len() {
        for (key, writes) in &acknowledged {
            let arguments = json!({ "path": key, "limit": 1000, "consistency": "stale" });
            let kept = match control(testnet, index, "memory_history", arguments).await {
                Ok(kept) => kept,
                Err(error) => {
                    violations.push(format!("node {index} could not list {key}'s versions: {error:#}"));
                    continue;
                }
            };
            let versions: HashMap<u64, String> = kept["records"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|record| Some((record["version"].as_u64()?, record["value"].as_str()?.to_owned())))
                .collect();
            let newest = versions.keys().max().copied().unwrap_or(0);
            for (version, value) in writes {
                if *version > newest {
                    missing += 1;
                    violations.push(format!(
                        "node {index}: {key} has {newest} versions, yet version {version} ({value:?}) was acknowledged"
                    ));
                } else if version + MAX_HISTORY_VERSIONS_PER_PATH <= newest {
                    // Dropped by design, newer versions being there.
                    superseded += 1;
                } else if versions.get(version).map(String::as_str) != Some(*value) {
                    missing += 1;
                    violations.push(format!(
                        "node {index}: {key} version {version} should hold {value:?} (acknowledged), holds {:?}",
                        versions.get(version)
                    ));
                } else {
                    checked += 1;
                }
            }
        }
    }
    let verdict = if missing == 0 { "PASS" } else { "FAIL" };
    format!(
        "acknowledged writes on every node: {verdict} ({checked} found by value, {superseded} older than the \
         {MAX_HISTORY_VERSIONS_PER_PATH} versions kept yet superseded, {missing} missing)"
    )
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_millis() as u64)
}

/// How far an entry's time may be from the real time of the run (ms): the
/// slew toward a stepped clock (1% of a few seconds) and scheduling.
const ENTRY_TIME_SLACK_MS: u64 = 10_000;

/// Every kept version's time, in log order, never goes back and lies within
/// the run's real time, whatever the nodes' clocks did.
async fn check_entry_times(testnet: &Testnet, started_ms: u64, violations: &mut Vec<String>) -> String {
    let before = violations.len();
    let mut times: Vec<(u64, u64)> = Vec::new();
    let memories = list_memories(testnet, 0).await.unwrap_or_else(|error| {
        violations.push(format!("{error:#}"));
        Vec::new()
    });
    for record in memories {
        let arguments = json!({ "path": record["path"], "limit": 1000, "consistency": "stale" });
        let Ok(kept) = control(testnet, 0, "memory_history", arguments).await else {
            violations.push(format!("node 0 could not list {}'s versions", record["path"]));
            continue;
        };
        times.extend(
            kept["records"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|version| Some((version["log_index"].as_u64()?, version["written_at_ms"].as_u64()?))),
        );
    }
    times.sort_unstable();
    let (earliest, latest) = (started_ms - ENTRY_TIME_SLACK_MS, wall_ms() + ENTRY_TIME_SLACK_MS);
    if let Some(pair) = times.windows(2).find(|pair| pair[1].1 < pair[0].1) {
        violations.push(format!(
            "entry {} was stamped {} ms, before entry {} ({} ms)",
            pair[1].0, pair[1].1, pair[0].0, pair[0].1
        ));
    }
    if let Some((index, at)) = times.iter().find(|(_, at)| !(earliest..=latest).contains(at)) {
        violations
            .push(format!("entry {index} was stamped {at} ms, outside the run's real time {earliest}..{latest} ms"));
    }
    let verdict = if violations.len() == before { "PASS" } else { "FAIL" };
    format!("entry times never go back and stay near real time: {verdict} ({} versions)", times.len())
}

/// The agreement's usage: the same on every node, within the limit, and
/// equal to the calls served.
async fn check_usage(testnet: &Testnet, calls: &[(String, Call)], limit: u64, violations: &mut Vec<String>) -> String {
    let served = calls.iter().filter(|(_, call)| *call == Call::Served).count() as u64;
    let before = violations.len();
    if served > limit {
        violations.push(format!("{served} agent calls were served under a limit of {limit}"));
    }
    let mut used_seen = Vec::new();
    for index in 0..testnet.nodes.len() {
        let usage = control(testnet, index, "agreement_usage", json!({ "id": AGREEMENT })).await;
        match usage.ok().and_then(|usage| usage["limits"][0]["used"].as_u64()) {
            Some(used) => {
                used_seen.push(used);
                if used > limit || used != served {
                    violations
                        .push(format!("node {index} counts {used} calls: {served} were served, the limit is {limit}"));
                }
            }
            None => violations.push(format!("node {index} did not show the agreement's usage")),
        }
    }
    let verdict = if violations.len() == before { "PASS" } else { "FAIL" };
    format!("agreement usage: {verdict} ({served} calls served, limit {limit}, counted {used_seen:?} by the nodes)")
}

/// Every live memory in node `index`'s applied state, page after page.
async fn list_memories(testnet: &Testnet, index: usize) -> anyhow::Result<Vec<Value>> {
    let mut memories = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let arguments = json!({ "prefix": "", "after": after, "limit": 1000, "consistency": "stale" });
        let page = control(testnet, index, "memory_list", arguments)
            .await
            .with_context(|| format!("node {index} could not list its memories"))?;
        memories.extend(page["records"].as_array().into_iter().flatten().cloned());
        match page["next_cursor"].as_str() {
            Some(cursor) => after = Some(cursor.to_owned()),
            None => return Ok(memories),
        }
    }
}

/// Every node holds the same memories (paths, versions, values, log indices).
async fn check_same_state(testnet: &Testnet, violations: &mut Vec<String>) -> String {
    let mut listings = Vec::new();
    for index in 0..testnet.nodes.len() {
        let memories = list_memories(testnet, index).await.unwrap_or_else(|error| {
            violations.push(format!("{error:#}"));
            Vec::new()
        });
        let listing: Vec<_> = memories
            .iter()
            .map(|record| {
                (
                    record["path"].clone(),
                    record["version"].clone(),
                    record["value"].clone(),
                    record["log_index"].clone(),
                )
            })
            .collect();
        listings.push(listing);
    }
    let differing: Vec<usize> = (1..listings.len()).filter(|index| listings[*index] != listings[0]).collect();
    for index in &differing {
        violations.push(format!("node {index}'s memories differ from node 0's"));
    }
    let verdict = if differing.is_empty() { "PASS" } else { "FAIL" };
    format!(
        "same state, membership and trace root on every node: {verdict} ({} memories each)",
        listings.first().map_or(0, Vec::len)
    )
}

fn summarise(
    options: &Options,
    elapsed: Duration,
    records: &[Record],
    calls: &[(String, Call)],
    faults: &[(usize, Fault, Duration)],
    verdicts: &[String],
    violations: &[String],
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "nemesis: {} nodes ({:?}), {} rounds, {} clients, seed {}, {:.0?}",
        options.nodes, options.network, options.rounds, options.clients, options.seed, elapsed
    );
    let mut by_kind: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for record in records {
        *by_kind.entry((record.kind(), record.outcome())).or_default() += 1;
    }
    let _ = writeln!(out, "operations: {}", records.len());
    for kind in ["put", "get", "cas"] {
        let outcomes: Vec<String> = by_kind
            .iter()
            .filter(|((of, _), _)| *of == kind)
            .map(|((_, outcome), count)| format!("{count} {outcome}"))
            .collect();
        let _ = writeln!(out, "  {kind}: {}", outcomes.join(", "));
    }
    let count = |wanted: Call| calls.iter().filter(|(_, call)| *call == wanted).count();
    let _ = writeln!(
        out,
        "  agent calls: {} served, {} over the limit, {} unresolved",
        count(Call::Served),
        count(Call::OverLimit),
        count(Call::Unknown)
    );
    let mut by_fault: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, fault, _) in faults {
        *by_fault.entry(fault.kind()).or_default() += 1;
    }
    let shown: Vec<String> = by_fault.iter().map(|(kind, count)| format!("{count} {kind}")).collect();
    let _ = writeln!(out, "faults: {} ({}), then every node killed and restarted", faults.len(), shown.join(", "));
    for verdict in verdicts {
        let _ = writeln!(out, "{verdict}");
    }
    if violations.is_empty() {
        let _ = writeln!(out, "verdict: no violation");
    } else {
        let _ = writeln!(out, "verdict: {} violation(s):", violations.len());
        for violation in violations {
            let _ = writeln!(out, "  {violation}");
        }
    }
    let _ = writeln!(out, "history, faults and node logs: {}", options.out.display());
    out
}

fn save(out: &Path, records: &[Record], faults: &str, summary: &str) -> anyhow::Result<()> {
    let history: String = records.iter().map(|record| format!("{}\n", record.to_json())).collect();
    std::fs::write(out.join("history.jsonl"), history)?;
    std::fs::write(out.join("faults.jsonl"), faults)?;
    std::fs::write(out.join("summary.txt"), summary)?;
    Ok(())
}

fn save_logs(out: &Path, testnet: &Testnet) -> anyhow::Result<()> {
    for (index, node) in testnet.nodes.iter().enumerate() {
        let log = node.data_dir.join("node.log");
        if log.exists() {
            std::fs::copy(&log, out.join(format!("node-{index}.log")))?;
        }
    }
    Ok(())
}
