//! Files named by operators and clients, read within a limit. The limit
//! holds on the bytes read, not on the size the file system reports: a
//! device, a FIFO or a `/proc` file reports none, and a file can grow
//! between a `stat` and a read.

use std::fs::File;
use std::io::Read;
use std::path::Path;

/// The whole of `path` if it is at most `limit` bytes; `what` (a setting or
/// a kind of file) starts every error.
pub fn read_limited(path: &Path, limit: usize, what: &str) -> anyhow::Result<Vec<u8>> {
    let cannot_read = |error: std::io::Error| anyhow::anyhow!("{what}: cannot read {}: {error}", path.display());
    let file = File::open(path).map_err(cannot_read)?;
    let mut bytes = Vec::new();
    file.take(limit as u64 + 1).read_to_end(&mut bytes).map_err(cannot_read)?;
    if bytes.len() > limit {
        anyhow::bail!("{what}: {} is over the limit of {limit} bytes", path.display());
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_holds_on_what_is_read_even_when_the_file_reports_no_size() {
        let error = read_limited(Path::new("/dev/zero"), 1024, "config").expect_err("an endless file is refused");
        assert_eq!(error.to_string(), "config: /dev/zero is over the limit of 1024 bytes");
        let dir = tempfile::tempdir().expect("a temporary folder");
        let path = dir.path().join("small");
        std::fs::write(&path, b"1234").expect("writes");
        assert_eq!(read_limited(&path, 4, "key file").expect("at the limit is read"), b"1234");
        assert!(read_limited(&path, 3, "key file").is_err());
        let missing = read_limited(&dir.path().join("absent"), 4, "package").expect_err("no such file");
        assert!(missing.to_string().starts_with("package: cannot read "), "{missing}");
    }
}
