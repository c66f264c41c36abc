//! The deployment examples in `deploy/`, checked against the binary: the
//! systemd unit passes `systemd-analyze verify` without a warning, the
//! command it starts is one the binary accepts, and the settings file it
//! names passes `zeromesh config check`; the Prometheus alert rules load,
//! fire as their scenarios say (`promtool test rules`), and use only
//! metrics a node serves; the Kubernetes manifests pass the API's schemas;
//! the Rust the README and the image's build stage name builds every locked
//! dependency; and what deployments where addresses are names rely on: a
//! join token chosen by the operator, a bootstrap address without a peer id,
//! an advertised host name.

use std::path::{Path, PathBuf};
use std::process::Command;

use zeromesh_testnet::{cli, connect_when_known, http_request, zeromesh_binary, Testnet, TestnetOptions};

fn deploy() -> PathBuf {
    zeromesh_testnet::package_dir().join("../deploy")
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
    assert!(checked.contains("storage     48 MiB in memory, background writes 64 MiB/s"), "{checked}");
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

/// `zeromesh run` on loopback ports of its own, joining through `bootstrap`
/// with `token`.
fn joining_node(data: &Path, bootstrap: &str, token: &str) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(zeromesh_binary().unwrap());
    command
        .args(["run", "--data", data.to_str().unwrap(), "--listen", "/ip4/127.0.0.1/tcp/0"])
        .args(["--api", "127.0.0.1:0", "--bootstrap", bootstrap, "--join-token", token])
        .kill_on_drop(true);
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_through_a_host_name_with_the_operators_tokens_and_is_reached_at_its_advertised_host() {
    use tokio::io::AsyncBufReadExt;
    let token = "operator-chosen-join-token-6b1f0e";
    let admin = cli(&["token", "generate"]).unwrap().trim().to_owned();
    let options = TestnetOptions {
        auth: true,
        args: vec!["--advertise-host".into(), "localhost".into()],
        env: vec![("ZEROMESH_JOIN_TOKEN".into(), token.into()), ("ZEROMESH_ADMIN_TOKEN".into(), admin.clone())],
        ..Default::default()
    };
    let testnet = Testnet::start(1, options).await.unwrap();
    let first = testnet.nodes[0].address.clone();
    assert!(first.p2p.starts_with("/dns/localhost/tcp/"), "the advertised host is in the mesh address: {}", first.p2p);
    assert!(first.api.starts_with("ws://localhost:"), "and in the API address: {}", first.api);
    let port = first.p2p.split('/').nth(4).unwrap();

    // A second node knows only a host name and a port, and the token.
    let data = tempfile::tempdir().unwrap();
    let mut second = joining_node(data.path(), &format!("/dns4/localhost/tcp/{port}"), token)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(second.stdout.take().unwrap()).lines();
    let mut second_api = None;
    let joined = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(api) = line.split_whitespace().find_map(|word| word.strip_prefix("api=")) {
                second_api = Some(api.to_owned());
            }
            if line.starts_with("joined ") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(joined, Ok(true), "the second node joins through /dns4/localhost/tcp/{port}");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    // Through the second node, with the admin token the operator chose.
    assert_eq!(testnet.admin_token.as_deref(), Some(admin.as_str()));
    let mut client =
        connect_when_known(&second_api.unwrap(), &admin, std::time::Duration::from_secs(60)).await.unwrap();
    let written = client
        .call_tool("memory_put", serde_json::json!({ "path": "deploy/joined", "value": "through a name" }))
        .await
        .expect("a write through the joined node");
    assert!(written["log_index"].as_u64().is_some(), "{written}");
    let status = testnet.status(0).await.unwrap();
    let members = status["members"].as_array().unwrap();
    assert_eq!(members.len(), 2, "{status}");
    let own = members.iter().find(|member| member["node_id"] == status["node_id"]).unwrap();
    assert!(own["p2p_addr"].as_str().unwrap().starts_with("/dns/localhost/"), "{own}");
    drop(second);
}

#[test]
fn the_kubernetes_manifests_validate_against_the_api_schemas_of_the_versions_in_support() {
    let validate = std::env::var("ZEROMESH_KUBERNETES_VALIDATE").unwrap_or_else(|_| {
        panic!("ZEROMESH_KUBERNETES_VALIDATE is not set: run scripts/test.sh, which installs kubernetes-validate")
    });
    // Strict: a field the API does not know (a misspelt probe, say) is an error.
    let validate = |path: &Path, version: &str| {
        let output = Command::new(&validate).args(["--strict", "--quiet", "-k", version]).arg(path).output().unwrap();
        let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        (output.status.success(), said)
    };
    let manifests = deploy().join("kubernetes/zeromesh.yaml");
    for version in ["1.32.0", "1.37.0"] {
        let (valid, said) = validate(&manifests, version);
        assert!(valid && !said.contains("ERROR"), "Kubernetes {version}: {said}");
    }
    let dir = tempfile::tempdir().unwrap();
    let misspelt = dir.path().join("zeromesh.yaml");
    let text = std::fs::read_to_string(&manifests).unwrap();
    std::fs::write(&misspelt, text.replace("readinessProbe:", "readinesProbe:")).unwrap();
    let (valid, said) = validate(&misspelt, "1.37.0");
    assert!(!valid && said.contains("'readinesProbe' was unexpected"), "{said}");
}

/// The target triple rustc builds for by default here (`x86_64-unknown-linux-gnu`).
fn host_triple() -> String {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let output = Command::new(rustc).arg("-vV").output().unwrap();
    let said = String::from_utf8_lossy(&output.stdout);
    said.lines().find_map(|line| line.strip_prefix("host: ")).expect("rustc -vV names its host").to_owned()
}

/// `major.minor` of a version such as `1.95`, `1.95.0` or `1.95-bookworm`.
fn major_minor(version: &str) -> (u32, u32) {
    let mut parts = version.split(['.', '-']).map(|part| part.parse::<u32>());
    match (parts.next(), parts.next()) {
        (Some(Ok(major)), Some(Ok(minor))) => (major, minor),
        _ => panic!("not a version: {version}"),
    }
}

#[test]
fn the_rust_the_readme_and_the_image_name_builds_every_locked_dependency() {
    let root = zeromesh_testnet::package_dir().join("..");
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let declared = manifest
        .lines()
        .find_map(|line| line.strip_prefix("rust-version = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .expect("the workspace declares its rust-version");
    let workspace = major_minor(declared);

    // Every locked dependency of this platform (the one the image builds
    // for) builds with the workspace's Rust. Only this platform's are
    // downloaded by a build, and the check works offline.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let host = host_triple();
    let output = Command::new(cargo)
        .args(["metadata", "--locked", "--offline", "--format-version", "1", "--filter-platform", &host])
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(output.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&output.stderr));
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let packages = metadata["packages"].as_array().unwrap();
    assert!(packages.len() > 100, "{} packages", packages.len());
    for package in packages {
        if let Some(needed) = package["rust_version"].as_str() {
            assert!(
                major_minor(needed) <= workspace,
                "{} {} needs Rust {needed}; the workspace says {declared}",
                package["name"],
                package["version"]
            );
        }
    }

    // What a user is told to install, and what the image builds with.
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(readme.contains(&format!("with Rust {declared} or newer")), "the README names Rust {declared}");
    let dockerfile = std::fs::read_to_string(deploy().join("docker/Dockerfile")).unwrap();
    let image = dockerfile
        .lines()
        .find_map(|line| line.strip_prefix("FROM rust:"))
        .expect("the build stage is an official Rust image");
    assert!(major_minor(image) >= workspace, "the image builds with rust:{image}; the workspace needs {declared}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_cannot_reach_its_bootstrap_address_says_why_at_the_default_log_level() {
    use tokio::io::AsyncBufReadExt;
    let data = tempfile::tempdir().unwrap();
    let mut node = joining_node(data.path(), "/dns4/no-such-node.invalid/tcp/7001", "t")
        .args(["--log-format", "json"])
        .env_remove("ZEROMESH_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(node.stderr.take().unwrap()).lines();
    let mut before = Vec::new();
    let said = tokio::time::timeout(std::time::Duration::from_secs(90), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("not a member yet") {
                return line;
            }
            before.push(line);
        }
        String::from("(the node exited)")
    })
    .await
    .expect("a warning within 90 s");
    // libp2p-kad's own "No known peers" fires half a second after the node
    // listens, long before the join warning (10 s): noise, not a reason.
    assert!(!before.iter().any(|line| line.contains("bootstrap: No known peers")), "{before:#?}");
    let entry: serde_json::Value = serde_json::from_str(&said).unwrap_or_else(|_| panic!("not JSON: {said}"));
    assert_eq!(entry["level"], "WARN", "{said}");
    assert_eq!(entry["fields"]["address"], "/dns4/no-such-node.invalid/tcp/7001", "{said}");
    assert!(entry["fields"]["reason"].as_str().unwrap().starts_with("not reachable: "), "{said}");
    drop(node);
}

/// The YAML documents of `path`, as JSON (Debian's python3-yaml reads them;
/// scripts/setup.sh installs it).
fn yaml_documents(path: &Path) -> Vec<serde_json::Value> {
    let script = "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))";
    let output = Command::new("python3").args(["-c", script]).arg(path).output().expect("python3 runs");
    assert!(output.status.success(), "{} is not YAML: {}", path.display(), String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Every `ZEROMESH_*` variable `zeromesh run` reads, from its help.
fn known_variables() -> std::collections::BTreeSet<String> {
    let help = cli(&["run", "--help"]).unwrap();
    help.split("[env: ").skip(1).filter_map(|rest| rest.split(['=', ']']).next()).map(str::to_owned).collect()
}

/// `zeromesh config check` with exactly `environment` and `args`, as a
/// container would start the node.
fn config_check(what: &str, environment: &[(String, String)], args: &[&str]) {
    let output = Command::new(zeromesh_binary().unwrap())
        .args(["config", "check"])
        .args(args)
        .env_clear()
        .envs(environment.iter().map(|(name, value)| (name, value)))
        .output()
        .unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success() && said.ends_with("ok\n"), "{what}: config check refused it: {said}");
}

#[test]
fn the_container_image_compose_file_and_kubernetes_manifests_start_nodes_the_binary_accepts() {
    let known = known_variables();
    assert!(known.contains("ZEROMESH_ADVERTISE_HOST") && known.contains("ZEROMESH_JOIN_TOKEN"), "{known:?}");
    let admin = cli(&["token", "generate"]).unwrap().trim().to_owned();
    let join = "a-join-token-from-a-secret".to_owned();
    let check_names = |what: &str, environment: &[(String, String)]| {
        for (name, _) in environment.iter().filter(|(name, _)| name.starts_with("ZEROMESH_")) {
            assert!(known.contains(name), "{what} sets {name}, which `zeromesh run` does not read");
        }
    };

    // The image: its ENV, ENTRYPOINT and CMD.
    let dockerfile = std::fs::read_to_string(deploy().join("docker/Dockerfile")).unwrap();
    let joined = dockerfile.replace("\\\n", " ");
    let runtime_stage = joined.rsplit("\nFROM ").next().unwrap();
    let image_env: Vec<(String, String)> = runtime_stage
        .lines()
        .filter_map(|line| line.strip_prefix("ENV "))
        .flat_map(|pairs| pairs.split_whitespace())
        .filter_map(|pair| pair.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
    assert!(image_env.len() >= 4, "{image_env:?}");
    check_names("the Dockerfile", &image_env);
    assert!(
        runtime_stage.contains(r#"ENTRYPOINT ["/usr/local/bin/zeromesh"]"#) && runtime_stage.contains(r#"CMD ["run"]"#)
    );
    assert!(runtime_stage.contains("USER 10001"), "the image runs unprivileged");
    config_check("the image", &image_env, &[]);

    // Compose: each service, on the image's environment.
    let compose = yaml_documents(&deploy().join("docker/compose.yaml")).remove(0);
    let services = compose["services"].as_object().unwrap();
    assert_eq!(services.len(), 3, "a 3-node mesh");
    let mut founders = 0;
    for (name, service) in services {
        let mut environment = image_env.clone();
        for (variable, value) in service["environment"].as_object().unwrap() {
            let value = value.as_str().unwrap();
            let value = if value.starts_with("${ZEROMESH_JOIN_TOKEN") {
                join.clone()
            } else if value.starts_with("${ZEROMESH_ADMIN_TOKEN") {
                admin.clone()
            } else {
                value.to_owned()
            };
            environment.push((variable.clone(), value));
        }
        check_names(&format!("compose service {name}"), &environment);
        let command: Vec<&str> = match service["command"].as_array() {
            Some(words) => words.iter().map(|word| word.as_str().unwrap()).collect(),
            None => vec!["run"],
        };
        assert_eq!(command[0], "run", "{name}");
        founders += usize::from(command.contains(&"--init"));
        config_check(&format!("compose service {name}"), &environment, &command[1..]);
    }
    assert_eq!(founders, 1, "one service founds the cluster");

    // Kubernetes: the StatefulSet's container, as pod 0 and as pod 1.
    let documents = yaml_documents(&deploy().join("kubernetes/zeromesh.yaml"));
    let kinds: Vec<&str> = documents.iter().filter_map(|document| document["kind"].as_str()).collect();
    assert_eq!(kinds, ["Service", "Service", "StatefulSet"]);
    assert_eq!(documents[0]["spec"]["clusterIP"], "None", "a headless service names each pod");
    let set = &documents[2]["spec"];
    assert!(set["volumeClaimTemplates"].as_array().is_some_and(|claims| !claims.is_empty()), "persistent volumes");
    let container = &set["template"]["spec"]["containers"][0];
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/ready");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/health");
    let script = container["args"][0].as_str().unwrap();
    assert!(script.contains("zeromesh run --init") && script.contains("zeromesh run;"), "{script}");
    for (pod, args) in [("zeromesh-0", vec!["--init"]), ("zeromesh-1", vec![])] {
        let mut environment = Vec::new();
        for variable in container["env"].as_array().unwrap() {
            let name = variable["name"].as_str().unwrap().to_owned();
            let value = match (&variable["value"], variable["valueFrom"]["secretKeyRef"]["key"].as_str()) {
                (serde_json::Value::String(value), _) => {
                    value.replace("$(POD_NAME)", pod).replace("$(POD_NAMESPACE)", "default")
                }
                (_, Some("join-token")) => join.clone(),
                (_, Some("admin-token")) => admin.clone(),
                _ => continue,
            };
            environment.push((name, value));
        }
        check_names(&format!("kubernetes pod {pod}"), &environment);
        config_check(&format!("kubernetes pod {pod}"), &environment, &args);
    }
}
