//! The plugin administration tools: install (a package, through Raft),
//! uninstall, trust and distrust publisher keys, and list the registry.

use std::sync::Arc;

use base64::Engine;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};
use zeromesh_kernel::Access;
use zeromesh_plugins::{CapabilitySet, PublisherKey};
use zeromesh_protocol::plugin::{Capability, PluginCommand, PluginOutcome};
use zeromesh_protocol::{Command, CommandReply};

use super::{invalid, Invocation, NoArgs, ToolDecl, ToolEnv, ToolOutcome};
use crate::cluster::ServiceError;
use crate::plugins::outcome_text;

pub(super) fn tools() -> Vec<ToolDecl> {
    vec![
        ToolDecl::new(
            "plugin_install",
            "Install a signed plugin package in the whole mesh (replaces an installed plugin of the same name).",
            Access::Admin,
            install,
        )
        .long(),
        ToolDecl::new(
            "plugin_uninstall",
            "Remove an installed plugin from the whole mesh.",
            Access::Admin,
            |env: Arc<ToolEnv>, _: Invocation, args: NameArgs| async move {
                registry(&env, PluginCommand::Uninstall { name: args.name }).await
            },
        ),
        by_publisher("plugin_trust", "Add a publisher key to the mesh's trusted set.", |publisher| {
            PluginCommand::TrustPublisher { publisher }
        }),
        by_publisher(
            "plugin_distrust",
            "Remove a publisher key from the trusted set and uninstall every plugin it signed.",
            |publisher| PluginCommand::DistrustPublisher { publisher },
        ),
        ToolDecl::new(
            "plugin_list",
            "Installed plugins, trusted publishers, and what runs on this node.",
            Access::Observe,
            |env: Arc<ToolEnv>, _: Invocation, _: NoArgs| async move { Ok(env.plugins.list(&env.cluster).await?) },
        ),
    ]
}

/// The capabilities a plugin may be granted, by name.
fn capability_names(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let names: Vec<&str> = Capability::ALL.iter().map(|capability| capability.name()).collect();
    schemars::json_schema!({ "type": "array", "items": { "type": "string", "enum": names }, "uniqueItems": true })
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct InstallArgs {
    /// The .zmp package file, base64.
    package_base64: String,
    /// Capabilities granted to the plugin; each must be declared in its manifest.
    #[serde(default)]
    #[schemars(schema_with = "capability_names")]
    grant: CapabilitySet,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct NameArgs {
    /// The installed plugin's name.
    name: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct PublisherArgs {
    /// Publisher public key, 64 hex digits.
    publisher: String,
}

/// An admin tool whose one argument is a publisher key.
fn by_publisher(name: &'static str, description: &'static str, command: fn(PublisherKey) -> PluginCommand) -> ToolDecl {
    ToolDecl::new(
        name,
        description,
        Access::Admin,
        move |env: Arc<ToolEnv>, _: Invocation, args: PublisherArgs| async move {
            let publisher = PublisherKey::parse(&args.publisher).map_err(|error| invalid(name, error))?;
            registry(&env, command(publisher)).await
        },
    )
}

async fn install(env: Arc<ToolEnv>, invocation: Invocation, args: InstallArgs) -> ToolOutcome {
    let package = base64::engine::general_purpose::STANDARD
        .decode(args.package_base64.as_bytes())
        .map_err(|error| invalid("plugin_install", format!("package_base64: {error}")))?;
    let progress = |step, message: &str| (invocation.progress)(step, 4, message);
    Ok(env.plugins.install(&env.cluster, &package, args.grant, &progress).await?)
}

async fn registry(env: &ToolEnv, command: PluginCommand) -> ToolOutcome {
    let (log_index, reply) = env.cluster.propose(Command::Plugin(command)).await?;
    let mut answer = match &reply {
        CommandReply::Plugin(PluginOutcome::Trusted { already }) => json!({ "trusted": true, "already": already }),
        CommandReply::Plugin(PluginOutcome::Distrusted { was_trusted, uninstalled }) => {
            json!({ "distrusted": true, "was_trusted": was_trusted, "uninstalled": uninstalled })
        }
        CommandReply::Plugin(PluginOutcome::Uninstalled { name }) => json!({ "uninstalled": name }),
        CommandReply::Plugin(PluginOutcome::NotInstalled { name }) => {
            return Err(ServiceError::Invalid(format!("no plugin named {name:?} is installed")).into())
        }
        other => return Err(ServiceError::Refused(outcome_text(other)).into()),
    };
    answer["log_index"] = json!(log_index);
    Ok::<Value, _>(answer)
}
