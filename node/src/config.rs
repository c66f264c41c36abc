//! A node's configuration: from flags, then `ZEROMESH_*` environment
//! variables, then a TOML file, then defaults, in that order of precedence.
//! A bad value stops start-up with a message naming the setting and what is
//! accepted.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::bail;
use libp2p::Multiaddr;
use serde::Deserialize;
use zeromesh_consensus::RaftSettings;
use zeromesh_protocol::limits::{MAX_BOOTSTRAP_PEERS, MAX_CONFIG_FILE_BYTES, MAX_JOIN_TOKEN_BYTES, MAX_VOTER_COUNT};

/// `zeromesh run`'s flags; each may also come from its environment variable.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RunArgs {
    /// A TOML file with any of the settings below (flag names with `_`).
    #[arg(long, env = "ZEROMESH_CONFIG")]
    pub config: Option<PathBuf>,
    /// The node's data directory: its key, Raft log and state.
    #[arg(long, env = "ZEROMESH_DATA")]
    pub data: Option<PathBuf>,
    /// Mesh listen address (multiaddr).
    #[arg(long, env = "ZEROMESH_LISTEN")]
    pub listen: Option<String>,
    /// Peer API listen address (host:port).
    #[arg(long, env = "ZEROMESH_API")]
    pub api: Option<String>,
    /// How other nodes and clients reach this one: a DNS name or an IP,
    /// put in its mesh and API addresses in the membership. By default the
    /// address it listens on, or, listening on all interfaces, the first
    /// address of an interface other than loopback.
    #[arg(long, env = "ZEROMESH_ADVERTISE_HOST")]
    pub advertise_host: Option<String>,
    /// A peer to join through (`/ip4/.../tcp/...` or `/dns4/name/tcp/...`,
    /// with `/p2p/<peer id>` or without); repeatable. In the environment:
    /// comma-separated.
    #[arg(long, env = "ZEROMESH_BOOTSTRAP", value_delimiter = ',')]
    pub bootstrap: Vec<String>,
    /// Start a new cluster with this node as its first voter, and print the
    /// join token the other nodes need. Ignored on a node that has a cluster.
    #[arg(long)]
    pub init: bool,
    /// The cluster's join token, which joining nodes present. With
    /// `--init`, the new cluster's (a secret the operator keeps, the same
    /// for every node); without it, `--init` makes one and prints it once.
    #[arg(long, env = "ZEROMESH_JOIN_TOKEN", hide_env_values = true)]
    pub join_token: Option<String>,
    /// With `--init`: the new cluster's first admin token (from `zeromesh
    /// token generate`; a deployment's secret, say). Without it, `--init`
    /// makes one and prints it once.
    #[arg(long, env = "ZEROMESH_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Voters the cluster keeps (1 to 7); further nodes stay non-voting members.
    #[arg(long, env = "ZEROMESH_VOTER_COUNT")]
    pub voter_count: Option<String>,
    /// A voter unreachable this long is replaced by a caught-up non-voter.
    #[arg(long, env = "ZEROMESH_VOTER_TIMEOUT_MS")]
    pub voter_timeout_ms: Option<String>,
    /// A non-voting member unreachable this long (a replaced voter that did
    /// not come back, say) is removed from the cluster.
    #[arg(long, env = "ZEROMESH_MEMBER_REMOVE_AFTER_MS")]
    pub member_remove_after_ms: Option<String>,
    /// The log's format on stderr: human (the default) or json (one object per line).
    #[arg(long, env = "ZEROMESH_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// MiB kept free on the data disk: below it, writes are refused on every node.
    #[arg(long, env = "ZEROMESH_MIN_FREE_DISK_MB")]
    pub min_free_disk_mb: Option<String>,
    /// How often the node republishes its resource advert.
    #[arg(long, env = "ZEROMESH_ADVERT_INTERVAL_MS")]
    pub advert_interval_ms: Option<String>,
    /// How long a received advert is kept.
    #[arg(long, env = "ZEROMESH_ADVERT_TTL_MS")]
    pub advert_ttl_ms: Option<String>,
    /// How often the leader asks the voters to cosign a checkpoint of the
    /// trace log, when it grew.
    #[arg(long, env = "ZEROMESH_CHECKPOINT_INTERVAL_MS")]
    pub checkpoint_interval_ms: Option<String>,
    /// A snapshot is built every this many applied entries.
    #[arg(long, env = "ZEROMESH_SNAPSHOT_EVERY_ENTRIES")]
    pub snapshot_every_entries: Option<String>,
    /// MiB RocksDB may hold in memory: its block cache, memtables included.
    #[arg(long, env = "ZEROMESH_STORAGE_MEMORY_MB")]
    pub storage_memory_mb: Option<String>,
    /// MiB per second RocksDB's flushes and compactions may write: 0 for no
    /// limit, otherwise at least 8. The Raft log is never held back.
    #[arg(long, env = "ZEROMESH_STORAGE_BACKGROUND_WRITE_MB_PER_SEC")]
    pub storage_background_write_mb_per_sec: Option<String>,
    /// A pre-shared key file (`zeromesh mesh-key`): only nodes holding the
    /// same key can connect to this node's mesh at all.
    #[arg(long, env = "ZEROMESH_PRIVATE_MESH_KEY")]
    pub private_mesh_key: Option<PathBuf>,
    /// A PEM certificate chain: with `--tls-key`, the API serves wss:// and
    /// https:// only (`zeromesh cert self-signed` makes a pair for testing).
    #[arg(long, env = "ZEROMESH_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of `--tls-cert`.
    #[arg(long, env = "ZEROMESH_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// A WebSocket connection from which nothing (not even a pong to the
    /// node's pings) arrives for this long is closed.
    #[arg(long, env = "ZEROMESH_API_IDLE_TIMEOUT_MS")]
    pub api_idle_timeout_ms: Option<String>,
    /// Serves the API without authentication: every caller is an admin.
    /// For local development only.
    #[arg(long, env = "ZEROMESH_DEV")]
    pub dev: bool,
    /// Requests per second each API token may make on this node.
    #[arg(long, env = "ZEROMESH_RATE_LIMIT_PER_TOKEN")]
    pub rate_limit_per_token: Option<String>,
    /// Calls a lease of an agreement's allowance holds: a node serves that
    /// many governed calls from one log entry. 0 (the default): every
    /// governed call reserves through the log.
    #[arg(long, env = "ZEROMESH_LEASE_CALLS")]
    pub lease_calls: Option<String>,
    /// Whether this node runs plugins (true, the default, or false): a node
    /// that does not fetches no modules and serves plugin tools through the
    /// peers that run them.
    #[arg(long, env = "ZEROMESH_RUN_PLUGINS")]
    pub run_plugins: Option<String>,
    /// One-minute load average per core (e.g. 0.8) at or above which this
    /// node sends calls of plugins it runs to less loaded peers that run
    /// them too. By default it runs every call of a plugin it runs itself.
    #[arg(long, env = "ZEROMESH_OFFLOAD_ABOVE_LOAD")]
    pub offload_above_load: Option<String>,
    /// This node's labels, comma-separated (e.g. `gpu,eu`): federated MCP
    /// servers registered for a label run on the nodes that carry it.
    #[arg(long, env = "ZEROMESH_LABELS")]
    pub labels: Option<String>,
    /// Enables the fault-injection tools (`mesh_isolate`, `mesh_heal`) that
    /// the test harness uses. Never for production.
    #[arg(long, env = "ZEROMESH_TEST_FAULTS")]
    pub test_faults: bool,
    /// With --test-faults: a file holding a step for this node's wall clock
    /// (`+1h`, `-30m`, `+90s`, `+0`), read every second, so that a test can
    /// set one node's clock back or forward. Never for production.
    #[arg(long, env = "ZEROMESH_TEST_CLOCK_FILE", requires = "test_faults")]
    pub test_clock_file: Option<PathBuf>,
}

