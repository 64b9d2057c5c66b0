//! The arguments of running Annex locally: `annex dev` (the whole fleet in one process) and
//! `annex token` (a development JWT the edge accepts).
//!
//! Like its parent module, this only describes arguments; it must not touch files.

use std::path::PathBuf;

use clap::Args;

use super::{UserType, parse_duration};

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Where dev state lives: certificates, keys, the PostgreSQL cluster, caches, dev.env.
    #[arg(long, env = "ANNEX_DEV_DIR", default_value = ".annex")]
    pub dir: PathBuf,

    /// The repository's examples/ directory (the sample is built from it).
    #[arg(long, default_value = "examples")]
    pub examples: PathBuf,

    /// Edge HTTP port on 127.0.0.1.
    #[arg(long, env = "ANNEX_DEV_EDGE_PORT", default_value_t = 8080)]
    pub edge_port: u16,

    /// Control-plane gRPC port on 127.0.0.1.
    #[arg(long, env = "ANNEX_DEV_CONTROL_PLANE_PORT", default_value_t = 7443)]
    pub control_plane_port: u16,

    /// Worker gRPC port on 127.0.0.1.
    #[arg(long, env = "ANNEX_DEV_WORKER_PORT", default_value_t = 7444)]
    pub worker_port: u16,

    /// Use the in-memory store even when PostgreSQL is installed.
    #[arg(long)]
    pub memory_store: bool,

    /// Do not build and install the hello sample.
    #[arg(long)]
    pub no_sample: bool,

    /// Base URL of the host application's internal extension APIs (invoicing, clients, services).
    #[arg(long, env = "ANNEX_DEV_HOST_APP_URL")]
    pub host_app_url: Option<String>,

    /// Token sent to the host application as x-runner-auth.
    #[arg(
        long,
        env = "ANNEX_DEV_HOST_APP_TOKEN",
        default_value = "dev-host-app-token"
    )]
    pub host_app_token: String,

    /// Base URL for ui-proxy routes.
    #[arg(long, env = "ANNEX_DEV_UI_PROXY_URL")]
    pub ui_proxy_url: Option<String>,

    /// Serve your extension project from DIR instead of the sample: build, sign, publish and
    /// install it now and again on every change, and serve its UI.
    #[arg(long, value_name = "DIR")]
    pub watch: Option<PathBuf>,

    /// Port on 127.0.0.1 of the page that hosts the watched extension's UI (with --watch).
    #[arg(long, env = "ANNEX_DEV_UI_PORT", default_value_t = 8081)]
    pub ui_port: u16,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// User id (the `sub` claim).
    #[arg(long, default_value = "dev-user", value_name = "ID")]
    pub user: String,

    /// The `email` claim [default: <user>@example.test].
    #[arg(long, value_name = "EMAIL")]
    pub email: Option<String>,

    /// The `name` claim (display name).
    #[arg(long, default_value = "Dev User", value_name = "NAME")]
    pub name: String,

    /// The `user_type` claim.
    #[arg(long, value_enum, default_value_t = UserType::Internal)]
    pub user_type: UserType,

    /// The `client_id` claim (client-portal users' client); omitted when not given.
    #[arg(long, value_name = "ID")]
    pub client_id: Option<String>,

    /// Permission to grant; repeat for more [default: extension:read and extension:write].
    #[arg(long = "permission", value_name = "PERMISSION")]
    pub permissions: Vec<String>,

    /// The `aud` claim.
    #[arg(long, default_value = "annex", value_name = "AUDIENCE")]
    pub audience: String,

    /// Lifetime: seconds, or a number with s, m, h or d.
    #[arg(long, default_value = "1h", value_name = "DURATION", value_parser = parse_duration)]
    pub ttl: std::time::Duration,

    /// HMAC secret file shared with the edge [default: .annex/dev-jwt.secret, created if absent].
    #[arg(
        long,
        env = "ANNEX_JWT_SECRET_FILE",
        value_name = "PATH",
        conflicts_with = "key_file"
    )]
    pub secret_file: Option<PathBuf>,

    /// Private key (PEM: RSA, P-256 or Ed25519) to sign with RS256, ES256 or
    /// EdDSA instead of the HS256 secret.
    #[arg(long, value_name = "PATH")]
    pub key_file: Option<PathBuf>,

    /// Key id written in the token's header (`kid`), for an edge that reads
    /// the identity provider's key set.
    #[arg(long, value_name = "ID")]
    pub kid: Option<String>,

    /// The `iss` claim; omitted when not given.
    #[arg(long, value_name = "ISSUER")]
    pub issuer: Option<String>,
}
