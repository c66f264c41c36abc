//! The deployment examples in `deploy/`, checked against the binary: the
//! systemd unit passes `systemd-analyze verify` without a warning, the
//! command it starts is one the binary accepts, and the settings file it
//! names passes `zeromesh config check`.

use std::path::Path;

use zeromesh_testnet::{cli, zeromesh_binary};

#[test]
fn the_systemd_unit_verifies_and_the_node_accepts_its_command_and_settings() {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd");
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