/// The settings a TOML file may hold.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data: Option<PathBuf>,
    listen: Option<String>,
    api: Option<String>,
    bootstrap: Option<Vec<String>>,
    advertise_host: Option<String>,
    join_token: Option<String>,
    voter_count: Option<u64>,
    voter_timeout_ms: Option<u64>,
    member_remove_after_ms: Option<u64>,
    log_format: Option<String>,
    min_free_disk_mb: Option<u64>,
    advert_interval_ms: Option<u64>,
    advert_ttl_ms: Option<u64>,
    checkpoint_interval_ms: Option<u64>,
    snapshot_every_entries: Option<u64>,
    storage_memory_mb: Option<u64>,
    storage_background_write_mb_per_sec: Option<u64>,
    private_mesh_key: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    dev: Option<bool>,
    rate_limit_per_token: Option<u64>,
    api_idle_timeout_ms: Option<u64>,
    lease_calls: Option<u64>,
    run_plugins: Option<bool>,
    offload_above_load: Option<f64>,
    labels: Option<Vec<String>>,
}

/// A node's validated settings.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub data_dir: PathBuf,
    pub listen: Multiaddr,
    pub api: SocketAddr,
    pub bootstrap: Vec<Multiaddr>,
    /// The host other nodes and clients reach this node at, if set.
    pub advertise_host: Option<String>,
    pub init: bool,
    pub join_token: Option<String>,
    /// The first admin token of a cluster this node founds, if given.
    pub admin_token: Option<String>,
    pub voter_count: usize,
    pub voter_timeout: Duration,
    pub member_remove_after: Duration,
    /// Bytes kept free on the data disk.
    pub min_free_disk: u64,
    pub log_format: crate::logging::LogFormat,
    pub advert_interval: Duration,
    pub checkpoint_interval: Duration,
    pub advert_ttl: Duration,
    pub raft: RaftSettings,
    pub test_faults: bool,
    /// `--test-clock-file`: where a fault test writes this node's clock step.
    pub test_clock_file: Option<PathBuf>,
    pub private_mesh_key: Option<libp2p::pnet::PreSharedKey>,
    /// The API's TLS identity; `None` serves plain ws:// and http://.
    pub tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    /// No authentication: every API caller is an admin.
    pub dev: bool,
    pub rate_limit_per_token: u32,
    pub api_idle_timeout: Duration,
    /// Calls per lease of an agreement's allowance; 0: no leases.
    pub lease_calls: u64,
    /// A backup to start a new cluster from (`zeromesh restore`).
    pub restore: Option<PathBuf>,
    /// Whether this node runs plugins itself.
    pub run_plugins: bool,
    /// Load per core, in thousandths, from which calls go to less loaded peers.
    pub offload_above_milli: Option<u64>,
    /// Labels federated server registrations may name as hosts.
    pub labels: Vec<String>,
}

