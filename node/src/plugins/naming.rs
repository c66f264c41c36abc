//! The names plugin tools get in `tools/list`: a tool's own name when no
//! built-in tool and no other installed plugin uses it, else
//! `{plugin}.{tool}`. Names come from the replicated registry, so every node
//! names every tool alike.

use std::collections::{BTreeMap, BTreeSet};

use zeromesh_protocol::plugin::{InstalledPlugin, SignedManifest};

/// Which plugin tool an exposed name runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExposedTool {
    pub plugin: String,
    pub tool: String,
}

/// Exposed names for the tools of `registry`'s plugins that `is_running`;
/// `reserved` are the node's own tools' names.
pub fn expose(
    registry: &[InstalledPlugin],
    reserved: &[&str],
    is_running: impl Fn(&str) -> bool,
) -> BTreeMap<String, ExposedTool> {
    let tools_of: Vec<(String, Vec<String>)> = registry
        .iter()
        .map(|record| {
            let names = SignedManifest::check_signature(&record.manifest)
                .map(|manifest| manifest.tools.into_iter().map(|tool| tool.name).collect())
                .unwrap_or_default();
            (record.name.clone(), names)
        })
        .collect();
    let mut uses: BTreeMap<&str, usize> = reserved.iter().map(|name| (*name, 1)).collect();
    for (_, tools) in &tools_of {
        for tool in tools.iter().collect::<BTreeSet<_>>() {
            *uses.entry(tool.as_str()).or_default() += 1;
        }
    }
    let mut exposed = BTreeMap::new();
    for (plugin, tools) in &tools_of {
        if !is_running(plugin) {
            continue;
        }
        for tool in tools {
            let name = if uses.get(tool.as_str()) == Some(&1) { tool.clone() } else { format!("{plugin}.{tool}") };
            exposed.insert(name, ExposedTool { plugin: plugin.clone(), tool: tool.clone() });
        }
    }
    exposed
}

#[cfg(test)]
mod tests {
    use super::*;
    use zeromesh_plugins::{generate_signing_key, Manifest, PluginLimits, ToolSpec};

    fn record(plugin: &str, tools: &[&str]) -> InstalledPlugin {
        let manifest = Manifest {
            name: plugin.into(),
            version: "1".into(),
            description: String::new(),
            tools: tools
                .iter()
                .map(|tool| ToolSpec {
                    name: (*tool).into(),
                    description: String::new(),
                    input_schema: serde_json::json!({ "type": "object" }),
                })
                .collect(),
            capabilities: Default::default(),
            limits: PluginLimits { fuel_per_call: 1, memory_bytes: 1, wall_clock_ms: 1 },
            module_sha256: hex::encode([0u8; 32]),
            expires_at_ms: None,
        };
        let key = generate_signing_key().expect("randomness");
        InstalledPlugin {
            name: plugin.into(),
            version: "1".into(),
            module_sha256: [0; 32],
            manifest: SignedManifest::sign(&manifest, &key).expect("signs"),
            granted: Default::default(),
            installed_at_ms: 0,
            log_index: 1,
        }
    }

    #[test]
    fn tools_keep_their_names_unless_another_plugin_or_a_builtin_uses_them() {
        let registry = [record("alpha", &["stats", "echo", "memory_put"]), record("beta", &["echo", "shout"])];
        let exposed = expose(&registry, &["memory_put"], |_| true);
        let names: Vec<&str> = exposed.keys().map(String::as_str).collect();
        assert_eq!(names, ["alpha.echo", "alpha.memory_put", "beta.echo", "shout", "stats"]);
        assert_eq!(exposed["beta.echo"], ExposedTool { plugin: "beta".into(), tool: "echo".into() });
    }

    #[test]
    fn a_plugin_that_does_not_run_here_still_counts_for_naming() {
        let registry = [record("alpha", &["echo"]), record("beta", &["echo"])];
        let exposed = expose(&registry, &[], |plugin| plugin == "alpha");
        assert_eq!(exposed.keys().collect::<Vec<_>>(), ["alpha.echo"]);
    }
}
