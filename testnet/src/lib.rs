//! A local testnet of real `zeromesh run` processes on 127.0.0.1, for
//! integration tests, demos and benchmarks: start N nodes (the first
//! initialises, the rest join through it), add nodes, `kill -9` and restart
//! them, and cut nodes off from each other through the test-only
//! isolate/heal switch (nodes are started with `--test-faults`).
//!
//! Every wait has a deadline; nothing sleeps to hide a race.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use zeromesh::client::{ApiClient, ClientError};

pub mod linearizable;
pub mod nemesis;
mod netns;
pub mod parties;

/// How long a node may take to print its `ready` line.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// What a node printed when it was ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAddress {
    pub node_id: u64,
    pub peer_id: String,
    pub p2p: String,
    pub api: String,
}

/// One node process of the testnet.
pub struct TestNode {
    pub data_dir: PathBuf,
    pub address: NodeAddress,
    extra_args: Vec<String>,
    child: Option<Child>,
}

impl TestNode {
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// The node's log (its stderr), for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.data_dir.join("node.log")).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// Settings every node of a testnet is started with.
#[derive(Debug, Clone, Default)]
pub struct TestnetOptions {
    /// Extra `zeromesh run` flags for every node.
    pub args: Vec<String>,
    /// Run with API authentication on; otherwise nodes get `--dev`. With it,
    /// the harness's own clients use the admin token node 0 printed.
    pub auth: bool,
    /// Another `zeromesh` binary to run (a benchmark's baseline build);
    /// otherwise [`zeromesh_binary`].
    pub binary: Option<PathBuf>,
    /// Where the nodes' sockets are.
    pub network: Network,
    /// Extra environment variables for every node (`ZEROMESH_LOG`, say).
    pub env: Vec<(String, String)>,
    /// Gives every node a clock file (`--test-clock-file`), so that
    /// [`Testnet::set_clock`] can step its wall clock (not its monotonic one).
    pub clock_steps: bool,
    /// Starts node 0 with `zeromesh restore <backup> --init` rather than
    /// `run --init`: a new cluster holding a backup's state.
    pub restore: Option<RestoreFrom>,
}

/// A backup to start a testnet from, and the admin token it holds.
#[derive(Debug, Clone)]
pub struct RestoreFrom {
    pub backup: PathBuf,
    pub admin_token: String,
}

/// Where a testnet's nodes listen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Network {
    /// All on 127.0.0.1.
    #[default]
    Loopback,
    /// Each node in a network namespace of its own, on a bridge the testnet
    /// creates, so that packets between nodes can be dropped in the kernel
    /// ([`Testnet::drop_packets`]). Needs root, `ip` and `iptables`
    /// ([`Network::namespaces_available`]).
    Namespaces,
}

impl Network {
    /// Whether [`Network::Namespaces`] can be used here.
    pub fn namespaces_available() -> bool {
        netns::available()
    }
}

/// A running local testnet. Dropping it kills every node.
pub struct Testnet {
    dir: tempfile::TempDir,
    binary: PathBuf,
    options: TestnetOptions,
    pub join_token: String,
    /// The first admin token, printed once by node 0.
    pub admin_token: Option<String>,
    pub nodes: Vec<TestNode>,
    /// Dropped after the nodes: their processes are killed first.
    namespaces: Option<netns::Namespaces>,
}

/// This package's folder in the checkout under test: `CARGO_MANIFEST_DIR` as
/// cargo or nextest sets it when running a test or bench, else where the
/// binary was built. The build directory is shared by every clone on a
/// machine, so a binary may have been built in another clone of the same
/// commit, since gone.
pub fn package_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}

