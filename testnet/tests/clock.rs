//! Clocks that jump: three node processes, the leader's wall clock set back
//! an hour, then forward an hour (`--test-clock-file`), then the leader
//! killed with every other clock an hour behind. The time stamped into each
//! write (a memory's `written_at_ms`) never goes back, keeps moving, and
//! stays within seconds of real time throughout.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use zeromesh_testnet::{Testnet, TestnetOptions};

const WAIT: Duration = Duration::from_secs(60);
/// How far a stamp may be from real time: the slew toward a stepped clock
/// (a quarter of the seconds a phase lasts) plus scheduling.
const SANE_MS: i64 = 5_000;

fn real_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Writes through node `node` and reads back the time it was stamped at,
/// with the real time the answer came.
async fn stamped(testnet: &Testnet, node: usize, value: &str) -> Option<(i64, i64)> {
    testnet.call(node, "memory_put", json!({ "path": "clock/t", "value": value })).await.ok()?;
    let read = testnet.call(node, "memory_get", json!({ "path": "clock/t" })).await.ok()?;
    (read["record"]["value"] == value).then(|| (read["record"]["written_at_ms"].as_i64().unwrap(), real_ms()))
}

/// Writes through `node` for `seconds` of real time, once the leader's log
/// says it saw its clock stepped (the offset is read within a second); the
/// stamps and real times.
async fn phase(testnet: &Testnet, node: usize, leader: usize, seconds: i64, label: &str) -> Vec<(i64, i64)> {
    let warnings =
        |testnet: &Testnet| testnet.nodes[leader].log_tail(1_000).matches("the wall clock was stepped").count();
    let before = warnings(testnet);
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while warnings(testnet) == before {
        assert!(tokio::time::Instant::now() < deadline, "{label}: the leader never saw its clock stepped");
        seen.extend(stamped(testnet, node, &format!("{label}-{}", seen.len())).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let start = real_ms();
    while real_ms() - start < seconds * 1000 {
        seen.extend(stamped(testnet, node, &format!("{label}-{}", seen.len())).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    seen
}

fn check(stamps: &[(i64, i64)], label: &str) {
    assert!(stamps.len() >= 10, "{label}: too few writes: {stamps:?}");
    for pair in stamps.windows(2) {
        assert!(pair[1].0 >= pair[0].0, "{label}: a stamp went back: {stamps:?}");
    }
    for (stamp, real) in stamps {
        assert!((stamp - real).abs() <= SANE_MS, "{label}: stamped {stamp} at real time {real}: {stamps:?}");
    }
    let (first, last) = (stamps[0], stamps[stamps.len() - 1]);
    let (moved, elapsed) = (last.0 - first.0, last.1 - first.1);
    assert!(moved * 2 >= elapsed, "{label}: stamps moved {moved} ms in {elapsed} ms: {stamps:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stamps_stay_monotonic_and_near_real_time_when_the_leaders_clock_jumps() {
    let options = TestnetOptions { clock_steps: true, ..Default::default() };
    let mut testnet = Testnet::start(3, options).await.expect("a testnet with clock steps starts");
    let leader = testnet.leader(WAIT).await.unwrap();
    let first = stamped(&testnet, leader, "start").await.expect("a first write");
    assert!((first.0 - first.1).abs() <= SANE_MS, "an unstepped clock is followed: {first:?}");

    testnet.set_clock(leader, "-1h").unwrap();
    let back = phase(&testnet, leader, leader, 4, "back").await;
    check(&[vec![first], back.clone()].concat(), "the leader's clock an hour back");

    testnet.set_clock(leader, "+1h").unwrap();
    let forward = phase(&testnet, leader, leader, 4, "forward").await;
    check(&[back.clone(), forward.clone()].concat(), "the leader's clock an hour ahead");

    // Every other clock an hour behind, and the leader gone: the next leader
    // goes on from the time applied.
    for other in (0..3).filter(|node| *node != leader) {
        testnet.set_clock(other, "-1h").unwrap();
    }
    testnet.kill9(leader).await.unwrap();
    let next = testnet.leader(WAIT).await.unwrap();
    let after = phase(&testnet, next, next, 4, "new leader").await;
    check(&[forward, after].concat(), "a new leader an hour behind");
}
