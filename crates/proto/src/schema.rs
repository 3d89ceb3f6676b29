//! JSON Schema of the wire frames, derived from the Rust types (schemars), so the
//! documents in `docs/schema/` cannot drift from what the server reads and writes: a test
//! compares them with what the types give (`PREAU_BLESS=1` rewrites them).
//!
//! Each direction is described by its own contract: client frames as the server reads
//! them (a field with a default may be left out), server frames as the server writes them
//! (a field always written is required, so a client may rely on it).

use schemars::JsonSchema;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{Value, json};

/// A schema document under construction: the frames of one protocol, both directions.
pub struct Document {
    reads: SchemaGenerator,
    writes: SchemaGenerator,
    client: Vec<Value>,
    server: Vec<Value>,
}

impl Document {
    /// An empty document.
    pub fn new() -> Self {
        let settings = SchemaSettings::draft2020_12();
        Document {
            reads: settings.clone().for_deserialize().into_generator(),
            writes: settings.for_serialize().into_generator(),
            client: Vec::new(),
            server: Vec::new(),
        }
    }

    /// A frame a client sends (`direction` is `client`).
    pub fn client<T: JsonSchema>(mut self) -> Self {
        let r = self.reads.subschema_for::<T>();
        self.client.push(r.to_value());
        self
    }

    /// A frame the server sends.
    pub fn server<T: JsonSchema>(mut self) -> Self {
        let r = self.writes.subschema_for::<T>();
        self.server.push(r.to_value());
        self
    }

    /// The document: `$defs` of every type, and `x-client-frames` / `x-server-frames`
    /// naming the frame types of each direction; the root accepts any frame. A type used
    /// in both directions must read as it is written ([`Document::conflicts`] lists those
    /// that do not).
    pub fn finish(mut self, id: &str, title: &str, description: &str) -> Value {
        // Sorted by name: serde_json's map is ordered.
        let mut defs = self.writes.take_definitions(true);
        for (name, schema) in self.reads.take_definitions(true) {
            defs.entry(name).or_insert(schema);
        }
        let any: Vec<Value> = self.client.iter().chain(&self.server).cloned().collect();
        let (client, server) = (self.client, self.server);
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": id,
            "title": title,
            "description": description,
            "x-client-frames": client,
            "x-server-frames": server,
            "anyOf": any,
            "$defs": defs,
        })
    }

    /// Types whose schema differs between the two directions (each should be empty).
    pub fn conflicts(&self) -> Vec<String> {
        let reads = self.reads.definitions().clone();
        let writes = self.writes.definitions();
        reads.iter().filter(|(k, v)| writes.get(*k).is_some_and(|w| w != *v)).map(|(k, _)| k.clone()).collect()
    }
}

impl Default for Document {
    fn default() -> Self {
        Document::new()
    }
}

/// The messaging protocol: `docs/schema/messaging.schema.json`.
pub fn messaging() -> Document {
    Document::new().client::<crate::ClientFrame>().client::<crate::AuthFrame>().server::<crate::ServerFrame>()
}

/// [`messaging`] as committed, with `x-retryable-codes`: the error codes whose command may
/// succeed later unchanged ([`crate::ErrorCode::retryable`], so clients retry what the
/// server says, not a copy of the list).
pub fn messaging_document() -> Value {
    let mut doc = messaging().finish(
        "urn:preau:schema:messaging:v1",
        "Préau messaging protocol, version 1",
        "Frames between a client and the gateway's WebSocket (`/ws`, subprotocols preau.v1.json and preau.v1.msgpack; docs/protocol.md). Generated from crates/proto: do not edit.",
    );
    let codes: Vec<Value> = doc["$defs"]["ErrorCode"]["oneOf"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| serde_json::from_value::<crate::ErrorCode>(c["const"].clone()).ok())
        .filter(|c| c.retryable())
        .map(|c| Value::from(c.as_str()))
        .collect();
    doc["x-retryable-codes"] = Value::from(codes);
    // Not a frame: what a `recording` entry's body holds, in JSON.
    let mut info = serde_json::to_value(schemars::schema_for!(crate::RecordingInfo)).unwrap_or_default();
    if let Some(o) = info.as_object_mut() {
        o.remove("$schema");
    }
    doc["$defs"]["RecordingInfo"] = info;
    doc
}

/// Compares a generated document with the committed file at `path` (from the workspace
/// root), or rewrites the file when `PREAU_BLESS` is set. For the tests of each crate that
/// generates one.
pub fn check_committed(path: &std::path::Path, doc: &Value) -> Result<(), String> {
    let text = serde_json::to_string_pretty(doc).map_err(|e| e.to_string())? + "\n";
    if std::env::var_os("PREAU_BLESS").is_some() {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        }
        return std::fs::write(path, text).map_err(|e| e.to_string());
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    if committed == text {
        Ok(())
    } else {
        Err(format!(
            "{} differs from the frames' types: a frame changed without its schema. Run `PREAU_BLESS=1 cargo test -p preau-proto -p preau-sfu schema` and commit the result (and regenerate sdk/js/src/protocol.ts: `npm run gen` in sdk/js)",
            path.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_committed_matches_the_types() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/schema/messaging.schema.json");
        if let Err(e) = check_committed(&root, &messaging_document()) {
            panic!("{e}");
        }
    }

    #[test]
    fn schema_types_read_as_they_are_written() {
        assert_eq!(messaging().conflicts(), Vec::<String>::new());
    }

    #[test]
    fn schema_describes_a_send_and_an_ack() {
        let doc = messaging_document();
        let defs = doc["$defs"].as_object().expect("$defs");
        for name in ["ClientFrame", "ServerFrame", "AuthFrame", "Entry", "ChannelId", "ErrorCode"] {
            assert!(defs.contains_key(name), "{name} missing");
        }
        // Every command type and every error code is named in the document.
        let text = doc.to_string();
        for ty in crate::Command::TYPES {
            assert!(text.contains(&format!("\"{ty}\"")), "{ty}");
        }
        assert!(text.contains("\"outside_hours\""));
        assert_eq!(doc["x-retryable-codes"], json!(["rate_limited", "unavailable", "internal", "overloaded"]));
    }
}
