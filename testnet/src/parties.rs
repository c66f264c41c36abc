//! The parties of an agreement on a testnet with authentication, set up
//! through the command line as an operator would: a provider and a
//! consumer key, the provider trusted as a plugin publisher, an agent that
//! holds the consumer key, and a policy set that lets agents call.

use std::path::Path;
use std::time::Duration;

use zeromesh::client::ApiClient;

use crate::{cli_as, connect_when_known, Testnet};

const WAIT: Duration = Duration::from_secs(60);

fn path(path: &Path) -> String {
    path.to_str().expect("a UTF-8 path").to_owned()
}

/// An operator with the admin token, the nodes' API addresses, and a folder
/// with the provider's and the consumer's keys.
pub struct Parties {
    pub admin: String,
    pub api: Vec<String>,
    pub keys: tempfile::TempDir,
}

impl Parties {
    /// Makes the keys, trusts the provider, spawns `agent` allowed `tools`
    /// with the consumer key, and permits every agent's calls.
    pub fn new(testnet: &Testnet, agent: &str, tools: &[&str]) -> Parties {
        let admin = testnet.admin_token.clone().expect("node 0 printed the first admin token");
        let api = testnet.nodes.iter().map(|node| node.address.api.clone()).collect();
        let parties = Parties { admin, api, keys: tempfile::tempdir().expect("a temporary folder") };
        parties.run(&["plugin", "keygen", "--out", &parties.key("provider")]).unwrap();
        parties.run(&["plugin", "keygen", "--out", &parties.key("consumer")]).unwrap();
        parties.run(&["plugin", "trust", &parties.public("provider"), "--node", &parties.api[0]]).unwrap();
        let spawned_through = &parties.api[parties.api.len() - 1];
        let mut spawn = vec!["agent", "spawn", agent, "--owner", "ops", "--node", spawned_through];
        for tool in tools {
            spawn.extend(["--tool", tool]);
        }
        let consumer = parties.public("consumer");
        spawn.extend(["--key", &consumer, "--tag", "tested"]);
        assert!(parties.run(&spawn).unwrap().contains(&format!("agent {agent} running")));
        parties.set_policies(r#"@id("agents-may-call") permit(principal, action, resource);"#, &[]);
        parties
    }

    /// Sets the policy set to `text` (with `extra` flags): the command's
    /// output, or its error.
    pub fn set_policies(&self, text: &str, extra: &[&str]) -> String {
        let file = self.keys.path().join("policies.cedar");
        std::fs::write(&file, text).unwrap();
        let file = path(&file);
        let mut set = vec!["policy", "set", &file, "--node", &self.api[1]];
        set.extend(extra);
        self.run(&set).unwrap_or_else(|error| format!("{error:#}"))
    }

    /// Runs `zeromesh args...` as the admin.
    pub fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        cli_as(Some(&self.admin), args)
    }

    pub fn key(&self, party: &str) -> String {
        path(&self.keys.path().join(format!("{party}.key")))
    }

    pub fn public(&self, party: &str) -> String {
        format!("{}.pub", self.key(party))
    }

    /// Creates agreement `id` between the consumer `agent` and the provider,
    /// covering `tool`, with `limits`, through node 0.
    pub fn create(&self, id: &str, agent: &str, tool: &str, limits: &[&str]) -> String {
        let provider = self.public("provider");
        let mut create = vec![
            "agreement",
            "create",
            id,
            "--consumer",
            agent,
            "--provider",
            &provider,
            "--tool",
            tool,
            "--expires-in",
            "1h",
        ];
        for limit in limits {
            create.extend(["--limit", limit]);
        }
        create.extend(["--node", &self.api[0]]);
        self.run(&create).unwrap()
    }

    /// Both parties sign agreement `id`, then it is activated.
    pub fn sign_and_activate(&self, id: &str) -> String {
        self.run(&["agreement", "sign", id, "--key", &self.key("consumer"), "--node", &self.api[1]]).unwrap();
        self.run(&["agreement", "sign", id, "--key", &self.key("provider"), "--node", &self.api[2]]).unwrap();
        self.run(&["agreement", "activate", id, "--node", &self.api[0]]).unwrap()
    }

    /// A connection to every node with `token`.
    pub async fn clients(&self, token: &str) -> Vec<ApiClient> {
        let mut clients = Vec::new();
        for node in &self.api {
            clients.push(connect_when_known(node, token, WAIT).await.unwrap());
        }
        clients
    }

    /// Signs the plugin `wat` with `manifest` (both files) as the provider
    /// and installs it through node 1 with `install_flags` (`--grant`,
    /// `--wait`): the install's output.
    pub fn install(&self, wat: &Path, manifest: &Path, install_flags: &[&str]) -> String {
        let name = wat.file_stem().and_then(|stem| stem.to_str()).expect("a plugin file name");
        let package = path(&self.keys.path().join(format!("{name}.zmp")));
        let provider = self.key("provider");
        self.run(&["plugin", "sign", &path(wat), "--manifest", &path(manifest), "--key", &provider, "--out", &package])
            .expect("the WebAssembly text is signed");
        let mut install = vec!["plugin", "install", &package, "--node", &self.api[1]];
        install.extend(install_flags);
        self.run(&install).unwrap()
    }

    /// Installs `plugins/examples/{name}.wat`, as [`Parties::install`].
    pub fn install_example(&self, name: &str, install_flags: &[&str]) -> String {
        let examples = crate::package_dir().join("../plugins/examples");
        self.install(&examples.join(format!("{name}.wat")), &examples.join(format!("{name}.json")), install_flags)
    }

    /// A new agent token for `agent`.
    pub fn agent_token(&self, agent: &str) -> String {
        let token = self.run(&["token", "create", "--role", "agent", "--agent", agent, "--node", &self.api[0]]);
        token.unwrap().trim().to_owned()
    }
}