/// The `zeromesh` binary: `$ZEROMESH_BIN`, or the one cargo built next to
/// this test executable (or this binary, the nemesis).
pub fn zeromesh_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("ZEROMESH_BIN") {
        return Ok(PathBuf::from(path));
    }
    let executable = std::env::current_exe()?;
    // target/<profile>/deps/<test> or target/<profile>/<binary> -> target/<profile>/zeromesh
    let mut profile_dir = executable.parent().context("the executable has no directory")?;
    if profile_dir.ends_with("deps") {
        profile_dir = profile_dir.parent().context("the test executable has no target directory")?;
    }
    let binary = profile_dir.join("zeromesh");
    if !binary.exists() {
        bail!(
            "{} is missing: build it first (`cargo build -p zeromesh`, which scripts/test.sh does) or set ZEROMESH_BIN",
            binary.display()
        );
    }
    Ok(binary)
}

/// Runs the `zeromesh` command line with `args`; its stdout, or an error
/// holding its stderr.
pub fn cli(args: &[&str]) -> anyhow::Result<String> {
    cli_as(None, args)
}

/// [`cli`] with `token` in ZEROMESH_TOKEN, as an operator holding it runs it.
pub fn cli_as(token: Option<&str>, args: &[&str]) -> anyhow::Result<String> {
    let mut command = std::process::Command::new(zeromesh_binary()?);
    if let Some(token) = token {
        command.env("ZEROMESH_TOKEN", token);
    }
    let output = command.args(args).output()?;
    if !output.status.success() {
        bail!("zeromesh {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs `command` to its end within `limit` (killed past it), its stdout
/// and stderr captured: whether it succeeded, and both outputs, stdout
/// first.
pub async fn run_within(mut command: Command, limit: Duration) -> anyhow::Result<(bool, String)> {
    let program = format!("{:?}", command.as_std().get_program());
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {program}"))?;
    let output = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .map_err(|_| anyhow!("{program} did not finish within {limit:?}"))??;
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    Ok((output.status.success(), text))
}

/// Signs a plugin module with a manifest and publisher key through the
/// command line, as a publisher would, writing the package to `out`.
pub fn sign_plugin(module: &Path, manifest: &Path, key: &Path, out: &Path) -> anyhow::Result<()> {
    let path = |path: &Path| path.to_str().map(str::to_owned).context("a path that is not UTF-8");
    let (module, manifest, key, out) = (path(module)?, path(manifest)?, path(key)?, path(out)?);
    cli(&["plugin", "sign", &module, "--manifest", &manifest, "--key", &key, "--out", &out]).map(drop)
}

/// One HTTP/1.1 request to a node's API address (`ws://host:port` or
/// `host:port`) over a fresh connection: the status code and the body.
pub async fn http_request(
    api: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> anyhow::Result<(u16, String)> {
    http_exchange(api, method, path, headers, body).await.map(|answer| (answer.status, answer.body))
}

/// An HTTP answer: status, headers (names in lower case) and body.
pub struct HttpAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpAnswer {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(header, _)| header == name).map(|(_, value)| value.as_str())
    }
}

/// [`http_request`], answering the headers too.
pub async fn http_exchange(
    api: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> anyhow::Result<HttpAnswer> {
    use tokio::io::AsyncReadExt;
    let url = if api.contains("://") { api.to_owned() } else { format!("ws://{api}") };
    let mut answer = zeromesh::client::http_request(&url, method, path, headers, body).await.map_err(|e| anyhow!(e))?;
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), answer.body.read_to_end(&mut bytes))
        .await
        .context("no HTTP answer within 30 s")??;
    let body = String::from_utf8_lossy(&bytes).into_owned();
    let chunked = answer.header("transfer-encoding").is_some_and(|value| value.contains("chunked"));
    let body = if chunked { dechunk(&body) } else { body };
    Ok(HttpAnswer { status: answer.status, headers: answer.headers, body })
}

/// A 2026-07-28 request: self-contained, the revision and the client's
/// capabilities added to `params._meta` (beside what it already holds).
pub fn stateless_request(id: u64, method: &str, mut params: serde_json::Value) -> serde_json::Value {
    if !params["_meta"].is_object() {
        params["_meta"] = serde_json::json!({});
    }
    params["_meta"]["io.modelcontextprotocol/protocolVersion"] = "2026-07-28".into();
    params["_meta"]["io.modelcontextprotocol/clientCapabilities"] = serde_json::json!({});
    serde_json::json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params })
}

