//! `zeromesh backup`: the whole replicated state of a cluster at one log
//! index and the plugin modules, streamed from a node into a file (never
//! whole in memory), with a progress bar, then verified end to end before
//! the file gets its name.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Bytes copied per read.
const CHUNK_BYTES: usize = 256 * 1024;

pub async fn backup(node: &str, out: &Path) -> anyhow::Result<()> {
    if out.exists() {
        bail!("{} exists already; give another file (a backup never overwrites one)", out.display());
    }
    let asking = zeromesh::cli::spinner(format!("{node} is taking a snapshot"));
    let answer = zeromesh::client::http_get(node, "/backup", None).await;
    asking.finish_and_clear();
    let mut answer = answer.map_err(|error| anyhow::anyhow!("{node}: {error}"))?;
    if answer.status != 200 {
        let mut said = Vec::new();
        let _ = (&mut answer.body).take(64 * 1024).read_to_end(&mut said).await;
        bail!("{node} refused the backup ({}): {}", answer.status, String::from_utf8_lossy(&said).trim());
    }
    let length = answer.length.context("the node sent no Content-Length")?;
    let log_index = answer.header("x-zeromesh-log-index").unwrap_or("?").to_owned();
    let missing: usize = answer.header("x-zeromesh-modules-missing").and_then(|count| count.parse().ok()).unwrap_or(0);
    let partial = PathBuf::from(format!("{}.part", out.display()));
    let mut file =
        tokio::fs::File::create(&partial).await.with_context(|| format!("creating {}", partial.display()))?;
    let bar = zeromesh::cli::bytes_bar(length, format!("backup at log index {log_index}"));
    let mut hasher = Sha256::new();
    let mut chunk = vec![0u8; CHUNK_BYTES];
    let mut received = 0u64;
    loop {
        let read = answer.body.read(&mut chunk).await.context("receiving the backup")?;
        if read == 0 {
            break;
        }
        hasher.update(&chunk[..read]);
        file.write_all(&chunk[..read]).await.with_context(|| format!("writing {}", partial.display()))?;
        received += read as u64;
        bar.set_position(received);
    }
    bar.finish_and_clear();
    file.sync_all().await.with_context(|| format!("writing {}", partial.display()))?;
    drop(file);
    if received != length {
        let _ = std::fs::remove_file(&partial);
        bail!("the backup was cut after {received} of {length} bytes; nothing was kept");
    }
    let checking = zeromesh::cli::spinner("verifying every record, the checksum and every module");
    let verified_path = partial.clone();
    let verified = tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&verified_path)?;
        Ok::<_, anyhow::Error>(zeromesh_consensus::verify_backup(file, &verified_path)?)
    })
    .await?;
    checking.finish_and_clear();
    let verified = match verified {
        Ok(verified) => verified,
        Err(error) => {
            let _ = std::fs::remove_file(&partial);
            return Err(error.context("the backup does not verify; nothing was kept"));
        }
    };
    std::fs::rename(&partial, out).with_context(|| format!("naming {}", out.display()))?;
    println!(
        "backup of log index {} ({} records, {} plugin modules, {} bytes, sha256 {}) in {}",
        verified.log_index,
        verified.records,
        verified.modules,
        verified.bytes,
        hex::encode(hasher.finalize()),
        out.display()
    );
    if missing > 0 {
        eprintln!(
            "warning: {node} lacked the modules of {missing} installed plugin(s) (not fetched yet); a backup from another node holds them"
        );
    }
    Ok(())
}
