//! The memory log's vocabulary: hierarchical paths, the replicated commands
//! (`put`, `delete`, compare-and-set) and the records they leave behind.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::limits::*;
use crate::validate::{check_count, check_len, ValidationError};

/// A validated hierarchical memory path: `{agent}/{segment}/...`, at least two
/// segments, the first naming the agent that owns the memory.
///
/// Segments are non-empty, are not `.` or `..`, and use only ASCII letters,
/// digits and `-_.:@+~=,`. A path therefore never contains a NUL byte, which
/// storage relies on to separate a path from its version in keys.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MemoryPath(String);

fn is_segment_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"-_.:@+~=,".contains(&byte)
}

impl MemoryPath {
    /// Validates `path` against the path grammar and limits.
    pub fn parse(path: &str) -> Result<Self, ValidationError> {
        let bad = |reason: String| ValidationError::BadPath { path: truncate_for_message(path), reason };
        if path.is_empty() {
            return Err(ValidationError::Empty { what: "memory path" });
        }
        check_len("memory path", path.len(), MAX_PATH_BYTES)?;
        let segments: Vec<&str> = path.split('/').collect();
        check_count("memory path segments", segments.len(), MAX_PATH_SEGMENTS)?;
        if segments.len() < 2 {
            return Err(bad("a path is `{agent}/{name}...`: at least two segments separated by `/`".into()));
        }
        for (position, segment) in segments.iter().enumerate() {
            if segment.is_empty() {
                return Err(bad(format!("segment {} is empty (leading, trailing or doubled `/`)", position + 1)));
            }
            if *segment == "." || *segment == ".." {
                return Err(bad(format!("segment {} is `{segment}`, which is not allowed", position + 1)));
            }
            if let Some(byte) = segment.bytes().find(|byte| !is_segment_byte(*byte)) {
                return Err(bad(format!(
                    "character {:?} is not allowed; use ASCII letters, digits and -_.:@+~=,",
                    byte as char
                )));
            }
        }
        check_len("agent id (the first path segment)", segments[0].len(), MAX_AGENT_ID_BYTES)?;
        Ok(MemoryPath(path.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The agent that owns this memory: the first segment.
    pub fn agent(&self) -> &str {
        self.0.split('/').next().unwrap_or_default()
    }
}

impl TryFrom<String> for MemoryPath {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        MemoryPath::parse(&value)
    }
}

impl From<MemoryPath> for String {
    fn from(path: MemoryPath) -> String {
        path.0
    }
}

impl fmt::Display for MemoryPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A validated prefix for listing memories: empty (everything) or a string of
/// path characters and `/`, such as `agent-7/notes/`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PathPrefix(String);

impl PathPrefix {
    pub fn parse(prefix: &str) -> Result<Self, ValidationError> {
        check_len("path prefix", prefix.len(), MAX_PATH_BYTES)?;
        if let Some(byte) = prefix.bytes().find(|byte| *byte != b'/' && !is_segment_byte(*byte)) {
            return Err(ValidationError::BadField {
                what: "path prefix",
                value: truncate_for_message(prefix),
                reason: if byte == 0 { "contains a NUL byte" } else { "contains a character no path can hold" },
            });
        }
        Ok(PathPrefix(prefix.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for PathPrefix {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        PathPrefix::parse(&value)
    }
}

impl From<PathPrefix> for String {
    fn from(prefix: PathPrefix) -> String {
        prefix.0
    }
}

fn truncate_for_message(text: &str) -> String {
    const SHOWN_CHARS: usize = 80;
    if text.chars().count() <= SHOWN_CHARS {
        return text.to_owned();
    }
    let mut shown: String = text.chars().take(SHOWN_CHARS).collect();
    shown.push('…');
    shown
}

/// The payload written by a put or a successful compare-and-set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryValue {
    pub value: Vec<u8>,
    pub content_type: String,
    pub tags: Vec<String>,
}

impl MemoryValue {
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_len("memory value", self.value.len(), MAX_VALUE_BYTES)?;
        check_len("content type", self.content_type.len(), MAX_CONTENT_TYPE_BYTES)?;
        if self.content_type.bytes().any(|byte| byte.is_ascii_control()) {
            return Err(ValidationError::BadField {
                what: "content type",
                value: truncate_for_message(&self.content_type),
                reason: "contains a control character",
            });
        }
        check_tags(&self.tags)
    }

    fn encoded_bytes(&self) -> usize {
        stored_bytes(&self.value, &self.content_type, &self.tags) as usize
    }

    /// The bytes it holds, as an agent's memory quota counts them.
    pub fn stored_bytes(&self) -> u64 {
        stored_bytes(&self.value, &self.content_type, &self.tags)
    }
}

/// The bytes a memory holds, as an agent's memory quota counts them: its
/// value, content type and tags.
pub fn stored_bytes(value: &[u8], content_type: &str, tags: &[String]) -> u64 {
    (value.len() + content_type.len() + tags.iter().map(String::len).sum::<usize>()) as u64
}

/// One memory-log command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemoryCommand {
    /// Writes a new version of `path`.
    Put { path: MemoryPath, value: MemoryValue },
    /// Deletes `path`: a tombstone version is written, so versions keep rising
    /// and a later compare-and-set cannot mistake a new value for an old one.
    Delete { path: MemoryPath },
    /// Writes `value` only if the path's live version is `expected_version`
    /// (0: the path holds no live value).
    CompareAndSet { path: MemoryPath, expected_version: u64, value: MemoryValue },
}

impl MemoryCommand {
    pub fn path(&self) -> &MemoryPath {
        match self {
            MemoryCommand::Put { path, .. }
            | MemoryCommand::Delete { path }
            | MemoryCommand::CompareAndSet { path, .. } => path,
        }
    }

    /// The bytes this command counts against [`MAX_BATCH_BYTES`].
    pub fn encoded_bytes(&self) -> usize {
        let value_bytes = match self {
            MemoryCommand::Put { value, .. } | MemoryCommand::CompareAndSet { value, .. } => value.encoded_bytes(),
            MemoryCommand::Delete { .. } => 0,
        };
        self.path().as_str().len() + value_bytes
    }
}

/// Memory commands that ride in one Raft entry. Each command is applied in
/// order and answers on its own: a failed compare-and-set does not undo the
/// commands around it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MemoryBatch {
    pub commands: Vec<MemoryCommand>,
}

impl MemoryBatch {
    /// Checks every limit: the batch's command count and byte total, each
    /// value, content type and tag. Paths were validated when parsed.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.commands.is_empty() {
            return Err(ValidationError::Empty { what: "memory batch" });
        }
        check_count("memory batch commands", self.commands.len(), MAX_BATCH_COMMANDS)?;
        let mut total_bytes = 0usize;
        for command in &self.commands {
            // Paths arrive validated through serde, but a path built in
            // process may not have been: check again, it is cheap.
            MemoryPath::parse(command.path().as_str())?;
            if let MemoryCommand::Put { value, .. } | MemoryCommand::CompareAndSet { value, .. } = command {
                value.validate()?;
            }
            total_bytes = total_bytes.saturating_add(command.encoded_bytes());
        }
        check_len("memory batch", total_bytes, MAX_BATCH_BYTES)
    }
}

