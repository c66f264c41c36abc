//! Federated MCP servers: external MCP servers an admin registers with the
//! mesh. Registrations live in the replicated plugin registry; the nodes
//! they name start and supervise the servers, and every node serves their
//! tools as `server.tool`. Secrets are named by reference (an environment
//! variable or a file on the hosting node), never carried in the log.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::manifest::check_name;
use crate::limits::{
    MAX_FEDERATED_ALLOWED_TOOLS, MAX_FEDERATED_ARGV, MAX_FEDERATED_ARG_BYTES, MAX_FEDERATED_CALL_TIMEOUT_MS,
    MAX_FEDERATED_ENV, MAX_FEDERATED_ENV_VALUE_BYTES, MAX_FEDERATED_HOSTS, MAX_FEDERATED_MEMORY_MB,
    MAX_FEDERATED_URL_BYTES, MAX_PLUGIN_NAME_BYTES,
};
use crate::validate::{check_count, check_len, ValidationError};

/// How the hosting nodes reach the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerTransport {
    /// A child process speaking MCP on its standard input and output:
    /// the program and its arguments (no shell).
    Stdio { command: Vec<String> },
    /// A Streamable HTTP endpoint, with an optional bearer token.
    Http { url: String, bearer: Option<SecretRef> },
}

/// A secret the hosting node reads where it runs: never its value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum SecretRef {
    /// The hosting node's environment variable of this name.
    Env(String),
    /// The contents of this file on the hosting node (an absolute path).
    File(String),
}

impl SecretRef {
    /// Parses `env:NAME` or `file:/absolute/path`.
    pub fn parse(text: &str) -> Result<SecretRef, ValidationError> {
        let reference = match text.split_once(':') {
            Some(("env", name)) => SecretRef::Env(name.to_owned()),
            Some(("file", path)) => SecretRef::File(path.to_owned()),
            _ => {
                return Err(ValidationError::BadField {
                    what: "secret reference",
                    value: text.to_owned(),
                    reason: "write env:NAME (the hosting node's environment) or file:/absolute/path",
                })
            }
        };
        reference.validate()?;
        Ok(reference)
    }

    pub fn validate(&self) -> Result<(), ValidationError> {
        match self {
            SecretRef::Env(name) => check_env_name(name),
            SecretRef::File(path) => {
                check_len("secret file path", path.len(), MAX_FEDERATED_ARG_BYTES)?;
                if !path.starts_with('/') || path.contains('\0') {
                    return Err(ValidationError::BadField {
                        what: "secret file path",
                        value: path.clone(),
                        reason: "must be an absolute path",
                    });
                }
                Ok(())
            }
        }
    }
}

impl std::fmt::Display for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretRef::Env(name) => write!(f, "env:{name}"),
            SecretRef::File(path) => write!(f, "file:{path}"),
        }
    }
}

/// Which nodes host the server: those with one of these ids, and those
/// configured with one of these labels.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerHosts {
    pub nodes: Vec<u64>,
    pub labels: Vec<String>,
}

impl ServerHosts {
    /// Whether a node with `node_id` and `labels` hosts the server.
    pub fn includes(&self, node_id: u64, labels: &[String]) -> bool {
        self.nodes.contains(&node_id) || self.labels.iter().any(|label| labels.contains(label))
    }
}

/// When a host counts the server unhealthy, and when it stops sending it calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthSettings {
    /// Time between two pings of the server.
    pub interval_ms: u64,
    /// Longest a ping may take to count as answered.
    pub timeout_ms: u64,
    /// Pings failed in a row after which the server is unhealthy (a child
    /// process that exits is unhealthy at once); one answered ping makes it
    /// healthy again.
    pub unhealthy_after: u32,
    /// Calls failed in a row (no answer, transport errors: not a tool's own
    /// error result) after which the circuit opens: calls are refused at
    /// once for `breaker_open_ms`, then one call is let through to try.
    pub breaker_after: u32,
    pub breaker_open_ms: u64,
}

impl Default for HealthSettings {
    fn default() -> Self {
        HealthSettings {
            interval_ms: 5_000,
            timeout_ms: 2_000,
            unhealthy_after: 2,
            breaker_after: 5,
            breaker_open_ms: 30_000,
        }
    }
}

