//! The arguments of the commands that go through the edge: `annex call` and `annex logs`, and
//! where the edge is and how they authenticate to it ([`EdgeArgs`]).
//!
//! Like its parent module, this only describes arguments; it must not touch files or the network.

use std::path::PathBuf;

use clap::Args;

use super::DEFAULT_EDGE;

/// Where the edge is and how `call` and `logs` authenticate to it.
#[derive(Debug, Args)]
pub struct EdgeArgs {
    /// Edge base URL.
    #[arg(long, env = "ANNEX_EDGE_URL", default_value = DEFAULT_EDGE)]
    pub edge: String,

    /// Bearer token [default: a dev JWT for --tenant, minted from --secret-file]. A token
    /// from ANNEX_TOKEN is used only when it is for the tenant an explicit --tenant names.
    #[arg(long, env = "ANNEX_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Whether the token came from ANNEX_TOKEN rather than --token. Set by
    /// [`Cli::parse_with_sources`](super::Cli::parse_with_sources).
    #[arg(skip)]
    pub token_from_env: bool,

    /// Dev JWT secret used when no token is given.
    #[arg(
        long,
        env = "ANNEX_JWT_SECRET_FILE",
        default_value = ".annex/dev-jwt.secret"
    )]
    pub secret_file: PathBuf,
}

#[derive(Debug, Args)]
pub struct CallArgs {
    /// Extension: install id, registry id or slug (publisher.name).
    #[arg(value_name = "EXT")]
    pub extension: String,

    /// Path under the extension, e.g. /hello.
    #[arg(value_name = "PATH", default_value = "/")]
    pub path: String,

    /// HTTP method.
    #[arg(long, short = 'X', default_value = "GET")]
    pub method: String,

    /// Request body.
    #[arg(long, short = 'd', conflicts_with = "data_file")]
    pub data: Option<String>,

    /// Request body from a file.
    #[arg(long, value_name = "PATH")]
    pub data_file: Option<PathBuf>,

    /// Content type of the body.
    #[arg(long, default_value = "application/json")]
    pub content_type: String,

    #[command(flatten)]
    pub edge: EdgeArgs,

    /// Give up after this many seconds.
    #[arg(long, default_value_t = 35)]
    pub timeout_secs: u64,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Extension: registry id (as the edge's debug stream takes it) or slug.
    #[arg(value_name = "EXT")]
    pub extension: String,

    /// Only this request's events.
    #[arg(long)]
    pub request_id: Option<String>,

    /// Stop after this many events.
    #[arg(long)]
    pub limit: Option<usize>,

    /// Stop after this many seconds.
    #[arg(long = "for", value_name = "SECS")]
    pub for_secs: Option<u64>,

    #[command(flatten)]
    pub edge: EdgeArgs,
}