/// The standard headers that mirror a 2026-07-28 request: its revision,
/// method, and the tool or resource it names.
pub fn stateless_headers(request: &serde_json::Value) -> Vec<(&str, &str)> {
    let params = &request["params"];
    let mut headers = vec![("mcp-protocol-version", "2026-07-28")];
    headers.extend(request["method"].as_str().map(|method| ("mcp-method", method)));
    headers.extend(
        params.get("name").or_else(|| params.get("uri")).and_then(|name| name.as_str()).map(|name| ("mcp-name", name)),
    );
    headers
}

/// One keep-alive HTTP/1.1 connection to a node's API for POSTs to `/mcp`
/// (the benchmark's Streamable HTTP load generator).
pub struct HttpConnection {
    stream: tokio::io::BufReader<tokio::net::TcpStream>,
    host: String,
}

impl HttpConnection {
    pub async fn connect(api: &str) -> anyhow::Result<HttpConnection> {
        let host = api.trim_start_matches("ws://").trim_end_matches('/').to_owned();
        let stream = tokio::net::TcpStream::connect(&host).await?;
        stream.set_nodelay(true)?;
        Ok(HttpConnection { stream: tokio::io::BufReader::new(stream), host })
    }

    /// POSTs `body` to `/mcp` with `headers`: the status and the body (an
    /// event stream's body is returned as it came).
    pub async fn post(&mut self, headers: &[(&str, &str)], body: &str) -> anyhow::Result<(u16, String)> {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
        let mut head = format!(
            "POST /mcp HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\n",
            self.host,
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        head.push_str(body);
        self.stream.get_mut().write_all(head.as_bytes()).await?;
        let mut status = None;
        let (mut length, mut chunked) = (None, false);
        loop {
            let mut line = String::new();
            if self.stream.read_line(&mut line).await? == 0 {
                anyhow::bail!("the node closed the connection");
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if status.is_none() {
                status = line.split_whitespace().nth(1).and_then(|code| code.parse::<u16>().ok());
                continue;
            }
            let (name, value) = line.split_once(':').unwrap_or((line, ""));
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse::<usize>().ok(),
                "transfer-encoding" => chunked = value.contains("chunked"),
                _ => {}
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                let mut size = String::new();
                self.stream.read_line(&mut size).await?;
                let size = usize::from_str_radix(size.trim(), 16).context("a chunk size")?;
                let mut chunk = vec![0; size + 2];
                self.stream.read_exact(&mut chunk).await?;
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..size]);
            }
        } else {
            body.resize(length.context("no Content-Length")?, 0);
            self.stream.read_exact(&mut body).await?;
        }
        Ok((status.context("no status line")?, String::from_utf8_lossy(&body).into_owned()))
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else { break };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// Waits until `check` answers `Some`, trying every 50 ms, for at most `timeout`.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Connects to the API at `api` with `token`, waiting up to `timeout` until
/// that node knows the token (tokens are replicated: a node that has not
/// applied one yet refuses it).
pub async fn connect_when_known(api: &str, token: &str, timeout: Duration) -> anyhow::Result<ApiClient> {
    wait_until(&format!("the token to reach {api}"), timeout, || async {
        ApiClient::connect_with(api, None, Some(token.to_owned())).await.ok()
    })
    .await
}

fn parse_ready(line: &str) -> Option<NodeAddress> {
    let rest = line.strip_prefix("ready ")?;
    let field = |name: &str| {
        rest.split_whitespace()
            .find_map(|pair| pair.strip_prefix(name).and_then(|value| value.strip_prefix('=')).map(str::to_owned))
    };
    Some(NodeAddress {
        node_id: field("node_id")?.parse().ok()?,
        peer_id: field("peer_id")?,
        p2p: field("p2p")?,
        api: field("api")?,
    })
}

/// The applied index a node reports for itself in its `cluster_status`.
pub fn own_applied_index(status: &Value) -> Option<u64> {
    let members = status["members"].as_array()?;
    members.iter().find(|member| member["node_id"] == status["node_id"])?["applied_index"].as_u64()
}

/// Port of a `/ip4/.../tcp/<port>/...` address or a `ws://host:port` URL.
fn port_of(address: &str) -> Option<&str> {
    if let Some(rest) = address.strip_prefix("ws://") {
        return rest.rsplit(':').next();
    }
    let mut parts = address.split('/');
    parts.by_ref().find(|part| *part == "tcp")?;
    parts.next()
}

/// The outcome of starting one process: its ready line, the join token if it printed one.
struct Started {
    child: Child,
    address: NodeAddress,
    join_token: Option<String>,
    admin_token: Option<String>,
}

/// Starts `command` (the node binary, perhaps wrapped) with `subcommand`
/// (`run`, or `restore <backup>`), `--data data_dir` and `args`, and waits
/// for its ready line.
async fn spawn(mut command: Command, subcommand: &[&str], data_dir: &Path, args: &[String]) -> anyhow::Result<Started> {
    std::fs::create_dir_all(data_dir)?;
    let log = std::fs::OpenOptions::new().create(true).append(true).open(data_dir.join("node.log"))?;
    let program = format!("{:?}", command.as_std().get_program());
    let mut child = command
        .args(subcommand)
        .arg("--data")
        .arg(data_dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {program}"))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let mut join_token = None;
    let mut admin_token = None;
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    loop {
        let line = match tokio::time::timeout_at(deadline, lines.next_line()).await {
            Err(_) => bail!("the node in {} printed no ready line within {START_TIMEOUT:?}", data_dir.display()),
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) | Ok(Err(_)) => {
                let status = child.wait().await?;
                let log = std::fs::read_to_string(data_dir.join("node.log")).unwrap_or_default();
                bail!("the node in {} exited ({status}) before it was ready:\n{log}", data_dir.display());
            }
        };
        if let Some(token) = line.strip_prefix("join_token=") {
            join_token = Some(token.to_owned());
        }
        if let Some(token) = line.strip_prefix("admin_token=") {
            admin_token = Some(token.to_owned());
        }
        if let Some(address) = parse_ready(&line) {
            // Keep draining stdout so the node never blocks on a full pipe.
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return Ok(Started { child, address, join_token, admin_token });
        }
    }
}

impl Testnet {
    /// Starts `count` nodes: the first with `--init`, the rest joining
    /// through it. Returns once every node is a member of the cluster and
    /// the first ones are voters, up to the voter count.
    pub async fn start(count: usize, options: TestnetOptions) -> anyhow::Result<Testnet> {
        assert!(count >= 1, "a testnet has at least one node");
        let binary = match &options.binary {
            Some(binary) => binary.clone(),
            None => zeromesh_binary()?,
        };
        let dir = tempfile::Builder::new().prefix("zeromesh-testnet-").tempdir()?;
        let namespaces = match options.network {
            Network::Loopback => None,
            Network::Namespaces => Some(netns::Namespaces::create()?),
        };
        let mut testnet = Testnet {
            dir,
            binary,
            options,
            join_token: String::new(),
            admin_token: None,
            nodes: Vec::new(),
            namespaces,
        };
        let data_dir = testnet.dir.path().join("node-0");
        let mut args = testnet.base_args();
        args.push("--init".into());
        args.extend(testnet.listen_args(0, "0", "0")?);
        let backup = testnet.options.restore.as_ref().map(|restore| restore.backup.to_string_lossy().into_owned());
        let subcommand: Vec<&str> = match &backup {
            Some(backup) => vec!["restore", backup.as_str()],
            None => vec!["run"],
        };
        let started = spawn(testnet.command(0)?, &subcommand, &data_dir, &args).await?;
        // A join token given to the --init node is not printed.
        let given = testnet.options.env.iter().find(|(name, _)| name == "ZEROMESH_JOIN_TOKEN").map(|(_, token)| token);
        testnet.join_token =
            started.join_token.clone().or(given.cloned()).context("the --init node printed no join token")?;
        // Neither is an admin token given to the --init node.
        let given = testnet.options.env.iter().find(|(name, _)| name == "ZEROMESH_ADMIN_TOKEN").map(|(_, token)| token);
        testnet.admin_token = match &testnet.options.restore {
            Some(restore) => Some(restore.admin_token.clone()),
            None => started.admin_token.clone().or(given.cloned()),
        };
        testnet.nodes.push(TestNode {
            data_dir,
            address: started.address,
            extra_args: Vec::new(),
            child: Some(started.child),
        });
        for _ in 1..count {
            testnet.add_node().await?;
        }
        let expected = count;
        // Tests kill voters and expect a quorum to remain: wait until the
        // leader has promoted the first nodes up to the voter count.
        let voters = testnet
            .options
            .args
            .windows(2)
            .find(|pair| pair[0] == "--voter-count")
            .and_then(|pair| pair[1].parse().ok())
            .unwrap_or(zeromesh::config::DEFAULT_VOTER_COUNT as usize)
            .min(count);
        testnet
            .wait_for_cluster(
                "every node to be a member, and the voters promoted",
                Duration::from_secs(60),
                move |status| {
                    status["members"].as_array().is_some_and(|members| members.len() == expected)
                        && status["voters"].as_array().is_some_and(|ids| ids.len() == voters)
                },
            )
            .await?;
        Ok(testnet)
    }

