//! Starts the end-to-end deployment (PostgreSQL, control plane, worker,
//! edge; the binaries from `ANNEX_E2E_BIN_DIR` or this build's target
//! directory) and keeps it running for load measurements. Prints, as one
//! JSON line, what `annex-loadtest` needs; stops on Ctrl-C.
//!
//! ```text
//! ANNEX_E2E_BIN_DIR=target/release cargo run --release -p annex-e2e --example stack
//! ```
//!
//! `ANNEX_STACK_WORKERS` and `ANNEX_STACK_CONTROL_PLANES` (default 1 each) size
//! the fleet. The JSON also carries what the `annex` CLI needs to act as
//! operator on this deployment (`ANNEX_CONTROL_PLANE_URL`, `ANNEX_TLS_DIR`,
//! `ANNEX_JWT_SECRET_FILE`), e.g. for `scripts/bench-setup.sh`.

use annex_e2e::Stack;
use annex_e2e::stack::{FleetOptions, StackOptions};

fn count(var: &str) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1)
}

#[tokio::main]
async fn main() {
    let s = Stack::start_with(StackOptions {
        edge_env: vec![("ANNEX_EDGE_TIMEOUT_MS".into(), "30000".into())],
        fleet: FleetOptions {
            workers: count("ANNEX_STACK_WORKERS"),
            control_planes: count("ANNEX_STACK_CONTROL_PLANES"),
            ..FleetOptions::default()
        },
        ..StackOptions::default()
    })
    .await;
    // The execution grant a direct Worker.Execute needs, as the edge gets it.
    let resolved = annex_proto::pb::installs_client::InstallsClient::new(
        s.channel(annex_ops::Role::Edge).await,
    )
    .resolve(annex_proto::pb::ResolveRequest {
        tenant_id: annex_e2e::stack::TENANT.into(),
        extension: s.hello.registry_id.clone(),
    })
    .await
    .map(|r| r.into_inner().execution_grant)
    .unwrap_or_default();
    println!(
        "{}",
        serde_json::json!({
            "edge": format!("http://{}", s.edge.http),
            "worker": format!("https://{}", s.worker_addr),
            "workers": s.workers.iter().map(|w| format!("https://{}", w.grpc)).collect::<Vec<_>>(),
            "control_plane": format!("https://{}", s.cp_addr),
            "jwt_secret_file": s.jwt_secret_file.display().to_string(),
            "pki": s.pki.display().to_string(),
            "tenant": annex_e2e::stack::TENANT,
            "registry_id": s.hello.registry_id,
            "install_id": s.hello.install_id,
            "content_hash": s.hello.content_hash,
            "token": s.token(&serde_json::json!({})),
            "grant": resolved,
        })
    );
    let _ = tokio::signal::ctrl_c().await;
}
