//! `zeromesh plugin keygen | sign | verify`: publisher keys and signed
//! plugin packages, on the command line.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::Subcommand;
use ed25519_dalek::SigningKey;
use zeromesh_plugins::{generate_signing_key, Manifest, Package, PublisherKey};
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
        /// A trusted publisher key (64 hex digits); repeatable.
        #[arg(long = "trust")]
        trusted: Vec<String>,
    },
}

fn read_limited(path: &Path, limit: usize, what: &str) -> anyhow::Result<Vec<u8>> {
    let size = std::fs::metadata(path).with_context(|| format!("reading {what} {}", path.display()))?.len();
    if size > limit as u64 {
        bail!("{what} {} is {size} bytes, over the {limit}-byte limit", path.display());
    }
    std::fs::read(path).with_context(|| format!("reading {what} {}", path.display()))
}

fn read_key(path: &Path) -> anyhow::Result<SigningKey> {
    let text = String::from_utf8(read_limited(path, 1024, "key file")?).context("the key file is not text")?;
    let bytes = hex::decode(text.trim()).context("the key file must hold 64 hex digits")?;
    let seed: [u8; 32] =
        bytes.try_into().map_err(|_| anyhow::anyhow!("the key file must hold 32 bytes (64 hex digits)"))?;
    Ok(SigningKey::from_bytes(&seed))
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_millis() as u64)
}

pub fn run(command: PluginCommand) -> anyhow::Result<()> {
    match command {
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
            let wasm = read_limited(&module, MAX_PLUGIN_PACKAGE_BYTES, "module")?;
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
                trusted.iter().map(|key| PublisherKey::parse(key)).collect::<Result<Vec<_>, _>>()?
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

fn write_secret(path: &Path, text: &str) -> anyhow::Result<()> {
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