/// Longest list of labels a node may carry.
const MAX_LABELS: usize = 16;

/// `labels` from the command line (comma-separated) or the file, each a
/// name of ASCII letters, digits, `_` and `-`.
fn labels(given: Option<&str>, file: Option<Vec<String>>) -> anyhow::Result<Vec<String>> {
    let labels: Vec<String> = match given {
        Some(text) => text.split(',').map(str::trim).filter(|label| !label.is_empty()).map(str::to_owned).collect(),
        None => file.unwrap_or_default(),
    };
    if labels.len() > MAX_LABELS {
        anyhow::bail!("labels: {} given, at most {MAX_LABELS}", labels.len());
    }
    for label in &labels {
        zeromesh_protocol::plugin::check_name("label", label).map_err(|error| anyhow::anyhow!("labels: {error}"))?;
    }
    Ok(labels)
}

/// Reads a pre-shared key file in the swarm key format
/// (`/key/swarm/psk/1.0.0/`, `/base16/`, 64 hex digits).
pub fn read_private_mesh_key(path: &Path) -> anyhow::Result<libp2p::pnet::PreSharedKey> {
    const MAX_KEY_FILE_BYTES: usize = 1024;
    let bytes = crate::files::read_limited(path, MAX_KEY_FILE_BYTES, "setting `private_mesh_key`")?;
    let text = String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("setting `private_mesh_key`: {} is not a swarm key (not text)", path.display()))?;
    text.parse().map_err(|error| {
        anyhow::anyhow!(
            "setting `private_mesh_key`: {} is not a swarm key ({error}); accepted: a file made by `zeromesh mesh-key`",
            path.display()
        )
    })
}