    /// The node binary, in node `index`'s namespace if there are namespaces,
    /// with its clock file if the testnet steps clocks.
    fn command(&self, index: usize) -> anyhow::Result<Command> {
        let mut command = match &self.namespaces {
            Some(namespaces) => namespaces.command(index, &self.binary),
            None => Command::new(&self.binary),
        };
        command.envs(self.options.env.iter().cloned());
        if self.options.clock_steps {
            let step = self.clock_file(index);
            if !step.exists() {
                std::fs::write(&step, "+0\n")?;
            }
            command.env("ZEROMESH_TEST_CLOCK_FILE", step);
        }
        Ok(command)
    }

    fn clock_file(&self, index: usize) -> PathBuf {
        self.dir.path().join(format!("clock-{index}"))
    }

    /// Steps node `index`'s wall clock `offset` from real time (`-1h`,
    /// `+30m`, `+0`); the node reads it within a second. Only with
    /// [`TestnetOptions::clock_steps`].
    pub fn set_clock(&self, index: usize, offset: &str) -> anyhow::Result<()> {
        anyhow::ensure!(self.options.clock_steps, "the testnet was started without clock steps");
        Ok(std::fs::write(self.clock_file(index), format!("{offset}\n"))?)
    }

    /// `--listen` and `--api` on node `index`'s host and the given ports
    /// (`0`: any), creating its namespace when it is a new node.
    fn listen_args(&mut self, index: usize, p2p_port: &str, api_port: &str) -> anyhow::Result<[String; 4]> {
        let host = match &mut self.namespaces {
            Some(namespaces) => {
                if index == self.nodes.len() {
                    namespaces.add(index)?;
                }
                namespaces.ip(index)
            }
            None => "127.0.0.1".to_owned(),
        };
        Ok(["--listen".into(), format!("/ip4/{host}/tcp/{p2p_port}"), "--api".into(), format!("{host}:{api_port}")])
    }

