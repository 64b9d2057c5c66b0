//! A caller in the worker's own process (`annex dev`'s edge) reaches the
//! `Worker` service registered in-process under the worker's address, with
//! nothing listening there; once the registration is gone, the same address
//! means the network again.

use std::sync::Arc;

use annex_dispatch::{ExecuteError, WorkerTarget, WorkerTls, Workers};
use annex_ops::Role;
use annex_ops::devcerts::DevCa;
use annex_ops::in_process::Endpoints;
use annex_proto::pb;
use annex_worker::backend::NoHostBackend;
use annex_worker::bundles::StaticTrust;
use annex_worker::grpc::WorkerService;
use annex_worker::metrics::Metrics;
use annex_worker::server::{self, Sources};
use annex_worker::testing::{Call, test_settings};

use crate::support::{publisher, tmp_dir};

#[tokio::test]
async fn an_in_process_worker_answers_without_a_listener_and_only_while_registered() {
    annex_ops::tls::install_crypto_provider();
    let executor = server::build(
        &test_settings(Some(tmp_dir("worker-cache"))),
        Sources {
            backend: Arc::new(NoHostBackend),
            bundles: Arc::new(publisher().bundles.clone()),
            trust: Arc::new(StaticTrust(publisher().trust.clone())),
        },
        Metrics::unregistered(),
    )
    .expect("worker");
    let hash = publisher().publish("hello");
    // An address nothing listens on: only the in-process path can answer.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = closed.local_addr().expect("addr").to_string();
    drop(closed);

    let ca = DevCa::generate().expect("ca");
    let tls = annex_ops::tls::Tls::new(ca.issue(Role::Edge, "edge").expect("issue")).expect("tls");
    let endpoints = Endpoints::default();
    let workers = Workers::new(
        WorkerTls {
            material: tls,
            server_name: None,
        },
        16 * 1024 * 1024,
    )
    .with_in_process(endpoints.clone(), Role::Edge);
    let targets = [WorkerTarget {
        id: "w".into(),
        address: address.clone(),
        capacity: 0,
        in_flight: 0,
    }];

    let registration =
        endpoints.register(&address, WorkerService::new(executor.clone()).into_server());
    let executed = workers
        .execute(&targets, Call::new(&hash, "GET", "/hello").build())
        .await
        .expect("the in-process worker answers");
    let r = executed.response;
    assert_eq!(r.outcome, pb::Outcome::Ok as i32, "{r:?}");
    assert_eq!(r.status, 200);
    let body = String::from_utf8(r.body.unwrap_or_default()).expect("utf-8");
    assert!(body.contains("hello"), "{body}");

    // The worker stopped serving: the address is dialled, and refuses.
    drop(registration);
    let err = workers
        .execute(&targets, Call::new(&hash, "GET", "/hello").build())
        .await
        .expect_err("nothing listens once the registration is gone");
    assert!(matches!(err, ExecuteError::Refused(_)), "{err:?}");
}