pub const DEFAULT_DATA: &str = "zeromesh-data";
pub const DEFAULT_LISTEN: &str = "/ip4/127.0.0.1/tcp/7001";
pub const DEFAULT_API: &str = "127.0.0.1:8765";
pub const DEFAULT_VOTER_COUNT: u64 = 3;
pub const DEFAULT_MIN_FREE_DISK_MB: u64 = 128;
pub const DEFAULT_VOTER_TIMEOUT_MS: u64 = 10_000;
/// One hour: a member down for maintenance stays; one gone for good goes.
pub const DEFAULT_MEMBER_REMOVE_AFTER_MS: u64 = 3_600_000;
pub const DEFAULT_ADVERT_INTERVAL_MS: u64 = 5_000;
pub const DEFAULT_CHECKPOINT_INTERVAL_MS: u64 = 10_000;
pub const DEFAULT_ADVERT_TTL_MS: u64 = 30_000;
pub const DEFAULT_RATE_LIMIT_PER_TOKEN: u64 = 1_000;
pub const DEFAULT_API_IDLE_TIMEOUT_MS: u64 = 90_000;
/// Most calls one lease may hold.
pub const MAX_LEASE_CALLS: u64 = 10_000;

fn read_config_text(path: &Path) -> anyhow::Result<String> {
    let bytes = crate::files::read_limited(path, MAX_CONFIG_FILE_BYTES, "config")?;
    String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("config: {} is not UTF-8 text", path.display()))
}

/// A number from a flag or variable (text) or the file (a number), within `range`.
fn number(
    name: &str,
    flag: Option<&str>,
    file: Option<u64>,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> anyhow::Result<u64> {
    let value = match flag {
        Some(text) => text.trim().parse::<u64>().map_err(|_| {
            anyhow::anyhow!(
                "setting `{name}`: {text:?} is not a whole number; accepted: {}..={}",
                range.start(),
                range.end()
            )
        })?,
        None => file.unwrap_or(default),
    };
    if !range.contains(&value) {
        bail!("setting `{name}`: {value} is out of range; accepted: {}..={}", range.start(), range.end());
    }
    Ok(value)
}

/// The lowest background write limit accepted, other than 0 (no limit): at
/// 1 MiB/s a 3-node testnet taking 16 clients' 4 KB writes left them
/// unanswered for 8 s, each memtable's flush taking seconds.
const MIN_BACKGROUND_WRITE_MB_PER_SEC: u64 = 8;

/// Most load per core `offload_above_load` may be.
const MAX_OFFLOAD_LOAD: f64 = 1_000.0;

/// A load per core (a decimal number) from a flag or the file, in thousandths.
fn load_per_core(name: &str, flag: Option<&str>, file: Option<f64>) -> anyhow::Result<Option<u64>> {
    let value = match flag {
        Some(text) => text.trim().parse::<f64>().map_err(|_| {
            anyhow::anyhow!("setting `{name}`: {text:?} is not a number; accepted: a load per core such as 0.8")
        })?,
        None => match file {
            Some(value) => value,
            None => return Ok(None),
        },
    };
    if !(0.0..=MAX_OFFLOAD_LOAD).contains(&value) {
        bail!("setting `{name}`: {value} is out of range; accepted: 0 to {MAX_OFFLOAD_LOAD} (load per core)");
    }
    Ok(Some((value * 1000.0).round() as u64))
}

/// `true` or `false` from a flag or the file.
fn boolean(name: &str, flag: Option<&str>, file: Option<bool>, default: bool) -> anyhow::Result<bool> {
    match flag.map(str::trim) {
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(other) => bail!("setting `{name}`: {other:?} is not a boolean; accepted: true or false"),
        None => Ok(file.unwrap_or(default)),
    }
}

/// A DNS name or an IP address (IPv6 without brackets).
fn host_name(name: &str, text: &str) -> anyhow::Result<String> {
    let host = text.trim();
    let dns_name = host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && label.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
        });
    if dns_name || host.parse::<std::net::IpAddr>().is_ok() {
        return Ok(host.to_owned());
    }
    bail!("setting `{name}`: {text:?} is neither a DNS name nor an IP address; accepted: e.g. node-1.example.org or 10.0.0.1")
}