    /// Drops every packet node `from` sends to node `to`, in `to`'s kernel
    /// (one way; call it both ways for a symmetric cut). Only with
    /// [`Network::Namespaces`].
    pub fn drop_packets(&self, from: usize, to: usize) -> anyhow::Result<()> {
        self.namespaces.as_ref().context("packets are dropped only between namespaces")?.drop_packets(from, to)
    }

    /// Undoes every [`Testnet::drop_packets`].
    pub fn heal_network(&self) -> anyhow::Result<()> {
        match &self.namespaces {
            Some(namespaces) => namespaces.heal(),
            None => Ok(()),
        }
    }

    fn base_args(&self) -> Vec<String> {
        let mut args = vec!["--test-faults".to_owned()];
        if !self.options.auth {
            args.push("--dev".to_owned());
        }
        args.extend(self.options.args.iter().cloned());
        args
    }

    /// Starts one more node that joins through node 0; returns its index.
    pub async fn add_node(&mut self) -> anyhow::Result<usize> {
        self.add_node_with(&[]).await
    }

    /// Starts one more node with extra flags (a join token of its own, say).
    pub async fn add_node_with(&mut self, extra: &[&str]) -> anyhow::Result<usize> {
        let index = self.nodes.len();
        let data_dir = self.dir.path().join(format!("node-{index}"));
        let extra_args: Vec<String> = extra.iter().map(|arg| arg.to_string()).collect();
        let mut args = self.base_args();
        args.extend(self.listen_args(index, "0", "0")?);
        args.extend(["--bootstrap".into(), self.nodes[0].address.p2p.clone()]);
        if !extra_args.iter().any(|arg| arg == "--join-token") {
            args.extend(["--join-token".into(), self.join_token.clone()]);
        }
        args.extend(extra_args.iter().cloned());
        let started = spawn(self.command(index)?, &["run"], &data_dir, &args).await?;
        self.nodes.push(TestNode { data_dir, address: started.address, extra_args, child: Some(started.child) });
        Ok(index)
    }

