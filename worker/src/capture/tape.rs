//! The tape: everything one execution's guest saw, as JSON
//! (docs/design/replay.md, "What is recorded"). The request and the
//! worker's answer are kept as protobuf bytes (base64), so every field
//! survives; host calls are [`Exchange`]s, an [`Ask`] (what the guest
//! asked, compared on replay) and its [`Answer`]; clock readings and
//! random bytes are streams read in order. Secret values are never on the
//! tape: the secrets answer holds the keys, the values travel beside it
//! and are sealed by the control plane.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

/// The format version this worker writes and reads.
pub const TAPE_VERSION: u32 = 1;

/// One captured execution.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tape {
    pub version: u32,
    /// The `ExecuteRequest` as the worker received it, without its grant
    /// (protobuf, base64).
    pub request: String,
    /// The install's config version the call ran with.
    #[serde(default)]
    pub config_version: String,
    /// The host calls, in the order the guest made them.
    #[serde(default)]
    pub calls: Vec<Exchange>,
    /// `wasi:clocks/wall-clock.now` readings, nanoseconds since the epoch.
    #[serde(default)]
    pub wall_clock: Vec<u64>,
    /// `wasi:clocks/monotonic-clock.now` readings, nanoseconds.
    #[serde(default)]
    pub monotonic_clock: Vec<u64>,
    /// Bytes the guest drew from `wasi:random/random` (base64).
    #[serde(default)]
    pub secure_random: String,
    /// Bytes drawn from `wasi:random/insecure` (base64).
    #[serde(default)]
    pub insecure_random: String,
    /// `wasi:random/insecure-seed`, decimal.
    #[serde(default)]
    pub insecure_seed: String,
    /// The worker's `ExecuteResponse` without usage figures (protobuf,
    /// base64); empty until the execution ended.
    #[serde(default)]
    pub response: String,
    /// The tape reached its size cap; later calls and readings are missing.
    #[serde(default)]
    pub truncated: bool,
}

impl Tape {
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain data into memory cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a tape, refusing another format version.
    pub fn from_json(bytes: &[u8]) -> Result<Tape, TapeError> {
        let tape: Tape =
            serde_json::from_slice(bytes).map_err(|e| TapeError::Malformed(e.to_string()))?;
        if tape.version != TAPE_VERSION {
            return Err(TapeError::Version(tape.version));
        }
        Ok(tape)
    }
}

/// A tape that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TapeError {
    #[error("the capture's tape is malformed: {0}")]
    Malformed(String),
    #[error("the capture's tape has format version {0}; this worker reads version 1")]
    Version(u32),
}

/// Bytes as base64 in JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Bytes(pub String);

impl Bytes {
    pub fn of(bytes: &[u8]) -> Bytes {
        Bytes(B64.encode(bytes))
    }

    pub fn decode(&self) -> Vec<u8> {
        B64.decode(&self.0).unwrap_or_default()
    }
}

/// One host call and its answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exchange {
    pub ask: Ask,
    pub answer: Answer,
}

/// What the guest asked the host. Replay compares these field by field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "call", rename_all = "snake_case")]
pub enum Ask {
    StorageGet {
        namespace: String,
        key: String,
    },
    StoragePut {
        namespace: String,
        key: String,
        value: Bytes,
        if_revision: Option<u64>,
        ttl_seconds: Option<u64>,
        json: bool,
        schema_version: Option<u32>,
    },
    StorageBulkPut {
        namespace: String,
        items: Vec<(String, Bytes, Option<u64>)>,
        ttl_seconds: Option<u64>,
        json: bool,
        schema_version: Option<u32>,
    },
    StorageDelete {
        namespace: String,
        key: String,
    },
    StorageList {
        namespace: String,
        cursor: Option<String>,
    },
    /// The install's secret map (fetched once per execution).
    Secrets,
    HttpFetch {
        method: String,
        url: String,
        headers: Vec<(String, String)>,
        body: Option<Bytes>,
    },
    /// A `wasi:http/outgoing-handler` request (the body read whole).
    WasiHttp {
        method: String,
        url: String,
        headers: Vec<(String, Bytes)>,
        body: Bytes,
    },
    /// A call whose request is a protobuf message: the scheduler, the
    /// endpoints list, the host-application and ui-proxy relays.
    Message {
        name: String,
        request: Bytes,
    },
}

impl Ask {
    /// One line for a divergence report.
    pub fn describe(&self) -> String {
        match self {
            Ask::StorageGet { namespace, key } => format!("storage get {namespace}/{key}"),
            Ask::StoragePut { namespace, key, .. } => format!("storage put {namespace}/{key}"),
            Ask::StorageBulkPut {
                namespace, items, ..
            } => {
                let keys: Vec<&str> = items.iter().map(|(k, _, _)| k.as_str()).collect();
                format!("storage bulk put {namespace}/[{}]", keys.join(", "))
            }
            Ask::StorageDelete { namespace, key } => format!("storage delete {namespace}/{key}"),
            Ask::StorageList { namespace, cursor } => format!(
                "storage list {namespace} after {}",
                cursor.as_deref().unwrap_or("(start)")
            ),
            Ask::Secrets => "secrets".to_string(),
            Ask::HttpFetch { method, url, .. } => format!("http fetch {method} {url}"),
            Ask::WasiHttp { method, url, .. } => format!("wasi:http {method} {url}"),
            Ask::Message { name, .. } => name.clone(),
        }
    }
}

/// A stored record as the guest received it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub namespace: String,
    pub key: String,
    pub value: Bytes,
    pub revision: u64,
}

/// An `http.fetch` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

/// What the host answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// The host service failed (HTTP-equivalent status, message).
    Failed {
        status: u16,
        message: String,
    },
    Record(Option<Record>),
    Records(Vec<Record>),
    Deleted(bool),
    /// The secret keys; the values are kept apart, sealed.
    SecretKeys(Vec<String>),
    Http(HttpAnswer),
    /// `invalid-url`, `not-allowed` or `transport`.
    HttpError(String),
    /// A `wasi:http` response, its body read whole.
    WasiHttp {
        status: u16,
        headers: Vec<(String, Bytes)>,
        body: Bytes,
    },
    /// A protobuf answer (base64).
    Message(Bytes),
}
