//! The plugin manifest: what a plugin is, which MCP tools it offers, which
//! capabilities it requests and the limits it runs under.

use crate::limits::*;
use crate::validate::{check_count, check_len, ValidationError};
use serde::{Deserialize, Serialize};

use super::capability::CapabilitySet;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub description: String,
    pub tools: Vec<ToolSpec>,
    #[serde(default)]
    pub capabilities: CapabilitySet,
    pub limits: PluginLimits,
    /// Hex SHA-256 of the module; set by `sign`, checked by `verify`.
    #[serde(default)]
    pub module_sha256: String,
    /// After this time (ms since the Unix epoch) the package is refused.
    #[serde(default)]
    pub expires_at_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    /// JSON Schema of the tool's arguments.
    pub input_schema: serde_json::Value,
}

/// What one call of this plugin may use; each is capped by the node's own
/// maximums (the plugin host's `HostLimits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginLimits {
    pub fuel_per_call: u64,
    pub memory_bytes: u64,
    pub wall_clock_ms: u64,
}

pub fn check_name(what: &'static str, name: &str) -> Result<(), ValidationError> {
    if name.is_empty() {
        return Err(ValidationError::Empty { what });
    }
    check_len(what, name.len(), MAX_PLUGIN_NAME_BYTES)?;
    if !name.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-') {
        return Err(ValidationError::BadField {
            what,
            value: name.to_owned(),
            reason: "use ASCII letters, digits, `_` and `-`",
        });
    }
    Ok(())
}

impl Manifest {
    /// Checks every field against its limit and grammar.
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_name("plugin name", &self.name)?;
        check_len("plugin version", self.version.len(), MAX_PLUGIN_NAME_BYTES)?;
        if self.version.is_empty() {
            return Err(ValidationError::Empty { what: "plugin version" });
        }
        check_len("plugin description", self.description.len(), MAX_PLUGIN_DESCRIPTION_BYTES)?;
        if self.tools.is_empty() {
            return Err(ValidationError::Empty { what: "plugin tools" });
        }
        check_count("plugin tools", self.tools.len(), MAX_TOOLS_PER_PLUGIN)?;
        for (position, tool) in self.tools.iter().enumerate() {
            check_name("tool name", &tool.name)?;
            if self.tools[..position].iter().any(|earlier| earlier.name == tool.name) {
                return Err(ValidationError::BadField {
                    what: "tool name",
                    value: tool.name.clone(),
                    reason: "is offered twice",
                });
            }
            check_len("tool description", tool.description.len(), MAX_PLUGIN_DESCRIPTION_BYTES)?;
            let schema_bytes = serde_json::to_vec(&tool.input_schema).map(|bytes| bytes.len()).unwrap_or(usize::MAX);
            check_len("tool input schema", schema_bytes, MAX_TOOL_SCHEMA_BYTES)?;
            if !tool.input_schema.is_object() {
                return Err(ValidationError::BadField {
                    what: "tool input schema",
                    value: tool.name.clone(),
                    reason: "must be a JSON Schema object",
                });
            }
        }
        let limits = &self.limits;
        for (what, value, max) in [
            ("fuel_per_call", limits.fuel_per_call, MAX_PLUGIN_FUEL_PER_CALL),
            ("memory_bytes", limits.memory_bytes, MAX_PLUGIN_MEMORY_BYTES),
            ("wall_clock_ms", limits.wall_clock_ms, MAX_PLUGIN_WALL_CLOCK_MS),
        ] {
            if value == 0 || value > max {
                return Err(ValidationError::BadField {
                    what,
                    value: value.to_string(),
                    reason: "must be at least 1 and at most the node maximum",
                });
            }
        }
        Ok(())
    }

    pub fn tool(&self, name: &str) -> Option<&ToolSpec> {
        self.tools.iter().find(|tool| tool.name == name)
    }
}