/// What one memory command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandOutcome {
    /// A put or compare-and-set wrote `version`.
    Written { version: u64 },
    /// A delete wrote the tombstone `version`.
    Deleted { version: u64 },
    /// A delete found no live value; nothing changed.
    NotFound,
    /// A compare-and-set found another live version; nothing changed.
    /// `current_version` is 0 when the path holds no live value.
    VersionMismatch { current_version: u64 },
    /// The write would take the agent's stored bytes over its quota;
    /// nothing changed.
    OverQuota { agent: String, stored: u64, quota: u64 },
}

/// One stored version of a path, as reads return it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryRecord {
    pub path: MemoryPath,
    /// Starts at 1 and rises by one with every put, successful
    /// compare-and-set and delete of the path.
    pub version: u64,
    /// The leader's clock when the write was proposed.
    pub written_at_ms: u64,
    /// The Raft log index of the entry that wrote this version.
    pub log_index: u64,
    /// True for a delete's tombstone; `value` is then empty.
    pub deleted: bool,
    pub value: Vec<u8>,
    pub content_type: String,
    pub tags: Vec<String>,
}

/// Checks a list of tags (a memory's, or an agent's): at most
/// [`MAX_TAGS_PER_RECORD`], each non-empty, short and without control characters.
pub fn check_tags(tags: &[String]) -> Result<(), ValidationError> {
    check_count("tags", tags.len(), MAX_TAGS_PER_RECORD)?;
    for tag in tags {
        if tag.is_empty() {
            return Err(ValidationError::Empty { what: "tag" });
        }
        check_len("tag", tag.len(), MAX_TAG_BYTES)?;
        if tag.chars().any(char::is_control) {
            return Err(ValidationError::BadField {
                what: "tag",
                value: truncate_for_message(tag),
                reason: "contains a control character",
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(bytes: usize) -> MemoryValue {
        MemoryValue { value: vec![7; bytes], content_type: "text/plain".into(), tags: vec![] }
    }

    #[test]
    fn a_path_needs_an_agent_and_a_name() {
        assert!(MemoryPath::parse("agent-7/notes/2026-11-21").is_ok());
        assert_eq!(MemoryPath::parse("agent-7/notes").map(|p| p.agent().to_owned()), Ok("agent-7".to_owned()));
        for bad in ["", "agent-7", "/agent/x", "agent/x/", "agent//x", "agent/../x", "agent/a b", "agent/x\0y"] {
            assert!(MemoryPath::parse(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn an_over_long_path_is_refused_not_truncated() {
        let path = format!("agent/{}", "x".repeat(MAX_PATH_BYTES));
        assert!(matches!(MemoryPath::parse(&path), Err(ValidationError::TooLong { .. })));
    }

    #[test]
    fn paths_deserialize_only_when_valid() {
        assert!(serde_json::from_str::<MemoryPath>("\"a/b\"").is_ok());
        assert!(serde_json::from_str::<MemoryPath>("\"a/../b\"").is_err());
    }

    #[test]
    fn batches_are_checked_against_every_limit() {
        let path = MemoryPath::parse("agent/x").unwrap();
        let put = |bytes| MemoryCommand::Put { path: path.clone(), value: value(bytes) };
        assert!(MemoryBatch { commands: vec![put(10)] }.validate().is_ok());
        assert!(MemoryBatch::default().validate().is_err());
        assert!(MemoryBatch { commands: vec![put(MAX_VALUE_BYTES + 1)] }.validate().is_err());
        let many = MemoryBatch { commands: vec![put(1); MAX_BATCH_COMMANDS + 1] };
        assert!(matches!(many.validate(), Err(ValidationError::TooMany { .. })));
        let heavy = MemoryBatch { commands: vec![put(MAX_VALUE_BYTES); 5] };
        assert!(matches!(heavy.validate(), Err(ValidationError::TooLong { what: "memory batch", .. })));
        let mut tagged = value(1);
        tagged.tags = vec!["t".into(); MAX_TAGS_PER_RECORD + 1];
        let too_many_tags = MemoryBatch { commands: vec![MemoryCommand::Put { path: path.clone(), value: tagged }] };
        assert!(too_many_tags.validate().is_err());
    }

    #[test]
    fn prefixes_allow_slashes_but_not_foreign_characters() {
        assert!(PathPrefix::parse("agent-7/notes/").is_ok());
        assert!(PathPrefix::parse("").is_ok());
        assert!(PathPrefix::parse("agent 7").is_err());
    }
}
