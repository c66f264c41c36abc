//! Policies: Cedar rules over which agent may call which tool with what.
//! The mesh keeps one policy set, versioned in the log; every node compiles
//! the same text against the same schema ([`SCHEMA`]), so every node decides
//! a call alike under the same version.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::OnceLock;

use cedar_policy::{
    Authorizer, Context, Decision, Effect, Entities, Entity, EntityId, EntityTypeName, EntityUid, PolicyId, PolicySet,
    Request, RestrictedExpression, Schema, ValidationMode, Validator,
};
use zeromesh_protocol::agent::AgentRecord;
use zeromesh_protocol::limits::{MAX_POLICIES, MAX_POLICY_BYTES};

/// What a policy can see of a call: the agent it acts for (principal), the
/// tool (resource), and the call itself (context).
pub const SCHEMA: &str = r#"// The agent a call acts for.
entity Agent {
  // Who answers for it (`agent spawn --owner`).
  owner: String,
  // Its labels (`agent spawn --tag`).
  tags: Set<String>,
};

// A tool the mesh offers.
entity Tool {
  name: String,
};

// Calling a tool.
action call appliesTo {
  principal: Agent,
  resource: Tool,
  context: {
    // The agreement that governs the call; "" when none does.
    agreement: String,
    // The memory path a memory tool touches; "" for other tools.
    target: String,
    // The call's arguments as compact JSON, and their size in bytes.
    arguments: String,
    bytes_in: Long,
  },
};
"#;

fn schema() -> &'static Schema {
    static SCHEMA_PARSED: OnceLock<Schema> = OnceLock::new();
    SCHEMA_PARSED.get_or_init(|| {
        let (schema, _) = Schema::from_cedarschema_str(SCHEMA).expect("the kernel's policy schema parses");
        schema
    })
}

fn uid(kind: &str, id: &str) -> EntityUid {
    let kind = EntityTypeName::from_str(kind).expect("the schema's entity types parse");
    EntityUid::from_type_name_and_id(kind, EntityId::new(id))
}

/// Why a policy set was refused: each problem Cedar found, by policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the policy set is not valid: {}", problems.join("; "))]
pub struct PolicyErrors {
    pub problems: Vec<String>,
}

impl PolicyErrors {
    fn one(problem: String) -> PolicyErrors {
        PolicyErrors { problems: vec![problem] }
    }
}

/// One policy set, compiled and validated.
#[derive(Debug, Clone)]
pub struct Policies {
    version: u64,
    set: PolicySet,
    /// Set when the committed text did not compile here: every governed
    /// call is then refused, never let through unchecked.
    broken: Option<String>,
}

/// What the policies decided for one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A permit matched and no forbid did.
    Permitted { by: Vec<String> },
    /// These forbid policies matched.
    Forbidden { by: Vec<String> },
    /// Nothing matched: denied by default.
    NoPermit,
}

/// The facts of one call the policies decide on.
#[derive(Debug, Clone, Copy)]
pub struct PolicyCall<'a> {
    pub agent: &'a AgentRecord,
    pub tool: &'a str,
    /// The governing agreement's id, or "".
    pub agreement: &'a str,
    /// The memory path a memory tool touches, or "".
    pub target: &'a str,
    pub arguments: &'a serde_json::Value,
}

impl Policies {
    /// The set a mesh starts with: no policies.
    pub fn empty() -> Policies {
        Policies { version: 0, set: PolicySet::new(), broken: None }
    }

    /// Parses `text` and validates it, strictly, against [`SCHEMA`].
    /// Templates are refused: every policy stands on its own.
    pub fn compile(version: u64, text: &str) -> Result<Policies, PolicyErrors> {
        if text.len() > MAX_POLICY_BYTES {
            return Err(PolicyErrors::one(format!(
                "it has {} bytes, over the limit of {MAX_POLICY_BYTES}",
                text.len()
            )));
        }
        let set = PolicySet::from_str(text)
            .map_err(|errors| PolicyErrors { problems: errors.iter().map(|error| located(text, error)).collect() })?;
        let count = set.policies().count();
        if count > MAX_POLICIES {
            return Err(PolicyErrors::one(format!("it has {count} policies, over the limit of {MAX_POLICIES}")));
        }
        if let Some(template) = set.templates().next() {
            return Err(PolicyErrors::one(format!("{} is a template; write each policy in full", template.id())));
        }
        let mut names = HashSet::new();
        for policy in set.policies() {
            let name = name_of(&set, policy.id());
            if !names.insert(name.clone()) {
                return Err(PolicyErrors::one(format!("two policies are named {name:?}")));
            }
        }
        let validated = Validator::new(schema().clone()).validate(&set, ValidationMode::Strict);
        if !validated.validation_passed() {
            let problems = validated
                .validation_errors()
                .map(|error| format!("{}: {}", name_of(&set, error.policy_id()), located(text, error)))
                .collect();
            return Err(PolicyErrors { problems });
        }
        Ok(Policies { version, set, broken: None })
    }