/// An external MCP server as an admin registers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerRegistration {
    /// The namespace of its tools: `name.tool`.
    pub name: String,
    pub transport: ServerTransport,
    pub hosts: ServerHosts,
    /// Environment variables given to a child process, in clear: nothing secret.
    pub env: BTreeMap<String, String>,
    /// Environment variables whose values the hosting node reads from a
    /// secret reference when it starts the process.
    pub secrets: BTreeMap<String, SecretRef>,
    /// Longest one call may take on the server.
    pub call_timeout_ms: u64,
    /// The server's tools the mesh offers; empty: all of them.
    pub allow_tools: Vec<String>,
    pub health: HealthSettings,
    /// Address space a child process may map, in MiB (`RLIMIT_AS`).
    pub max_memory_mb: Option<u64>,
}

fn check_env_name(name: &str) -> Result<(), ValidationError> {
    check_len("environment variable name", name.len(), MAX_PLUGIN_NAME_BYTES)?;
    let mut bytes = name.bytes();
    let starts_well = bytes.next().is_some_and(|first| first.is_ascii_alphabetic() || first == b'_');
    if !starts_well || !bytes.all(|byte| byte.is_ascii_alphanumeric() || byte == b'_') {
        return Err(ValidationError::BadField {
            what: "environment variable name",
            value: name.to_owned(),
            reason: "use ASCII letters, digits and `_`, not starting with a digit",
        });
    }
    Ok(())
}

fn check_range(what: &'static str, value: u64, low: u64, high: u64) -> Result<(), ValidationError> {
    if value < low || value > high {
        return Err(ValidationError::BadField {
            what,
            value: value.to_string(),
            reason: "is out of its allowed range (see the registration's documentation)",
        });
    }
    Ok(())
}

/// The shortest health interval and breaker pause a registration may ask for.
pub const MIN_HEALTH_INTERVAL_MS: u64 = 100;
/// The longest health interval and breaker pause.
pub const MAX_HEALTH_INTERVAL_MS: u64 = 3_600_000;

impl ServerRegistration {
    /// Checks every field against its limit and grammar.
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_name("server name", &self.name)?;
        match &self.transport {
            ServerTransport::Stdio { command } => {
                if command.is_empty() || command[0].is_empty() {
                    return Err(ValidationError::Empty { what: "server command" });
                }
                check_count("server command arguments", command.len(), MAX_FEDERATED_ARGV)?;
                for arg in command {
                    check_len("server command argument", arg.len(), MAX_FEDERATED_ARG_BYTES)?;
                    if arg.contains('\0') {
                        return Err(ValidationError::BadField {
                            what: "server command argument",
                            value: arg.replace('\0', "\\0"),
                            reason: "must not contain NUL",
                        });
                    }
                }
            }
            ServerTransport::Http { url, bearer } => {
                check_len("server URL", url.len(), MAX_FEDERATED_URL_BYTES)?;
                let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"));
                if rest.is_none_or(|rest| rest.is_empty() || rest.starts_with('/')) || url.contains(char::is_whitespace)
                {
                    return Err(ValidationError::BadField {
                        what: "server URL",
                        value: url.clone(),
                        reason: "must be an http:// or https:// URL with a host",
                    });
                }
                if let Some(bearer) = bearer {
                    bearer.validate()?;
                }
                if !self.env.is_empty() || !self.secrets.is_empty() {
                    return Err(ValidationError::BadField {
                        what: "server environment",
                        value: self.name.clone(),
                        reason: "applies to stdio servers only",
                    });
                }
            }
        }
        if self.hosts.nodes.is_empty() && self.hosts.labels.is_empty() {
            return Err(ValidationError::Empty { what: "server hosts (node ids or labels)" });
        }
        check_count("server host nodes", self.hosts.nodes.len(), MAX_FEDERATED_HOSTS)?;
        check_count("server host labels", self.hosts.labels.len(), MAX_FEDERATED_HOSTS)?;
        for label in &self.hosts.labels {
            check_name("host label", label)?;
        }
        check_count("server environment", self.env.len() + self.secrets.len(), MAX_FEDERATED_ENV)?;
        for (name, value) in &self.env {
            check_env_name(name)?;
            check_len("environment value", value.len(), MAX_FEDERATED_ENV_VALUE_BYTES)?;
        }
        for (name, reference) in &self.secrets {
            check_env_name(name)?;
            reference.validate()?;
            if self.env.contains_key(name) {
                return Err(ValidationError::BadField {
                    what: "secret",
                    value: name.clone(),
                    reason: "is also set in clear in `env`",
                });
            }
        }
        check_range("call timeout (ms)", self.call_timeout_ms, 1, MAX_FEDERATED_CALL_TIMEOUT_MS)?;
        check_count("allowed tools", self.allow_tools.len(), MAX_FEDERATED_ALLOWED_TOOLS)?;
        for tool in &self.allow_tools {
            check_len("allowed tool name", tool.len(), MAX_PLUGIN_NAME_BYTES)?;
            if tool.is_empty() {
                return Err(ValidationError::Empty { what: "allowed tool name" });
            }
        }
        let health = &self.health;
        check_range("health interval (ms)", health.interval_ms, MIN_HEALTH_INTERVAL_MS, MAX_HEALTH_INTERVAL_MS)?;
        check_range("health timeout (ms)", health.timeout_ms, 1, health.interval_ms)?;
        check_range("failed pings before unhealthy", u64::from(health.unhealthy_after), 1, 100)?;
        check_range("failed calls before the circuit opens", u64::from(health.breaker_after), 1, 1_000)?;
        check_range("circuit open time (ms)", health.breaker_open_ms, MIN_HEALTH_INTERVAL_MS, MAX_HEALTH_INTERVAL_MS)?;
        if let Some(memory) = self.max_memory_mb {
            check_range("memory limit (MiB)", memory, 16, MAX_FEDERATED_MEMORY_MB)?;
        }
        Ok(())
    }

    /// Whether the mesh offers the server's tool `tool`.
    pub fn allows(&self, tool: &str) -> bool {
        self.allow_tools.is_empty() || self.allow_tools.iter().any(|allowed| allowed == tool)
    }
}

