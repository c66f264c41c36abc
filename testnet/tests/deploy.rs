//! The deployment examples in `deploy/`, checked against the binary: the
//! systemd unit passes `systemd-analyze verify` without a warning, the
//! command it starts is one the binary accepts, and the settings file it
//! names passes `zeromesh config check`; the Prometheus alert rules load,
//! fire as their scenarios say (`promtool test rules`), and use only
//! metrics a node serves.

use std::path::{Path, PathBuf};
use std::process::Command;

use zeromesh_testnet::{cli, http_request, zeromesh_binary, Testnet, TestnetOptions};

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

#[test]
fn the_systemd_unit_verifies_and_the_node_accepts_its_command_and_settings() {
    let deploy = deploy().join("systemd");
    let unit = std::fs::read_to_string(deploy.join("zeromesh.service")).unwrap();
    let binary = zeromesh_binary().unwrap();

    // ExecStart, as `config check` instead of `run`, with the example settings file.
    let exec = unit.lines().find_map(|line| line.strip_prefix("ExecStart=")).expect("an ExecStart line");
    let words: Vec<&str> = exec.split_whitespace().collect();
    assert_eq!(&words[..2], ["/usr/local/bin/zeromesh", "run"], "{exec}");
    let settings = deploy.join("zeromesh.toml").to_string_lossy().into_owned();
    let mut check = vec!["config", "check"];
    check.extend(
        words[2..].iter().map(|word| if *word == "/etc/zeromesh/zeromesh.toml" { settings.as_str() } else { word }),
    );
    let checked = cli(&check).expect("the unit's command and settings are accepted");
    assert!(checked.ends_with("ok\n") && checked.contains("/var/lib/zeromesh"), "{checked}");
    // The check does refuse a wrong setting.
    let wrong = std::env::temp_dir().join(format!("zeromesh-wrong-{}.toml", std::process::id()));
    std::fs::write(&wrong, "voter_count = 9\n").unwrap();
    let refused = cli(&["config", "check", "--config", &wrong.to_string_lossy()]).unwrap_err();
    std::fs::remove_file(&wrong).unwrap();
    assert!(format!("{refused:#}").contains("setting `voter_count`"), "{refused:#}");

    // The user it runs as is made by the sysusers file beside it.
    let sysusers = std::fs::read_to_string(deploy.join("zeromesh.sysusers")).unwrap();
    assert!(unit.contains("User=zeromesh") && sysusers.lines().any(|line| line.starts_with("u zeromesh ")));

    // systemd's own check, with ExecStart pointing at the built binary.
    let Ok(output) = std::process::Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("skipped systemd-analyze verify: systemd-analyze is not installed");
        return;
    };
    assert!(output.status.success());
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("zeromesh.service");
    std::fs::write(&copy, unit.replace("/usr/local/bin/zeromesh", &binary.to_string_lossy())).unwrap();
    let verified = std::process::Command::new("systemd-analyze").arg("verify").arg(&copy).output().unwrap();
    let said = String::from_utf8_lossy(&verified.stderr);
    assert!(verified.status.success() && said.trim().is_empty(), "systemd-analyze verify: {said}");
}

/// promtool, as `scripts/setup.sh` fetches it, or from the PATH.
fn promtool() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache")))
        .expect("HOME or XDG_CACHE_HOME is set");
    let fetched = cache.join("zeromesh/tools/promtool");
    if fetched.exists() {
        return fetched;
    }
    assert!(
        Command::new("promtool").arg("--version").output().is_ok_and(|output| output.status.success()),
        "promtool is missing: run scripts/setup.sh, which fetches it"
    );
    PathBuf::from("promtool")
}

#[test]
fn the_alert_rules_load_and_fire_in_their_scenarios() {
    let rules = deploy().join("prometheus");
    for args in [["check", "rules", "zeromesh-alerts.yml"], ["test", "rules", "zeromesh-alerts.test.yml"]] {
        let output = Command::new(promtool()).args(args).current_dir(&rules).output().unwrap();
        let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(output.status.success() && said.contains("SUCCESS"), "promtool {}: {said}", args.join(" "));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_alert_rules_use_is_on_a_nodes_metrics_page() {
    let rules = std::fs::read_to_string(deploy().join("prometheus/zeromesh-alerts.yml")).unwrap();
    let used: std::collections::BTreeSet<&str> = rules
        .lines()
        .filter_map(|line| line.trim().strip_prefix("expr:"))
        .flat_map(|expr| expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')))
        .filter(|word| word.starts_with("zeromesh_"))
        .collect();
    assert!(used.len() >= 8, "the rules name the metrics they use: {used:?}");
    let testnet = Testnet::start(1, TestnetOptions { auth: true, ..Default::default() }).await.unwrap();
    let token = testnet.admin_token.clone().unwrap();
    let authorization = format!("Bearer {token}");
    let api = &testnet.nodes[0].address.api;
    let (status, page) = http_request(api, "GET", "/metrics", &[("Authorization", &authorization)], b"").await.unwrap();
    assert_eq!(status, 200, "{page}");
    let served: std::collections::BTreeSet<&str> =
        page.lines().filter(|line| !line.starts_with('#')).filter_map(|line| line.split(['{', ' ']).next()).collect();
    let missing: Vec<_> = used.iter().filter(|name| !served.contains(*name)).collect();
    assert!(missing.is_empty(), "the alert rules use metrics no node serves: {missing:?}\n{page}");
}