fn multiaddr(name: &str, text: &str) -> anyhow::Result<Multiaddr> {
    text.trim().parse::<Multiaddr>().map_err(|error| {
        anyhow::anyhow!(
            "setting `{name}`: {text:?} is not a multiaddr ({error}); accepted: e.g. /ip4/127.0.0.1/tcp/7001"
        )
    })
}

impl NodeConfig {
    /// Merges flags and environment (already in `args`), the file and the
    /// defaults, and validates the result.
    pub fn resolve(args: &RunArgs) -> anyhow::Result<NodeConfig> {
        match &args.config {
            Some(path) => NodeConfig::resolve_text(args, path, &read_config_text(path)?),
            None => NodeConfig::merge(args, FileConfig::default()),
        }
    }

    /// [`NodeConfig::resolve`] with `text` as the contents of the file
    /// `path` (which is not read).
    pub fn resolve_text(args: &RunArgs, path: &Path, text: &str) -> anyhow::Result<NodeConfig> {
        let file = toml::from_str(text)
            .map_err(|error| anyhow::anyhow!("config: {} is not valid: {error}", path.display()))?;
        NodeConfig::merge(args, file)
    }

    fn merge(args: &RunArgs, file: FileConfig) -> anyhow::Result<NodeConfig> {
        let data_dir = args.data.clone().or(file.data).unwrap_or_else(|| PathBuf::from(DEFAULT_DATA));
        let listen = multiaddr("listen", args.listen.as_deref().or(file.listen.as_deref()).unwrap_or(DEFAULT_LISTEN))?;
        let api_text = args.api.clone().or(file.api).unwrap_or_else(|| DEFAULT_API.to_owned());
        let api: SocketAddr = api_text.trim().parse().map_err(|_| {
            anyhow::anyhow!("setting `api`: {api_text:?} is not a host:port address; accepted: e.g. 127.0.0.1:8765")
        })?;
        let bootstrap_texts =
            if args.bootstrap.is_empty() { file.bootstrap.unwrap_or_default() } else { args.bootstrap.clone() };
        if bootstrap_texts.len() > MAX_BOOTSTRAP_PEERS {
            bail!(
                "setting `bootstrap`: {} peers given; accepted: at most {MAX_BOOTSTRAP_PEERS}",
                bootstrap_texts.len()
            );
        }
        let mut bootstrap = Vec::new();
        for text in bootstrap_texts.iter().filter(|text| !text.trim().is_empty()) {
            let address = multiaddr("bootstrap", text)?;
            if !address.iter().any(|part| matches!(part, libp2p::multiaddr::Protocol::Tcp(_))) {
                bail!("setting `bootstrap`: {text:?} is not a TCP address; accepted: /ip4/10.0.0.1/tcp/7001 or /dns4/node-1/tcp/7001, optionally ending in /p2p/<peer id>");
            }
            bootstrap.push(address);
        }
        let join_token = args.join_token.clone().or(file.join_token).filter(|token| !token.is_empty());
        if let Some(token) = &join_token {
            if token.len() > MAX_JOIN_TOKEN_BYTES || !token.bytes().all(|byte| byte.is_ascii_graphic()) {
                bail!("setting `join_token`: accepted: 1 to {MAX_JOIN_TOKEN_BYTES} printable ASCII characters");
            }
        }
        let voter_count = number(
            "voter_count",
            args.voter_count.as_deref(),
            file.voter_count,
            DEFAULT_VOTER_COUNT,
            1..=MAX_VOTER_COUNT as u64,
        )?;
        let voter_timeout_ms = number(
            "voter_timeout_ms",
            args.voter_timeout_ms.as_deref(),
            file.voter_timeout_ms,
            DEFAULT_VOTER_TIMEOUT_MS,
            1_000..=86_400_000,
        )?;
        let advert_interval_ms = number(
            "advert_interval_ms",
            args.advert_interval_ms.as_deref(),
            file.advert_interval_ms,
            DEFAULT_ADVERT_INTERVAL_MS,
            100..=3_600_000,
        )?;
        let advert_ttl_ms = number(
            "advert_ttl_ms",
            args.advert_ttl_ms.as_deref(),
            file.advert_ttl_ms,
            DEFAULT_ADVERT_TTL_MS,
            1_000..=86_400_000,
        )?;
        if advert_ttl_ms <= advert_interval_ms {
            bail!("setting `advert_ttl_ms`: {advert_ttl_ms} must be longer than advert_interval_ms ({advert_interval_ms}), or adverts expire between publications");
        }
        let defaults = RaftSettings::default();
        let snapshot_every_entries = number(
            "snapshot_every_entries",
            args.snapshot_every_entries.as_deref(),
            file.snapshot_every_entries,
            defaults.snapshot_every_entries,
            100..=10_000_000,
        )?;
        let storage_memory_mb = number(
            "storage_memory_mb",
            args.storage_memory_mb.as_deref(),
            file.storage_memory_mb,
            (defaults.storage_memory_bytes >> 20) as u64,
            (zeromesh_consensus::MIN_MEMORY_BUDGET_BYTES >> 20) as u64..=1 << 20,
        )?;
        let storage_background_write_mb_per_sec = number(
            "storage_background_write_mb_per_sec",
            args.storage_background_write_mb_per_sec.as_deref(),
            file.storage_background_write_mb_per_sec,
            defaults.storage_background_write_bytes_per_sec >> 20,
            0..=1 << 20,
        )?;
        if (1..MIN_BACKGROUND_WRITE_MB_PER_SEC).contains(&storage_background_write_mb_per_sec) {
            bail!(
                "setting `storage_background_write_mb_per_sec`: {storage_background_write_mb_per_sec} MiB/s would \
                 hold flushes behind even a light write load, and writes would wait for them; accepted: 0 (no limit) \
                 or {MIN_BACKGROUND_WRITE_MB_PER_SEC}..={}",
                1 << 20
            );
        }
        let raft = RaftSettings {
            snapshot_every_entries,
            log_entries_kept_after_snapshot: defaults.log_entries_kept_after_snapshot.min(snapshot_every_entries / 2),
            storage_memory_bytes: (storage_memory_mb as usize) << 20,
            storage_background_write_bytes_per_sec: storage_background_write_mb_per_sec << 20,
            ..defaults
        };
        Ok(NodeConfig {
            data_dir,
            listen,
            api,
            bootstrap,
            advertise_host: match args.advertise_host.clone().or(file.advertise_host) {
                Some(host) => Some(host_name("advertise_host", &host)?),
                None => None,
            },
            init: args.init,
            join_token,
            admin_token: match args.admin_token.as_deref().map(str::trim).filter(|token| !token.is_empty()) {
                Some(token) => {
                    crate::tokens::parse(token).map_err(|error| {
                        anyhow::anyhow!(
                            "setting `admin_token`: {error}; accepted: what `zeromesh token generate` prints"
                        )
                    })?;
                    Some(token.to_owned())
                }
                None => None,
            },
            voter_count: voter_count as usize,
            voter_timeout: Duration::from_millis(voter_timeout_ms),
            member_remove_after: Duration::from_millis(number(
                "member_remove_after_ms",
                args.member_remove_after_ms.as_deref(),
                file.member_remove_after_ms,
                DEFAULT_MEMBER_REMOVE_AFTER_MS,
                1_000..=30 * 86_400_000,
            )?),
            log_format: match args.log_format.clone().or(file.log_format) {
                Some(text) => text.parse().map_err(|error| anyhow::anyhow!("setting `log_format`: {error}"))?,
                None => crate::logging::LogFormat::Human,
            },
            min_free_disk: number(
                "min_free_disk_mb",
                args.min_free_disk_mb.as_deref(),
                file.min_free_disk_mb,
                DEFAULT_MIN_FREE_DISK_MB,
                0..=1 << 30,
            )? << 20,
            advert_interval: Duration::from_millis(advert_interval_ms),
            checkpoint_interval: Duration::from_millis(number(
                "checkpoint_interval_ms",
                args.checkpoint_interval_ms.as_deref(),
                file.checkpoint_interval_ms,
                DEFAULT_CHECKPOINT_INTERVAL_MS,
                100..=86_400_000,
            )?),
            advert_ttl: Duration::from_millis(advert_ttl_ms),
            raft,
            test_faults: args.test_faults,
            test_clock_file: args.test_clock_file.clone(),
            private_mesh_key: match args.private_mesh_key.clone().or(file.private_mesh_key) {
                Some(path) => Some(read_private_mesh_key(&path)?),
                None => None,
            },
            dev: args.dev || file.dev.unwrap_or(false),
            api_idle_timeout: Duration::from_millis(number(
                "api_idle_timeout_ms",
                args.api_idle_timeout_ms.as_deref(),
                file.api_idle_timeout_ms,
                DEFAULT_API_IDLE_TIMEOUT_MS,
                300..=86_400_000,
            )?),
            lease_calls: number("lease_calls", args.lease_calls.as_deref(), file.lease_calls, 0, 0..=MAX_LEASE_CALLS)?,
            restore: None,
            run_plugins: boolean("run_plugins", args.run_plugins.as_deref(), file.run_plugins, true)?,
            offload_above_milli: load_per_core(
                "offload_above_load",
                args.offload_above_load.as_deref(),
                file.offload_above_load,
            )?,
            labels: labels(args.labels.as_deref(), file.labels)?,
            rate_limit_per_token: number(
                "rate_limit_per_token",
                args.rate_limit_per_token.as_deref(),
                file.rate_limit_per_token,
                DEFAULT_RATE_LIMIT_PER_TOKEN,
                1..=1_000_000,
            )? as u32,
            tls: match (args.tls_cert.clone().or(file.tls_cert), args.tls_key.clone().or(file.tls_key)) {
                (Some(cert), Some(key)) => Some(crate::tls::server_config(&cert, &key)?),
                (None, None) => None,
                _ => bail!("settings `tls_cert` and `tls_key`: give both (a certificate and its key) or neither"),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("node.toml");
        std::fs::write(&file, "voter_count = 5\napi = \"127.0.0.1:9000\"\n").expect("writes");
        let args = RunArgs { config: Some(file.clone()), voter_count: Some("7".into()), ..RunArgs::default() };
        let config = NodeConfig::resolve(&args).expect("valid");
        assert_eq!(config.voter_count, 7);
        assert_eq!(config.api, "127.0.0.1:9000".parse().expect("address"));
        assert_eq!(config.listen, DEFAULT_LISTEN.parse::<Multiaddr>().expect("multiaddr"));
    }

    #[test]
    fn the_background_write_limit_defaults_turns_off_at_zero_and_is_bounded_both_ways() {
        let config = NodeConfig::resolve(&RunArgs::default()).expect("defaults");
        assert_eq!(
            config.raft.storage_background_write_bytes_per_sec,
            zeromesh_consensus::RaftSettings::default().storage_background_write_bytes_per_sec
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("node.toml");
        std::fs::write(&file, "storage_background_write_mb_per_sec = 0\n").expect("writes");
        let args = RunArgs { config: Some(file), ..RunArgs::default() };
        assert_eq!(NodeConfig::resolve(&args).expect("0 is no limit").raft.storage_background_write_bytes_per_sec, 0);
        let args = RunArgs { storage_background_write_mb_per_sec: Some("200".into()), ..RunArgs::default() };
        assert_eq!(NodeConfig::resolve(&args).expect("valid").raft.storage_background_write_bytes_per_sec, 200 << 20);
        let args = RunArgs { storage_background_write_mb_per_sec: Some("2000000".into()), ..RunArgs::default() };
        let error = NodeConfig::resolve(&args).expect_err("over the limit").to_string();
        assert!(error.contains("storage_background_write_mb_per_sec") && error.contains("0..="), "{error}");
        let args = RunArgs { storage_background_write_mb_per_sec: Some("1".into()), ..RunArgs::default() };
        let error = NodeConfig::resolve(&args).expect_err("too low to keep up").to_string();
        assert!(
            error.contains("storage_background_write_mb_per_sec") && error.contains("0 (no limit) or 8.."),
            "{error}"
        );
    }

    #[test]
    fn a_bad_value_names_the_setting_and_what_is_accepted() {
        let args = RunArgs { voter_count: Some("9".into()), ..RunArgs::default() };
        let error = NodeConfig::resolve(&args).expect_err("9 voters is over the limit").to_string();
        assert!(error.contains("voter_count") && error.contains("1..=7"), "{error}");

        let args = RunArgs { bootstrap: vec!["/ip4/127.0.0.1/udp/7001".into()], ..RunArgs::default() };
        let error = NodeConfig::resolve(&args).expect_err("a bootstrap address is TCP").to_string();
        assert!(error.contains("bootstrap") && error.contains("/tcp/"), "{error}");
        let args = RunArgs { bootstrap: vec!["/dns4/node-1/tcp/7001".into()], ..RunArgs::default() };
        assert!(NodeConfig::resolve(&args).is_ok(), "a peer id is optional");

        for host in ["node-1.example.org", "10.0.0.1", "::1", "zeromesh-0.zeromesh"] {
            let args = RunArgs { advertise_host: Some(host.into()), ..RunArgs::default() };
            assert_eq!(NodeConfig::resolve(&args).expect("a host").advertise_host.as_deref(), Some(host));
        }
        for host in ["", "a b", "-x.org", "x..org", "http://x"] {
            let args = RunArgs { advertise_host: Some(host.into()), ..RunArgs::default() };
            let error = NodeConfig::resolve(&args).expect_err("not a host").to_string();
            assert!(error.contains("advertise_host"), "{error}");
        }

        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("node.toml");
        std::fs::write(&file, "voters = 3\n").expect("writes");
        let args = RunArgs { config: Some(file), ..RunArgs::default() };
        let error = NodeConfig::resolve(&args).expect_err("unknown keys are refused").to_string();
        assert!(error.contains("voters"), "{error}");

        let args = RunArgs { run_plugins: Some("no".into()), ..RunArgs::default() };
        let error = NodeConfig::resolve(&args).expect_err("not a boolean").to_string();
        assert!(error.contains("run_plugins") && error.contains("true or false"), "{error}");
        for load in ["-1", "x", "1e9"] {
            let args = RunArgs { offload_above_load: Some(load.into()), ..RunArgs::default() };
            let error = NodeConfig::resolve(&args).expect_err("not a load").to_string();
            assert!(error.contains("offload_above_load"), "{error}");
        }
        let args = RunArgs {
            run_plugins: Some("false".into()),
            offload_above_load: Some("0.75".into()),
            ..RunArgs::default()
        };
        let config = NodeConfig::resolve(&args).expect("valid");
        assert_eq!((config.run_plugins, config.offload_above_milli), (false, Some(750)));
        assert!(NodeConfig::resolve(&RunArgs::default()).expect("valid").run_plugins);
        let args = RunArgs { labels: Some("gpu, eu".into()), ..RunArgs::default() };
        assert_eq!(NodeConfig::resolve(&args).expect("valid").labels, ["gpu", "eu"]);
        let args = RunArgs { labels: Some("g p u".into()), ..RunArgs::default() };
        assert!(NodeConfig::resolve(&args).expect_err("refused").to_string().contains("label"));
    }
}
