//! Starts the end-to-end deployment (PostgreSQL, control plane, worker,
//! edge; the binaries from `ANNEX_E2E_BIN_DIR` or this build's target
//! directory) and keeps it running for load measurements. Prints, as one
//! JSON line, what `annex-loadtest` needs; stops on Ctrl-C.
//!
//! ```text
//! ANNEX_E2E_BIN_DIR=target/release cargo run --release -p annex-e2e --example stack
//! ```

use annex_e2e::Stack;
use annex_e2e::stack::StackOptions;

#[tokio::main]
async fn main() {
    let s = Stack::start_with(StackOptions {
        edge_env: vec![("ANNEX_EDGE_TIMEOUT_MS".into(), "30000".into())],
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