/// A registration as the registry keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisteredServer {
    pub registration: ServerRegistration,
    pub registered_at_ms: u64,
    pub log_index: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn registration() -> ServerRegistration {
        ServerRegistration {
            name: "notes".into(),
            transport: ServerTransport::Stdio { command: vec!["python3".into(), "server.py".into()] },
            hosts: ServerHosts { nodes: vec![1], labels: vec![] },
            env: BTreeMap::from([("MODE".into(), "fast".into())]),
            secrets: BTreeMap::from([("API_KEY".into(), SecretRef::Env("NOTES_KEY".into()))]),
            call_timeout_ms: 10_000,
            allow_tools: vec![],
            health: HealthSettings::default(),
            max_memory_mb: Some(512),
        }
    }

    #[test]
    fn a_well_formed_registration_passes_and_each_bad_field_is_named() {
        registration().validate().expect("valid");
        let cases: Vec<(fn(&mut ServerRegistration), &str)> = vec![
            (|r| r.name = "has.dot".into(), "server name"),
            (|r| r.transport = ServerTransport::Stdio { command: vec![] }, "server command"),
            (|r| r.hosts = ServerHosts::default(), "server hosts"),
            (|r| r.call_timeout_ms = 0, "call timeout"),
            (|r| r.health.timeout_ms = r.health.interval_ms + 1, "health timeout"),
            (|r| r.health.interval_ms = 10, "health interval"),
            (
                |r| {
                    r.env.insert("API_KEY".into(), "clear".into());
                },
                "secret",
            ),
            (
                |r| {
                    r.env.insert("1BAD".into(), "x".into());
                },
                "environment variable name",
            ),
            (|r| r.transport = ServerTransport::Http { url: "ftp://x".into(), bearer: None }, "server URL"),
            (
                |r| r.transport = ServerTransport::Http { url: "http://127.0.0.1:9/mcp".into(), bearer: None },
                "stdio servers only",
            ),
            (|r| r.max_memory_mb = Some(1), "memory limit"),
        ];
        for (break_it, named) in cases {
            let mut bad = registration();
            break_it(&mut bad);
            let error = bad.validate().expect_err(named).to_string();
            assert!(error.contains(named), "{error:?} should name {named:?}");
        }
    }

    #[test]
    fn secret_references_parse_and_print_back() {
        for text in ["env:API_KEY", "file:/run/secrets/key"] {
            assert_eq!(SecretRef::parse(text).expect(text).to_string(), text);
        }
        for bad in ["API_KEY", "env:", "file:relative/path", "vault:x"] {
            assert!(SecretRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hosts_match_by_node_id_or_label_and_the_allow_list_filters_tools() {
        let hosts = ServerHosts { nodes: vec![7], labels: vec!["gpu".into()] };
        assert!(hosts.includes(7, &[]));
        assert!(hosts.includes(8, &["gpu".to_owned()]));
        assert!(!hosts.includes(8, &["cpu".to_owned()]));
        let mut only = registration();
        assert!(only.allows("anything"));
        only.allow_tools = vec!["search".into()];
        assert!(only.allows("search") && !only.allows("delete"));
    }
}
