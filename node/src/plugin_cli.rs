//! `zeromesh plugin keygen | sign | verify` (publisher keys and signed
//! plugin packages, offline) and `install | uninstall | trust | distrust |
//! list` (the mesh's plugin registry, through a node's peer API).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use base64::Engine;
use clap::Subcommand;
use ed25519_dalek::SigningKey;
use serde_json::{json, Value};
use zeromesh::cli::DEFAULT_NODE;
use zeromesh::client::ApiClient;
use zeromesh::files::read_limited;
use zeromesh_plugins::{generate_signing_key, Capability, Manifest, Package, PublisherKey};
use zeromesh_protocol::limits::{MAX_PLUGIN_MANIFEST_BYTES, MAX_PLUGIN_PACKAGE_BYTES};

#[derive(Subcommand)]
pub enum PluginCommand {
    /// Makes a publisher signing key: writes the secret to FILE (mode 0600)
    /// and the public key to FILE.pub, and prints the public key.
    Keygen {
        #[arg(long, default_value = "publisher.key")]
        out: PathBuf,
        /// Replace FILE if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Signs MODULE with the manifest and key; writes one package file.
    Sign {
        /// The module: WebAssembly (.wasm) or WebAssembly text (.wat).
        module: PathBuf,
        #[arg(long)]
        manifest: PathBuf,
        #[arg(long)]
        key: PathBuf,
        /// Package file to write (default: MODULE with extension .zmp).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Checks a package: structure, signature, module hash, manifest limits,
    /// expiry, and with --trust whether its publisher is trusted.
    Verify {
        package: PathBuf,
        /// A trusted publisher key (64 hex digits, or a FILE.pub); repeatable.
        #[arg(long = "trust")]
        trusted: Vec<String>,
    },
    /// Installs a package in the whole mesh through NODE. The publisher key
    /// must be trusted; capabilities the plugin uses must be granted.
    Install {
        package: PathBuf,
        /// Capabilities to grant (log, memory.read, memory.write, clock,
        /// random); comma-separated or repeated.
        #[arg(long = "grant", value_delimiter = ',')]
        grant: Vec<String>,
        /// Then waits, showing progress, until every member has loaded the
        /// module (at most this many seconds; 30 when given bare).
        #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "30")]
        wait: Option<u64>,
        #[arg(long, env = "ZEROMESH_NODE", default_value = DEFAULT_NODE)]
        node: String,
    },
    /// Removes an installed plugin from the whole mesh.
    Uninstall {
        name: String,
        #[arg(long, env = "ZEROMESH_NODE", default_value = DEFAULT_NODE)]
        node: String,
    },
    /// Adds a publisher key (64 hex digits, or a FILE.pub) to the trusted set.
    Trust {
        publisher: String,
        #[arg(long, env = "ZEROMESH_NODE", default_value = DEFAULT_NODE)]
        node: String,
    },
    /// Removes a publisher key from the trusted set; its plugins are uninstalled.
    Distrust {
        publisher: String,
        #[arg(long, env = "ZEROMESH_NODE", default_value = DEFAULT_NODE)]
        node: String,
    },
    /// Shows installed plugins, trusted publishers and what runs on NODE.
    List {
        #[arg(long, env = "ZEROMESH_NODE", default_value = DEFAULT_NODE)]
        node: String,
    },
}

/// A publisher key given as hex, or as the path of a `.pub` file.
fn publisher_arg(text: &str) -> anyhow::Result<String> {
    if PublisherKey::parse(text).is_ok() {
        return Ok(text.trim().to_owned());
    }
    let file = read_limited(Path::new(text), 1024, "public key file")
        .with_context(|| format!("{text:?} is neither a publisher key (64 hex digits) nor a readable .pub file"))?;
    let key = String::from_utf8(file).context("the public key file is not text")?;
    PublisherKey::parse(&key).with_context(|| format!("{text} does not hold a publisher key"))?;
    Ok(key.trim().to_owned())
}

fn capability_arg(name: &str) -> anyhow::Result<Capability> {
    Capability::ALL.into_iter().find(|capability| capability.name() == name.trim()).with_context(|| {
        let known: Vec<&str> = Capability::ALL.iter().map(|capability| capability.name()).collect();
        format!("unknown capability {name:?}; known: {}", known.join(", "))
    })
}

/// How far a module has loaded across the cluster.
struct Loaded {
    /// Members that advertise running it.
    loaded: usize,
    /// Members that run plugins (all but those whose advert says they do not).
    members: usize,
    /// Members that run no plugins (`run_plugins = false`).
    without_plugins: usize,
}

/// Waits, with a progress bar, until every member of `node`'s cluster that
/// runs plugins advertises module `module`, or `timeout` passes.
async fn wait_loaded(node: &str, module: &str, timeout: Duration) -> anyhow::Result<Loaded> {
    let mut client = ApiClient::connect(node).await.with_context(|| format!("connecting to {node}"))?;
    let bar = zeromesh::cli::members_bar("loading the module");
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let status = client.call_tool("cluster_status", json!({})).await.context("cluster_status")?;
        let mesh = client.call_tool("mesh_peers", json!({})).await.context("mesh_peers")?;
        let members: Vec<&str> = status["members"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|member| member["p2p_addr"].as_str()?.rsplit_once("/p2p/").map(|(_, peer)| peer))
            .collect();
        let adverts: Vec<&Value> = mesh["adverts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|advert| advert["peer_id"].as_str().is_some_and(|peer| members.contains(&peer)))
            .collect();
        let without_plugins = adverts.iter().filter(|advert| advert["runs_plugins"] == false).count();
        let loaded = adverts
            .iter()
            .filter(|advert| {
                advert["plugin_hashes"].as_array().is_some_and(|hashes| hashes.iter().any(|h| h == module))
            })
            .count();
        let running_plugins = members.len() - without_plugins;
        bar.set_length(running_plugins as u64);
        bar.set_position(loaded as u64);
        if loaded >= running_plugins || tokio::time::Instant::now() > deadline {
            bar.finish_and_clear();
            return Ok(Loaded { loaded, members: running_plugins, without_plugins });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn call(node: &str, tool: &str, arguments: Value) -> anyhow::Result<Value> {
    let mut client = ApiClient::connect(node).await.with_context(|| format!("connecting to {node}"))?;
    client.call_tool(tool, arguments).await.with_context(|| format!("{tool} on {node}"))
}

fn show_list(answer: &Value) {
    let plugins = answer["plugins"].as_array().cloned().unwrap_or_default();
    if plugins.is_empty() {
        println!("no plugins installed");
    }
    for plugin in plugins {
        let tools: Vec<&str> = plugin["tools"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        let running = match plugin["not_running_because"].as_str() {
            _ if plugin["running_here"] == json!(true) => "running here".to_owned(),
            Some(reason) => format!("not running here: {reason}"),
            None => "not running here".to_owned(),
        };
        println!(
            "{} {} (module {}, publisher {}): tools {}; {running}",
            plugin["name"].as_str().unwrap_or_default(),
            plugin["version"].as_str().unwrap_or_default(),
            plugin["module_sha256"].as_str().unwrap_or_default(),
            plugin["publisher"].as_str().unwrap_or_default(),
            if tools.is_empty() { "-".to_owned() } else { tools.join(", ") },
        );
    }
    for trusted in answer["trusted_publishers"].as_array().into_iter().flatten() {
        println!("trusted publisher {}", trusted["publisher"].as_str().unwrap_or_default());
    }
}

pub fn read_key(path: &Path) -> anyhow::Result<SigningKey> {
    let text = String::from_utf8(read_limited(path, 1024, "key file")?).context("the key file is not text")?;
    let bytes = hex::decode(text.trim()).context("the key file must hold 64 hex digits")?;
    let seed: [u8; 32] =
        bytes.try_into().map_err(|_| anyhow::anyhow!("the key file must hold 32 bytes (64 hex digits)"))?;
    Ok(SigningKey::from_bytes(&seed))
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_millis() as u64)
}

pub async fn run(command: PluginCommand) -> anyhow::Result<()> {
    match command {
        PluginCommand::Install { package, grant, wait, node } => {
            let bytes = read_limited(&package, MAX_PLUGIN_PACKAGE_BYTES, "package")?;
            Package::decode(&bytes).with_context(|| format!("{} is not a plugin package", package.display()))?;
            let grant = grant.iter().map(|name| capability_arg(name)).collect::<anyhow::Result<Vec<_>>>()?;
            let arguments = json!({
                "package_base64": base64::engine::general_purpose::STANDARD.encode(&bytes),
                "grant": grant.iter().map(|capability| capability.name()).collect::<Vec<_>>(),
            });
            let installing = zeromesh::cli::spinner(format!("installing {} through {node}", package.display()));
            let answer = call(&node, "plugin_install", arguments).await;
            installing.finish_and_clear();
            let answer = answer?;
            let tools: Vec<&str> = answer["tools"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            let module = answer["module_sha256"].as_str().unwrap_or_default();
            println!(
                "installed {} {} at log index {} (module {module}); tools: {}",
                answer["installed"].as_str().unwrap_or_default(),
                answer["version"].as_str().unwrap_or_default(),
                answer["log_index"],
                tools.join(", ")
            );
            if let Some(seconds) = wait {
                let Loaded { loaded, members, without_plugins } =
                    wait_loaded(&node, module, Duration::from_secs(seconds)).await?;
                match without_plugins {
                    0 => println!("loaded on {loaded} of {members} members"),
                    others => println!(
                        "loaded on {loaded} of {members} members that run plugins ({others} run none and call through them)"
                    ),
                }
            }
        }
        PluginCommand::Uninstall { name, node } => {
            let answer = call(&node, "plugin_uninstall", json!({ "name": name })).await?;
            println!("uninstalled {name} at log index {}", answer["log_index"]);
        }
        PluginCommand::Trust { publisher, node } => {
            let publisher = publisher_arg(&publisher)?;
            let answer = call(&node, "plugin_trust", json!({ "publisher": publisher })).await?;
            let already = if answer["already"] == json!(true) { " (already trusted)" } else { "" };
            println!("trusted {publisher}{already} at log index {}", answer["log_index"]);
        }
        PluginCommand::Distrust { publisher, node } => {
            let publisher = publisher_arg(&publisher)?;
            let answer = call(&node, "plugin_distrust", json!({ "publisher": publisher })).await?;
            println!(
                "distrusted {publisher} at log index {}; uninstalled: {}",
                answer["log_index"], answer["uninstalled"]
            );
        }
        PluginCommand::List { node } => show_list(&call(&node, "plugin_list", json!({})).await?),
        PluginCommand::Keygen { out, force } => {
            if out.exists() && !force {
                bail!("{} exists; pass --force to replace it", out.display());
            }
            let key = generate_signing_key().map_err(|e| anyhow::anyhow!("no randomness for a key: {e}"))?;
            write_secret(&out, &hex::encode(key.to_bytes()))?;
            let public = PublisherKey::of(&key).to_string();
            let public_path = PathBuf::from(format!("{}.pub", out.display()));
            std::fs::write(&public_path, format!("{public}\n"))
                .with_context(|| format!("writing {}", public_path.display()))?;
            println!("{public}");
            eprintln!("secret key in {}, public key in {}", out.display(), public_path.display());
        }
        PluginCommand::Sign { module, manifest, key, out } => {
            let mut wasm = read_limited(&module, MAX_PLUGIN_PACKAGE_BYTES, "module")?;
            if module.extension().is_some_and(|extension| extension == "wat") {
                wasm = wat::parse_bytes(&wasm)
                    .with_context(|| format!("{} is not valid WebAssembly text", module.display()))?
                    .into_owned();
            }
            let manifest_text = read_limited(&manifest, MAX_PLUGIN_MANIFEST_BYTES, "manifest")?;
            let manifest: Manifest = serde_json::from_slice(&manifest_text)
                .with_context(|| format!("{} is not a valid manifest", manifest.display()))?;
            let package = Package::sign(wasm, manifest, &read_key(&key)?)?;
            let out = out.unwrap_or_else(|| module.with_extension("zmp"));
            std::fs::write(&out, package.encode()).with_context(|| format!("writing {}", out.display()))?;
            println!("{}", out.display());
        }
        PluginCommand::Verify { package, trusted } => {
            let bytes = read_limited(&package, MAX_PLUGIN_PACKAGE_BYTES, "package")?;
            let decoded = Package::decode(&bytes)?;
            let trusted = if trusted.is_empty() {
                // Without a trusted set, check everything but trust.
                vec![decoded.publisher()]
            } else {
                let parse =
                    |key: &String| -> anyhow::Result<PublisherKey> { Ok(PublisherKey::parse(&publisher_arg(key)?)?) };
                trusted.iter().map(parse).collect::<anyhow::Result<Vec<_>>>()?
            };
            let verified = decoded.verify(&trusted, now_ms())?;
            let manifest = &verified.manifest;
            println!("ok: {} {} by publisher {}", manifest.name, manifest.version, verified.publisher);
            println!("module sha256: {}", hex::encode(verified.module_sha256));
            let tools: Vec<&str> = manifest.tools.iter().map(|tool| tool.name.as_str()).collect();
            println!("tools: {}", tools.join(", "));
            let capabilities: Vec<&str> = manifest.capabilities.iter().map(|capability| capability.name()).collect();
            println!(
                "capabilities: {}",
                if capabilities.is_empty() { "none".to_owned() } else { capabilities.join(", ") }
            );
            println!(
                "limits: {} fuel, {} bytes of memory, {} ms per call",
                manifest.limits.fuel_per_call, manifest.limits.memory_bytes, manifest.limits.wall_clock_ms
            );
        }
    }
    Ok(())
}

/// Writes `text` to a new file readable only by its owner.
pub fn write_secret(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    writeln!(file, "{text}").with_context(|| format!("writing {}", path.display()))
}