    /// Waits for node `index` to exit by itself and returns its whole log
    /// (an error with a backtrace can be longer than any tail).
    pub async fn wait_exit(
        &mut self,
        index: usize,
        timeout: Duration,
    ) -> anyhow::Result<(std::process::ExitStatus, String)> {
        let node = &mut self.nodes[index];
        let child = node.child.as_mut().context("node is not running")?;
        let status = tokio::time::timeout(timeout, child.wait())
            .await
            .map_err(|_| anyhow!("node {index} did not exit within {timeout:?}"))??;
        node.child = None;
        Ok((status, std::fs::read_to_string(node.data_dir.join("node.log")).unwrap_or_default()))
    }

    /// `kill -9` of node `index`: no shutdown, no flush.
    pub async fn kill9(&mut self, index: usize) -> anyhow::Result<()> {
        let node = &mut self.nodes[index];
        if let Some(mut child) = node.child.take() {
            child.start_kill()?;
            child.wait().await?;
        }
        Ok(())
    }

    /// SIGTERM of node `index`, as systemd or Kubernetes stops a node, and
    /// waits for it to exit; returns its exit status.
    pub async fn stop(&mut self, index: usize, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        self.signal(index, "TERM")?;
        Ok(self.wait_exit(index, timeout).await?.0)
    }

    /// SIGSTOP of node `index`: the process stays, frozen, its sockets open.
    pub fn pause(&self, index: usize) -> anyhow::Result<()> {
        self.signal(index, "STOP")
    }

    /// SIGCONT of node `index`, after [`Testnet::pause`].
    pub fn resume(&self, index: usize) -> anyhow::Result<()> {
        self.signal(index, "CONT")
    }

    fn signal(&self, index: usize, signal: &str) -> anyhow::Result<()> {
        let pid = self.nodes[index].pid().with_context(|| format!("node {index} is not running"))?.to_string();
        let status = std::process::Command::new("kill").args([&format!("-{signal}"), &pid]).status()?;
        anyhow::ensure!(status.success(), "kill -{signal} {pid} failed");
        Ok(())
    }

