//! Network namespaces for a testnet whose nodes must be partitioned for
//! real: each node gets a namespace of its own with one interface on a
//! bridge the testnet creates (`zmbr<N>`, 10.213.N.1/24, N the first free
//! subnet), and a partition drops packets in the receiving node's kernel
//! (`iptables -A INPUT -s <sender> -j DROP` in its namespace), so the
//! sender sees silence, not an error. The harness, in the host's namespace,
//! reaches every node through the bridge whatever is cut between nodes.
//! Needs root, `ip` (iproute2) and `iptables`; everything is removed on drop.

use std::process::Command;

use anyhow::{bail, Context};

/// The namespaces and bridge of one testnet.
pub(crate) struct Namespaces {
    subnet: u8,
    bridge: String,
    names: Vec<String>,
}

fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new(program).args(args).output().with_context(|| format!("running {program}"))?;
    if !output.status.success() {
        bail!("{program} {} failed: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(())
}

/// Whether this process can create namespaces and drop packets in them.
pub fn available() -> bool {
    let root = Command::new("id").arg("-u").output().is_ok_and(|output| output.stdout.trim_ascii() == b"0");
    root && run("ip", &["-V"]).is_ok() && run("iptables", &["-V"]).is_ok()
}

impl Namespaces {
    /// Creates the bridge on the first subnet no other testnet holds.
    pub(crate) fn create() -> anyhow::Result<Namespaces> {
        for subnet in 1..=254u8 {
            let bridge = format!("zmbr{subnet}");
            // Creation fails when another testnet holds the name: the kernel arbitrates.
            if run("ip", &["link", "add", &bridge, "type", "bridge"]).is_err() {
                continue;
            }
            let namespaces = Namespaces { subnet, bridge, names: Vec::new() };
            run("ip", &["addr", "add", &format!("10.213.{subnet}.1/24"), "dev", &namespaces.bridge])?;
            run("ip", &["link", "set", &namespaces.bridge, "up"])?;
            return Ok(namespaces);
        }
        bail!("no free subnet 10.213.N.0/24 for a testnet bridge (stale zmbr<N> bridges? `ip link del zmbr<N>`)")
    }

    /// Node `index`'s address.
    pub(crate) fn ip(&self, index: usize) -> String {
        format!("10.213.{}.{}", self.subnet, index + 2)
    }

    fn name(&self, index: usize) -> &str {
        &self.names[index]
    }

    /// Creates node `index`'s namespace (the next one), on the bridge.
    pub(crate) fn add(&mut self, index: usize) -> anyhow::Result<()> {
        anyhow::ensure!(index == self.names.len() && index < 250, "namespaces are added in order, at most 250");
        let name = format!("zm{}n{index}", self.subnet);
        let _ = run("ip", &["netns", "del", &name]); // a stale one from a run that crashed
        run("ip", &["netns", "add", &name])?;
        self.names.push(name.clone());
        let host_end = self.host_end(index);
        // A pair left by a testnet whose processes had not exited yet when
        // it was dropped (its namespace lives until they do).
        let _ = run("ip", &["link", "del", &host_end]);
        run("ip", &["link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", &name])?;
        run("ip", &["link", "set", &host_end, "master", &self.bridge, "up"])?;
        run("ip", &["-n", &name, "addr", "add", &format!("{}/24", self.ip(index)), "dev", "eth0"])?;
        run("ip", &["-n", &name, "link", "set", "eth0", "up"])?;
        run("ip", &["-n", &name, "link", "set", "lo", "up"])
    }

    /// The host's end of node `index`'s veth pair.
    fn host_end(&self, index: usize) -> String {
        format!("zm{}v{index}", self.subnet)
    }

    /// A command that runs `program` inside node `index`'s namespace (`ip
    /// netns exec` execs it: the child's pid is the program's).
    pub(crate) fn command(&self, index: usize, program: &std::path::Path) -> tokio::process::Command {
        let mut command = tokio::process::Command::new("ip");
        command.args(["netns", "exec", self.name(index)]).arg(program);
        command
    }

    /// Drops every packet from node `from` arriving at node `to`.
    pub(crate) fn drop_packets(&self, from: usize, to: usize) -> anyhow::Result<()> {
        let source = self.ip(from);
        run("ip", &["netns", "exec", self.name(to), "iptables", "-w", "-A", "INPUT", "-s", &source, "-j", "DROP"])
    }

    /// Removes every drop.
    pub(crate) fn heal(&self) -> anyhow::Result<()> {
        for name in &self.names {
            run("ip", &["netns", "exec", name, "iptables", "-w", "-F", "INPUT"])?;
        }
        Ok(())
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        // A namespace outlives its name while a killed node is still exiting:
        // delete each pair from the host's end, which takes both ends at once.
        for (index, name) in self.names.iter().enumerate() {
            let _ = run("ip", &["link", "del", &self.host_end(index)]);
            let _ = run("ip", &["netns", "del", name]);
        }
        let _ = run("ip", &["link", "del", &self.bridge]);
    }
}