    /// The committed set `text` of `version`, or, should it not compile
    /// here, a set that refuses every governed call and says why.
    pub fn committed(version: u64, text: &str) -> Policies {
        Policies::compile(version, text).unwrap_or_else(|errors| Policies {
            version,
            set: PolicySet::new(),
            broken: Some(errors.to_string()),
        })
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// The policies' names (`@id("...")`, else Cedar's `policyN`), with
    /// whether each permits.
    pub fn names(&self) -> Vec<(String, bool)> {
        let mut names: Vec<(String, bool)> = self
            .set
            .policies()
            .map(|policy| (name_of(&self.set, policy.id()), policy.effect() == Effect::Permit))
            .collect();
        names.sort();
        names
    }

    /// Decides `call`.
    pub fn decide(&self, call: PolicyCall<'_>) -> Verdict {
        if let Some(broken) = &self.broken {
            return Verdict::Forbidden {
                by: vec![format!("version {} does not compile here: {broken}", self.version)],
            };
        }
        if self.set.is_empty() {
            return Verdict::NoPermit;
        }
        match self.evaluate(call) {
            Ok(verdict) => verdict,
            Err(error) => {
                Verdict::Forbidden { by: vec![format!("the call could not be put to the policies: {error}")] }
            }
        }
    }

    fn evaluate(&self, call: PolicyCall<'_>) -> Result<Verdict, String> {
        let schema = schema();
        let agent_uid = uid("Agent", &call.agent.id);
        let tool_uid = uid("Tool", call.tool);
        let tags = call.agent.tags.iter().map(|tag| RestrictedExpression::new_string(tag.clone()));
        let agent = Entity::new(
            agent_uid.clone(),
            HashMap::from([
                ("owner".to_owned(), RestrictedExpression::new_string(call.agent.owner.clone())),
                ("tags".to_owned(), RestrictedExpression::new_set(tags)),
            ]),
            HashSet::new(),
        )
        .map_err(|error| error.to_string())?;
        let tool = Entity::new(
            tool_uid.clone(),
            HashMap::from([("name".to_owned(), RestrictedExpression::new_string(call.tool.to_owned()))]),
            HashSet::new(),
        )
        .map_err(|error| error.to_string())?;
        let entities = Entities::from_entities([agent, tool], Some(schema)).map_err(|error| error.to_string())?;
        let arguments = call.arguments.to_string();
        let context = Context::from_pairs([
            ("agreement".to_owned(), RestrictedExpression::new_string(call.agreement.to_owned())),
            ("target".to_owned(), RestrictedExpression::new_string(call.target.to_owned())),
            ("bytes_in".to_owned(), RestrictedExpression::new_long(arguments.len() as i64)),
            ("arguments".to_owned(), RestrictedExpression::new_string(arguments)),
        ])
        .map_err(|error| error.to_string())?;
        let request = Request::new(agent_uid, uid("Action", "call"), tool_uid, context, Some(schema))
            .map_err(|error| error.to_string())?;
        let response = Authorizer::new().is_authorized(&request, &self.set, &entities);
        let by: Vec<String> = response.diagnostics().reason().map(|id| name_of(&self.set, id)).collect();
        Ok(match (response.decision(), by.is_empty()) {
            (Decision::Allow, _) => Verdict::Permitted { by },
            (Decision::Deny, true) => Verdict::NoPermit,
            (Decision::Deny, false) => Verdict::Forbidden { by },
        })
    }
}

/// Cedar's `error`, with where in `text` it is (line and column) and its
/// hint, when it has them.
fn located(text: &str, error: &dyn miette::Diagnostic) -> String {
    let mut shown = error.to_string();
    let offset = error.labels().and_then(|mut labels| labels.next()).map(|label| label.offset());
    if let Some(before) = offset.and_then(|offset| text.get(..offset)) {
        let line = before.matches('\n').count() + 1;
        let column = before.chars().rev().take_while(|c| *c != '\n').count() + 1;
        shown = format!("line {line}, column {column}: {shown}");
    }
    if let Some(help) = error.help() {
        shown = format!("{shown} ({help})");
    }
    shown
}

/// A policy's name: its `@id("...")` annotation, else Cedar's id for it.
fn name_of(set: &PolicySet, id: &PolicyId) -> String {
    set.annotation(id, "id").map_or_else(|| id.to_string(), str::to_owned)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::testing::tagged;

    fn agent(tags: &[&str]) -> AgentRecord {
        tagged("bot", tags)
    }

    fn decide(policies: &Policies, agent: &AgentRecord, tool: &str, target: &str) -> Verdict {
        let arguments = json!({ "path": target });
        policies.decide(PolicyCall { agent, tool, agreement: "deal", target, arguments: &arguments })
    }

    const SET: &str = r#"
        @id("everyone")
        permit(principal, action == Action::"call", resource);

        @id("no-writes-for-untrusted")
        forbid(principal, action == Action::"call", resource)
        when { principal.tags.contains("untrusted") && resource.name like "memory_put*" };

        @id("secrets-stay-home")
        forbid(principal, action, resource) when { context.target like "*/secrets/*" };
    "#;

    #[test]
    fn a_forbid_names_itself_and_outranks_every_permit() {
        let policies = Policies::compile(3, SET).unwrap();
        assert_eq!(policies.version(), 3);
        let untrusted = agent(&["untrusted"]);
        assert_eq!(
            decide(&policies, &untrusted, "memory_put", "bot/x"),
            Verdict::Forbidden { by: vec!["no-writes-for-untrusted".into()] }
        );
        assert_eq!(
            decide(&policies, &untrusted, "memory_get", "bot/x"),
            Verdict::Permitted { by: vec!["everyone".into()] }
        );
        assert_eq!(
            decide(&policies, &agent(&[]), "memory_get", "bot/secrets/key"),
            Verdict::Forbidden { by: vec!["secrets-stay-home".into()] }
        );
    }

    #[test]
    fn without_a_permit_a_call_is_denied_by_default() {
        let only_forbids =
            Policies::compile(1, r#"forbid(principal, action, resource) when { context.bytes_in > 10 };"#);
        let policies = only_forbids.unwrap();
        assert_eq!(decide(&policies, &agent(&[]), "echo", ""), Verdict::Forbidden { by: vec!["policy0".into()] });
        assert_eq!(
            Policies::empty().decide(PolicyCall {
                agent: &agent(&[]),
                tool: "echo",
                agreement: "",
                target: "",
                arguments: &json!({}),
            }),
            Verdict::NoPermit
        );
        let narrow = Policies::compile(2, r#"permit(principal, action, resource == Tool::"echo");"#).unwrap();
        assert_eq!(decide(&narrow, &agent(&[]), "memory_get", ""), Verdict::NoPermit);
    }

    #[test]
    fn a_set_that_does_not_fit_the_schema_is_refused_with_each_problem() {
        let typo =
            Policies::compile(1, r#"@id("typo") permit(principal, action, resource) when { principal.tag == "x" };"#);
        let problems = typo.unwrap_err().problems;
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("typo: "), "{problems:?}");
        assert!(Policies::compile(1, "permit(principal, action, resource").is_err(), "a syntax error");
        let unknown_type = Policies::compile(1, r#"permit(principal == Robot::"r2", action, resource);"#);
        assert!(unknown_type.unwrap_err().to_string().contains("Robot"), "no such entity type");
        let unknown_action = Policies::compile(1, r#"permit(principal, action == Action::"write", resource);"#);
        assert!(unknown_action.is_err(), "the only action is call");
        let template = Policies::compile(1, "permit(principal == ?principal, action, resource);");
        assert!(template.unwrap_err().to_string().contains("template"));
        let twice = Policies::compile(
            1,
            r#"@id("a") permit(principal, action, resource); @id("a") forbid(principal, action, resource);"#,
        );
        assert!(twice.unwrap_err().to_string().contains("two policies are named \"a\""));
    }

    #[test]
    fn a_committed_set_that_does_not_compile_refuses_everything() {
        let broken = Policies::committed(5, "permit(");
        let verdict = decide(&broken, &agent(&[]), "echo", "");
        let Verdict::Forbidden { by } = verdict else { panic!("{verdict:?}") };
        assert!(by[0].starts_with("version 5 does not compile here"), "{by:?}");
    }

    #[test]
    fn the_schema_parses() {
        assert!(
            Policies::compile(1, "permit(principal is Agent, action == Action::\"call\", resource is Tool);").is_ok()
        );
    }
}