    /// Restarts node `index` on its data directory and its former ports, with
    /// no extra flag: it rejoins from its own state.
    pub async fn restart(&mut self, index: usize) -> anyhow::Result<()> {
        let node = &self.nodes[index];
        let p2p_port = port_of(&node.address.p2p).context("p2p port")?.to_owned();
        let api_port = port_of(&node.address.api).context("api port")?.to_owned();
        self.restart_on(index, &p2p_port, &api_port).await
    }

    /// Restarts node `index` on its data directory but on new ports, as a
    /// member moved to another address would come back.
    pub async fn restart_elsewhere(&mut self, index: usize) -> anyhow::Result<()> {
        self.restart_on(index, "0", "0").await
    }

    async fn restart_on(&mut self, index: usize, p2p_port: &str, api_port: &str) -> anyhow::Result<()> {
        self.kill9(index).await?;
        let mut args = self.base_args();
        // No --init, --bootstrap or --join-token: a member rejoins from its own state.
        args.extend(self.listen_args(index, p2p_port, api_port)?);
        let node = &self.nodes[index];
        args.extend(node.extra_args.iter().cloned());
        let started = spawn(self.command(index)?, &["run"], &node.data_dir, &args).await?;
        let node = &mut self.nodes[index];
        assert_eq!(started.address.node_id, node.address.node_id, "a restarted node keeps its id");
        node.address = started.address;
        node.child = Some(started.child);
        Ok(())
    }

    /// A fresh API connection to node `index`.
    pub async fn client(&self, index: usize) -> anyhow::Result<ApiClient> {
        Ok(ApiClient::connect_with(&self.nodes[index].address.api, None, self.admin_token.clone()).await?)
    }

    /// Calls a tool on node `index` over a fresh connection.
    pub async fn call(&self, index: usize, tool: &str, arguments: Value) -> Result<Value, ClientError> {
        let mut client =
            ApiClient::connect_with(&self.nodes[index].address.api, None, self.admin_token.clone()).await?;
        client.call_tool(tool, arguments).await
    }

    /// Spawns agent `id`, allowed `tools`, through node 0, and waits until
    /// every running node knows it.
    pub async fn spawn_agent(&self, id: &str, tools: &[&str]) -> anyhow::Result<()> {
        self.call(0, "agent_spawn", json!({ "id": id, "owner": "testnet", "tools": tools })).await?;
        for index in (0..self.nodes.len()).filter(|index| self.nodes[*index].is_running()) {
            wait_until(&format!("node {index} to know agent {id}"), Duration::from_secs(30), || async move {
                self.call(index, "agent_show", json!({ "id": id })).await.ok()
            })
            .await?;
        }
        Ok(())
    }

    /// The value of a counter or gauge (`name`, with its labels if it has
    /// any) on node `index`'s `/metrics` page.
    pub async fn metric(&self, index: usize, name: &str) -> Option<u64> {
        let authorization = self.admin_token.as_ref().map(|token| format!("Bearer {token}"));
        let headers: Vec<(&str, &str)> =
            authorization.as_deref().map(|value| ("Authorization", value)).into_iter().collect();
        let (_, body) = http_request(&self.nodes[index].address.api, "GET", "/metrics", &headers, b"").await.ok()?;
        body.lines().find_map(|line| line.strip_prefix(&format!("{name} "))?.parse().ok())
    }

    /// Node `index`'s `cluster_status`.
    pub async fn status(&self, index: usize) -> Result<Value, ClientError> {
        self.call(index, "cluster_status", json!({})).await
    }

