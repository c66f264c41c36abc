//! `nemesis [--rounds N] [--nodes N] [--clients N] [--seed S] [--out DIR]
//! [--network namespaces|loopback]`:
//! runs the nemesis (see `zeromesh_testnet::nemesis`), prints its summary,
//! and exits 1 on any violation (2 when the run itself could not finish).

use std::path::PathBuf;

use clap::Parser;
use zeromesh_testnet::nemesis::{self, Options};
use zeromesh_testnet::Network;

/// Faults injected into a local mesh under concurrent clients, the history checked.
#[derive(Parser)]
struct Args {
    /// Rounds of faults.
    #[arg(long, default_value_t = 10)]
    rounds: usize,
    /// Nodes of the mesh (3 voters, the rest non-voting members).
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    /// Concurrent memory clients.
    #[arg(long, default_value_t = 6)]
    clients: usize,
    /// The seed of the run's choices; random when absent.
    #[arg(long)]
    seed: Option<u64>,
    /// Where the history, faults, summary and node logs are saved.
    #[arg(long)]
    out: Option<PathBuf>,
    /// `namespaces` (each node in a network namespace of its own, so that
    /// partitions drop packets in the kernel; needs root, ip and iptables)
    /// or `loopback`. Default: namespaces where they can be made.
    #[arg(long, value_parser = ["namespaces", "loopback"])]
    network: Option<String>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(|| {
        let mut bytes = [0; 8];
        getrandom::fill(&mut bytes).expect("the system's random source");
        u64::from_le_bytes(bytes)
    });
    let out = args.out.unwrap_or_else(|| std::env::temp_dir().join(format!("zeromesh-nemesis-{seed}")));
    let network = match args.network.as_deref() {
        Some("loopback") => Network::Loopback,
        Some(_) => Network::Namespaces,
        None if Network::namespaces_available() => Network::Namespaces,
        None => {
            eprintln!("nemesis: not root, or no ip/iptables: nodes share the loopback, no kernel partitions");
            Network::Loopback
        }
    };
    let options = Options {
        nodes: args.nodes,
        rounds: args.rounds,
        clients: args.clients,
        seed,
        out,
        network,
        clock_steps: true,
    };
    eprintln!("nemesis: seed {seed}, {network:?}, saving to {}", options.out.display());
    match nemesis::run(&options).await {
        Ok(report) => {
            print!("{}", report.summary);
            std::process::exit(if report.violations.is_empty() { 0 } else { 1 });
        }
        Err(error) => {
            eprintln!("nemesis: the run could not finish: {error:#}");
            std::process::exit(2);
        }
    }
}
