//! A short run of the nemesis (`scripts/nemesis.sh` runs long ones): five
//! rounds of faults on five node processes under concurrent clients, then
//! every check of `zeromesh_testnet::nemesis` passes. The seed is random
//! each run (printed; `ZEROMESH_NEMESIS_SEED` replays one's choices).

use zeromesh_testnet::nemesis::{self, Options};
use zeromesh_testnet::Network;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_nemesis_run_finds_no_violation() {
    let seed = match std::env::var("ZEROMESH_NEMESIS_SEED") {
        Ok(seed) => seed.parse().expect("ZEROMESH_NEMESIS_SEED is a number"),
        Err(_) => {
            let mut bytes = [0; 8];
            getrandom::fill(&mut bytes).unwrap();
            u64::from_le_bytes(bytes)
        }
    };
    let out = std::env::temp_dir().join(format!("zeromesh-nemesis-test-{seed}"));
    // Kernel partitions where this machine allows them (scripts/setup.sh installs iptables).
    let network = if Network::namespaces_available() { Network::Namespaces } else { Network::Loopback };
    let options = Options { nodes: 5, rounds: 5, clients: 6, seed, out: out.clone(), network, clock_steps: true };
    eprintln!("nemesis seed {seed}, {network:?}");
    let report = nemesis::run(&options).await.expect("the nemesis run finishes");
    eprintln!("{}", report.summary);
    assert!(report.violations.is_empty(), "the nemesis found violations (seed {seed}):\n{}", report.summary);
    assert!(report.summary.contains("linearizable: PASS"), "{}", report.summary);
    std::fs::remove_dir_all(&out).unwrap();
}
