//! JSON-RPC 2.0 framing of the peer API: parsing one incoming message into a
//! call or a notification, and the shapes of answers and errors. Pure, so
//! it can be fuzzed alone (`fuzz/`, target `request_decoder`). The caller
//! bounds the message's size before it gets here.

use serde_json::{json, Value};

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;

/// A JSON-RPC error object.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    /// Details a client can act on (e.g. which limit refused a call).
    pub data: Option<Value>,
}

impl RpcError {
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        RpcError { code, message: message.into(), data: None }
    }

    pub fn with_data(self, data: Value) -> Self {
        RpcError { data: Some(data), ..self }
    }

    pub fn invalid_params(message: impl Into<String>) -> Self {
        RpcError::new(INVALID_PARAMS, message)
    }
}

/// One parsed message: a call (has an id) or a notification (none).
#[derive(Debug, Clone, PartialEq)]
pub struct Incoming {
    pub id: Option<Value>,
    pub method: String,
    pub params: Value,
}

/// Parses one text message. On failure, returns the error to answer with
/// and the id to answer to (null when it could not be read).
pub fn parse(text: &str) -> Result<Incoming, (Value, RpcError)> {
    let value: Value = serde_json::from_str(text)
        .map_err(|error| (Value::Null, RpcError::new(PARSE_ERROR, format!("the message is not JSON: {error}"))))?;
    let Value::Object(mut object) = value else {
        let message = if value.is_array() {
            "batch requests are not supported: send one JSON-RPC request per message"
        } else {
            "a JSON-RPC request is a JSON object"
        };
        return Err((Value::Null, RpcError::new(INVALID_REQUEST, message)));
    };
    let id = object.remove("id");
    let reply_id = id.clone().unwrap_or(Value::Null);
    if let Some(id) = &id {
        if !(id.is_string() || id.is_i64() || id.is_u64()) {
            return Err((Value::Null, RpcError::new(INVALID_REQUEST, "`id` must be a string or an integer")));
        }
    }
    if object.get("jsonrpc") != Some(&Value::String("2.0".into())) {
        return Err((reply_id, RpcError::new(INVALID_REQUEST, "`jsonrpc` must be \"2.0\"")));
    }
    let method = match object.remove("method") {
        Some(Value::String(method)) => method,
        Some(_) => return Err((reply_id, RpcError::new(INVALID_REQUEST, "`method` must be a string"))),
        None => return Err((reply_id, RpcError::new(INVALID_REQUEST, "`method` is missing"))),
    };
    let params = object.remove("params").unwrap_or(Value::Object(Default::default()));
    if !params.is_object() {
        return Err((reply_id, RpcError::new(INVALID_REQUEST, "`params` must be an object")));
    }
    Ok(Incoming { id, method, params })
}

pub fn result(id: Value, result: Value) -> String {
    json!({ "jsonrpc": "2.0", "id": id, "result": result }).to_string()
}

pub fn error(id: Value, error: &RpcError) -> String {
    let mut body = json!({ "code": error.code, "message": error.message });
    if let Some(data) = &error.data {
        body["data"] = data.clone();
    }
    json!({ "jsonrpc": "2.0", "id": id, "error": body }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_and_notifications_are_told_apart() {
        let call = parse(r#"{"jsonrpc":"2.0","id":7,"method":"ping"}"#).expect("valid");
        assert_eq!(call.id, Some(json!(7)));
        let note = parse(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).expect("valid");
        assert_eq!(note.id, None);
    }

    #[test]
    fn deeply_nested_json_is_refused_as_unparseable_not_a_crash() {
        let depth = 100_000;
        let nested = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"a":{}1{}}}}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        );
        let (_, error) = parse(&nested).expect_err("too deep");
        assert_eq!(error.code, PARSE_ERROR);
        assert!(error.message.contains("recursion limit"), "{}", error.message);
        let shallow = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"a":{}1{}}}}}"#,
            "[".repeat(100),
            "]".repeat(100)
        );
        parse(&shallow).expect("100 levels are fine");
    }

    #[test]
    fn every_answer_is_valid_json_whatever_the_id_and_message() {
        for id in [json!(null), json!(7), json!("\u{0}\"quote"), json!(u64::MAX)] {
            let text = error(id.clone(), &RpcError::new(INVALID_REQUEST, "bad \"input\"\n\u{1}"));
            let parsed: Value = serde_json::from_str(&text).expect("JSON");
            assert_eq!(parsed["id"], id);
        }
    }

    #[test]
    fn malformed_messages_get_the_matching_error() {
        assert_eq!(parse("{nope").expect_err("not JSON").1.code, PARSE_ERROR);
        assert_eq!(parse("[]").expect_err("batch").1.code, INVALID_REQUEST);
        assert_eq!(parse(r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#).expect_err("version").1.code, INVALID_REQUEST);
        let (id, error) = parse(r#"{"jsonrpc":"2.0","id":"a","method":3}"#).expect_err("method type");
        assert_eq!((id, error.code), (json!("a"), INVALID_REQUEST));
        assert_eq!(
            parse(r#"{"jsonrpc":"2.0","id":1,"method":"x","params":[1]}"#).expect_err("params").1.code,
            INVALID_REQUEST
        );
    }
}
