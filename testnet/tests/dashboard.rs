//! The dashboard (`/ui`) in a real browser: Debian's Chromium, driven by
//! Playwright (`tests/browser/dashboard.mjs`), against an authenticated
//! 3-node testnet. It logs in with a token, sees the three nodes up, sees an
//! agreement's usage bar move after an agent's call, sees a killed node
//! turn red, polls at most once a second, and saves screenshots.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};
use zeromesh_testnet::nemesis::{set_up_agreement, AGENT, AGREEMENT};
use zeromesh_testnet::{connect_when_known, Testnet, TestnetOptions};

const WAIT: Duration = Duration::from_secs(60);

/// The driver script, running one browser page.
struct Browser {
    child: Child,
    stdin: ChildStdin,
    answers: Lines<BufReader<ChildStdout>>,
}

impl Browser {
    async fn open(url: &str) -> Browser {
        let playwright = PathBuf::from(std::env::var("ZEROMESH_PLAYWRIGHT_DIR").unwrap_or_else(|_| {
            panic!("ZEROMESH_PLAYWRIGHT_DIR is not set: run through scripts/test.sh, which installs playwright-core")
        }));
        let chromium = std::env::var("ZEROMESH_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        assert!(Path::new(&chromium).exists(), "{chromium} is missing: scripts/setup.sh installs Debian's chromium");
        let script = zeromesh_testnet::package_dir().join("tests/browser/dashboard.mjs");
        // Next to its node_modules, so that `import "playwright-core"` resolves.
        std::fs::copy(&script, playwright.join("dashboard.mjs")).unwrap();
        let mut child = tokio::process::Command::new("node")
            .arg("dashboard.mjs")
            .args([&chromium, url])
            .current_dir(&playwright)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node starts");
        let stdin = child.stdin.take().unwrap();
        let answers = BufReader::new(child.stdout.take().unwrap()).lines();
        Browser { child, stdin, answers }
    }

    /// Sends one command; its answer's detail, or a panic saying what failed.
    async fn ask(&mut self, command: &str) -> String {
        self.stdin.write_all(format!("{command}\n").as_bytes()).await.unwrap();
        let answer = tokio::time::timeout(WAIT, self.answers.next_line())
            .await
            .unwrap_or_else(|_| panic!("the browser did not answer `{command}` within {WAIT:?}"))
            .unwrap()
            .unwrap_or_else(|| panic!("the browser driver exited during `{command}`"));
        match answer.strip_prefix("ok") {
            Some(detail) => detail.trim().to_owned(),
            None => panic!("`{command}` failed in the browser: {answer}"),
        }
    }

    async fn close(mut self) {
        let _ = self.stdin.write_all(b"quit\n").await;
        let _ = tokio::time::timeout(WAIT, self.child.wait()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_mesh_live_in_a_real_browser() {
    // Started, the testnet has its three voters.
    let mut testnet = Testnet::start(3, TestnetOptions { auth: true, ..Default::default() }).await.unwrap();
    let admin = testnet.admin_token.clone().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let agent_token = set_up_agreement(&testnet, &admin, keys.path(), 100).unwrap();
    let api = testnet.nodes[0].address.api.clone();
    let url = format!("http://{}/ui", api.trim_start_matches("ws://"));

    let mut browser = Browser::open(&url).await;
    browser.ask(&format!("login {admin}")).await;
    browser.ask("up 3").await;
    let before: u64 = browser.ask(&format!("usage {AGREEMENT} 0 0")).await.parse().unwrap();
    browser.ask(&format!("text agent-{AGENT} running")).await;

    // An agent's call under the agreement moves its usage bar.
    let mut agent = connect_when_known(&api, &agent_token, WAIT).await.unwrap();
    let call = json!({ "name": "memory_put", "arguments": { "path": format!("{AGENT}/notes"), "value": "hello" } });
    let answer = agent.request("tools/call", call).await.unwrap();
    assert_eq!(answer["isError"], false, "{answer}");
    let after: u64 = browser.ask(&format!("usage {AGREEMENT} 0 {}", before + 1)).await.parse().unwrap();
    assert_eq!(after, before + 1, "one call counted once");
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let healthy = shots.join("dashboard.png");
    browser.ask(&format!("screenshot {}", healthy.display())).await;

    // A node killed turns red.
    let killed = testnet.nodes[2].address.node_id;
    testnet.kill9(2).await.unwrap();
    let noticed_ms = browser.ask(&format!("down {killed}")).await;
    let degraded = shots.join("dashboard-node-down.png");
    browser.ask(&format!("screenshot {}", degraded.display())).await;
    eprintln!(
        "node {killed} shown down {noticed_ms} ms after kill -9; screenshots: {} {}",
        healthy.display(),
        degraded.display()
    );

    // No polling storm: one state request a second at most, per page.
    let counted = browser.ask("state-requests").await;
    let (requests, elapsed_ms) = counted.split_once(' ').unwrap();
    let (requests, elapsed_ms): (u64, u64) = (requests.parse().unwrap(), elapsed_ms.parse().unwrap());
    assert!(requests >= 3, "the page keeps itself up to date: {counted}");
    assert!(requests <= elapsed_ms / 1000 + 1, "{requests} state requests in {elapsed_ms} ms");
    browser.close().await;
}
