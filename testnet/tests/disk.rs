//! Disks that fail. A node whose data is damaged on disk (a byte range of
//! its write-ahead log overwritten while it was stopped) refuses to start,
//! naming the file, rather than serving what is left; the rest of the mesh
//! goes on serving. A node whose data disk (a small filesystem the test
//! mounts, root only) fills up past its reserve stops writes on every node,
//! with an error naming it, until space is freed; nothing is lost.

use std::time::Duration;

use serde_json::json;
use zeromesh_testnet::{wait_until, Testnet, TestnetOptions};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_write_ahead_log_is_damaged_refuses_to_start_naming_the_file() {
    let mut testnet = Testnet::start(3, TestnetOptions::default()).await.expect("a testnet starts");
    for index in 0..40 {
        let value = format!("{index} {}", "x".repeat(200));
        testnet.call(index % 3, "memory_put", json!({ "path": format!("d/{index}"), "value": value })).await.unwrap();
    }
    let leader = testnet.leader(WAIT).await.unwrap();
    let damaged = (leader + 1) % 3;
    testnet.kill9(damaged).await.unwrap();

    let db = testnet.nodes[damaged].data_dir.join("raft/db");
    let mut logs: Vec<_> = std::fs::read_dir(&db)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "log"))
        .collect();
    logs.sort();
    let wal = logs.pop().expect("a write-ahead log file");
    let mut bytes = std::fs::read(&wal).unwrap();
    let middle = bytes.len() / 2;
    for byte in &mut bytes[middle..middle + 16] {
        *byte ^= 0xa5;
    }
    std::fs::write(&wal, bytes).unwrap();

    let refused = testnet.restart(damaged).await.expect_err("a node on a damaged store does not start");
    let refused = format!("{refused:#}");
    assert!(refused.contains("is damaged") && refused.contains(&wal.display().to_string()), "{refused}");

    // The others still commit and serve.
    let written = testnet.call(leader, "memory_put", json!({ "path": "d/after", "value": "yes" })).await.unwrap();
    assert_eq!(written["outcome"], "written");
}

/// A tmpfs mounted on a directory for the test, unmounted when dropped
/// (lazily: a killed node's files may still be closing).
struct Mount(std::path::PathBuf);

impl Mount {
    fn tmpfs(at: &std::path::Path, megabytes: u64) -> Mount {
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(at)
            .status()
            .unwrap();
        assert!(status.success(), "mount a tmpfs on {}", at.display());
        Mount(at.to_owned())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    let status = std::process::Command::new("cp").arg("-a").arg(format!("{}/.", from.display())).arg(to).status();
    assert!(status.unwrap().success(), "copy {} to {}", from.display(), to.display());
}

async fn put(testnet: &Testnet, node: usize, path: &str) -> Result<serde_json::Value, zeromesh::client::ClientError> {
    testnet.call(node, "memory_put", json!({ "path": path, "value": "v" })).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_stop_on_every_node_while_one_data_disk_is_low_and_resume_when_space_returns() {
    let root = std::process::Command::new("id").arg("-u").output().unwrap().stdout.trim_ascii() == b"0";
    if !root {
        eprintln!("skipped: mounting a small filesystem needs root");
        return;
    }
    let options = TestnetOptions {
        args: ["--min-free-disk-mb", "24", "--advert-interval-ms", "1000"].map(String::from).to_vec(),
        ..Default::default()
    };
    let mut testnet = Testnet::start(3, options).await.expect("a testnet starts");
    put(&testnet, 0, "d/before").await.unwrap();
    // Node 2's data moves onto a 64 MiB filesystem of its own.
    let small = 2;
    testnet.kill9(small).await.unwrap();
    let data = testnet.nodes[small].data_dir.clone();
    let saved = data.with_extension("saved");
    std::fs::rename(&data, &saved).unwrap();
    std::fs::create_dir(&data).unwrap();
    let _mount = Mount::tmpfs(&data, 64);
    copy_dir(&saved, &data);
    testnet.restart(small).await.unwrap();
    put(&testnet, 0, "d/on-a-small-disk").await.unwrap();

    // Fill it to under the reserve.
    let free = |path: &std::path::Path| {
        let output = std::process::Command::new("df").args(["--output=avail", "-B1"]).arg(path).output().unwrap();
        String::from_utf8_lossy(&output.stdout).lines().nth(1).unwrap().trim().parse::<u64>().unwrap()
    };
    let filler = data.join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0xa5u8; 1 << 20];
    while free(&data) > 16 << 20 {
        std::io::Write::write_all(&mut file, &chunk).unwrap();
    }
    drop(file);
    let node_id = testnet.nodes[small].address.node_id;
    let testnet_ref = &testnet;
    for node in 0..3 {
        let refused = wait_until(&format!("node {node} to refuse writes"), WAIT, || async move {
            match put(testnet_ref, node, "d/refused").await {
                Err(zeromesh::client::ClientError::Tool(message)) if message.contains("MiB free on its data disk") => {
                    Some(message)
                }
                _ => None,
            }
        })
        .await
        .unwrap();
        let named = if node == small { "this node".to_owned() } else { format!("node {node_id}") };
        assert!(refused.contains(&named), "node {node}: {refused}");
    }
    // The operator sees it in the status table.
    let shown = zeromesh_testnet::cli(&["status", "--node", &testnet.nodes[0].address.api]).unwrap();
    assert!(shown.contains("(BELOW the 24 MiB kept)"), "{shown}");
    // Reads go on.
    let read = testnet.call(1, "memory_get", json!({ "path": "d/on-a-small-disk" })).await.unwrap();
    assert_eq!(read["found"], true);

    std::fs::remove_file(&filler).unwrap();
    wait_until("writes to resume", WAIT, || async { put(&testnet, 1, "d/after").await.ok() }).await.unwrap();
    // Nothing was lost or damaged: the small node restarts on its data and has every write.
    testnet.restart(small).await.unwrap();
    wait_until("the small node to hold the last write", WAIT, || async {
        let read = testnet.call(small, "memory_get", json!({ "path": "d/after", "consistency": "stale" })).await;
        read.ok().filter(|read| read["found"] == true)
    })
    .await
    .unwrap();
    testnet.kill9(small).await.unwrap();
}