    /// Every live memory under `prefix` in node `index`'s own applied state
    /// (stale reads, page by page): path to value.
    pub async fn memories(
        &self,
        index: usize,
        prefix: &str,
    ) -> anyhow::Result<std::collections::HashMap<String, String>> {
        let mut client = self.client(index).await?;
        let mut held = std::collections::HashMap::new();
        let mut after: Option<String> = None;
        loop {
            let page = client
                .call_tool(
                    "memory_list",
                    json!({ "prefix": prefix, "after": after, "limit": 1000, "consistency": "stale" }),
                )
                .await?;
            for record in page["records"].as_array().context("a page of records")? {
                let path = record["path"].as_str().context("a record's path")?;
                held.insert(path.to_owned(), record["value"].as_str().unwrap_or_default().to_owned());
            }
            match page["next_cursor"].as_str() {
                Some(cursor) => after = Some(cursor.to_owned()),
                None => return Ok(held),
            }
        }
    }

    /// Waits until every running node's status satisfies `condition`.
    pub async fn wait_for_cluster(
        &self,
        what: &str,
        timeout: Duration,
        condition: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<()> {
        let running: Vec<usize> = (0..self.nodes.len()).filter(|index| self.nodes[*index].is_running()).collect();
        let condition = &condition;
        wait_until(what, timeout, || {
            let running = running.clone();
            async move {
                for index in running {
                    match self.status(index).await {
                        Ok(status) if condition(&status) => {}
                        _ => return None,
                    }
                }
                Some(())
            }
        })
        .await
        .with_context(|| self.logs())
    }

    /// The leader as node `asked` sees it, as an index, if it answers.
    pub async fn leader_seen_by(&self, asked: usize) -> Option<usize> {
        let leader = self.status(asked).await.ok()?["leader"].as_u64()?;
        self.nodes.iter().position(|node| node.address.node_id == leader)
    }

    /// The index of the node every running node agrees is the leader.
    pub async fn leader(&self, timeout: Duration) -> anyhow::Result<usize> {
        let running: Vec<usize> = (0..self.nodes.len()).filter(|index| self.nodes[*index].is_running()).collect();
        wait_until("an agreed leader", timeout, || {
            let running = running.clone();
            async move {
                let mut agreed = None;
                for index in running {
                    let leader = self.status(index).await.ok()?["leader"].as_u64()?;
                    if agreed.is_some_and(|agreed| agreed != leader) {
                        return None;
                    }
                    agreed = Some(leader);
                }
                self.nodes.iter().position(|node| Some(node.address.node_id) == agreed && node.is_running())
            }
        })
        .await
        .with_context(|| self.logs())
    }

    /// Cuts node `index` off from every other node, both ways.
    pub async fn isolate(&self, index: usize) -> anyhow::Result<()> {
        let others: Vec<String> = (0..self.nodes.len())
            .filter(|other| *other != index)
            .map(|other| self.nodes[other].address.peer_id.clone())
            .collect();
        self.call(index, "mesh_isolate", json!({ "peers": others })).await?;
        for other in (0..self.nodes.len()).filter(|other| *other != index && self.nodes[*other].is_running()) {
            self.call(other, "mesh_isolate", json!({ "peers": [self.nodes[index].address.peer_id] })).await?;
        }
        Ok(())
    }

    /// Undoes every isolation.
    pub async fn heal(&self) -> anyhow::Result<()> {
        for index in (0..self.nodes.len()).filter(|index| self.nodes[*index].is_running()) {
            self.call(index, "mesh_heal", json!({})).await?;
        }
        Ok(())
    }

    /// The tail of every node's log, for a failure message.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .enumerate()
            .map(|(index, node)| format!("--- node {index} ({}) ---\n{}", node.address.node_id, node.log_tail(30)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_lines_and_ports_are_read() {
        let line = "ready node_id=42 peer_id=12D3KooX p2p=/ip4/127.0.0.1/tcp/7001/p2p/12D3KooX api=ws://127.0.0.1:8765";
        let address = parse_ready(line).expect("a ready line");
        assert_eq!(address.node_id, 42);
        assert_eq!(port_of(&address.p2p), Some("7001"));
        assert_eq!(port_of(&address.api), Some("8765"));
        assert!(parse_ready("joined node_id=1").is_none());
    }
}
