//! The hostile-guest corpus through the real edge: every route of
//! `examples/hostile` (one attack each) is called as tenant A, and each must
//! give the answer written in [`CORPUS`], while tenant B calls its own
//! extension in a loop the whole time with zero failures. The stack runs in
//! a private network namespace (`annex_e2e::netns`) because two routes try
//! to reach beyond this machine.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use annex_e2e::netns::{self, Isolation};
use annex_e2e::stack::{FleetOptions, Installed, OTHER_TENANT, PUBLISHER, StackOptions, TENANT};
use annex_e2e::{Stack, http::try_send};
use annex_ops::Role;
use annex_proto::pb;
use serde_json::{Value, json};

/// What a hostile route must answer: its status and its exact JSON body
/// (`{request_id}` stands for the call's `x-request-id`), or its plain text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    /// Edge error body `{"error": code, "requestId": <id>}`.
    Gateway(u16, &'static str),
    /// The guest's own JSON answer, relayed unchanged.
    Json(u16, &'static str),
    /// The guest's plain-text answer, relayed unchanged.
    Text(u16, &'static str),
}

/// One attack: the route, what it does, what the caller must get, and
/// whether the attack needs the private network namespace to run safely.
struct Attack {
    path: &'static str,
    what: &'static str,
    want: Want,
    off_host: bool,
}

/// The corpus and the answer each attack must give. `{cp_admin}` in a path
/// is the first control plane's admin listener (loopback).
const CORPUS: &[Attack] = &[
    Attack {
        path: "/headers?n=33000",
        what: "33,000 response headers (panicked the edge's HeaderMap)",
        want: Want::Gateway(502, "bad_gateway"),
        off_host: false,
    },
    Attack {
        path: "/big-header?kb=1024",
        what: "one 1 MiB response header value",
        want: Want::Gateway(502, "bad_gateway"),
        off_host: false,
    },
    Attack {
        path: "/log-flood?n=5000&kb=8",
        what: "5,000 log lines of 8 KiB (39 MiB into the worker's log)",
        want: Want::Text(200, "logged 5000"),
        off_host: false,
    },
    Attack {
        path: "/huge-body?mb=64",
        what: "a 64 MiB response body (the limit is 8 MiB)",
        want: Want::Gateway(502, "bad_gateway"),
        off_host: false,
    },
    Attack {
        path: "/slow-body?ms=60000",
        what: "an answer held back for a minute without using CPU",
        want: Want::Gateway(504, "gateway_timeout"),
        off_host: false,
    },
    Attack {
        path: "/fetch?url=http%3A%2F%2Flocalhost%3A{cp_admin}%2Fmetrics",
        what: "http.fetch of the control plane's admin /metrics via the allowlisted name `localhost`",
        want: Want::Json(403, r#"{"fetchError":"not-allowed"}"#),
        off_host: false,
    },
    Attack {
        path: "/fetch-metadata",
        what: "http.fetch of 169.254.169.254 (allowlisted as an IP literal)",
        want: Want::Json(403, r#"{"fetchError":"not-allowed"}"#),
        off_host: true,
    },
    Attack {
        path: "/cpu",
        what: "an endless loop",
        want: Want::Gateway(504, "gateway_timeout"),
        off_host: false,
    },
    Attack {
        path: "/memory",
        what: "allocating until memory growth is refused",
        want: Want::Gateway(502, "bad_gateway"),
        off_host: false,
    },
    Attack {
        path: "/recurse",
        what: "unbounded recursion",
        want: Want::Gateway(502, "bad_gateway"),
        off_host: false,
    },
    Attack {
        path: "/host-calls?n=100000",
        what: "200,000 storage host calls (put and get) in one execution",
        want: Want::Gateway(504, "gateway_timeout"),
        off_host: false,
    },
    Attack {
        path: "/status?code=1000",
        what: "status code 1000",
        want: Want::Gateway(502, "bad_gateway"),
        off_host: false,
    },
];

/// The most the worker's own log may grow while the log flood runs: the
/// guest's lines are capped before they are written.
const LOG_FLOOD_MAX_GROWTH: u64 = 4 * 1024 * 1024;

/// Hosts the platform and the hostile install allow, so the egress policy
/// itself (not the allowlist) must refuse the private and metadata fetches.
const EGRESS: [&str; 2] = ["localhost", "169.254.169.254"];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_guests_get_their_errors_while_other_tenants_keep_working() {
    let off_host_allowed = match netns::run_isolated(
        "hostile_guests_get_their_errors_while_other_tenants_keep_working",
    ) {
        Isolation::RanInside => return,
        Isolation::Inside => true,
        Isolation::Unavailable(why) => {
            eprintln!("notice: {why}; the attacks that could leave this host are not run");
            false
        }
    };
    let s = Stack::start_with(StackOptions {
        fleet: FleetOptions {
            control_plane_env: vec![(
                "ANNEX_CONTROL_PLANE_EGRESS_ALLOWLIST".into(),
                EGRESS.join(","),
            )],
            ..FleetOptions::default()
        },
        ..StackOptions::default()
    })
    .await;
    let hostile = install_hostile(&s).await;
    let victim = s.install_for(OTHER_TENANT, &s.hello.registry_id).await;
    let victim_auth = s.bearer(&json!({"tenant": OTHER_TENANT}));

    let stop = Arc::new(AtomicBool::new(false));
    let (calls, failures) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let victim_loop = tokio::spawn(victim_calls(
        s.edge.http,
        format!("/api/ext/{}/hello", victim.registry_id),
        victim_auth,
        stop.clone(),
        calls.clone(),
        failures.clone(),
    ));

    let auth = s.bearer(&json!({}));
    let mut mismatches = Vec::new();
    for (i, attack) in CORPUS.iter().enumerate() {
        if attack.off_host && !off_host_allowed {
            eprintln!("skipped (no private network namespace): {}", attack.path);
            continue;
        }
        let path = attack
            .path
            .replace("{cp_admin}", &s.control_planes[0].admin.port().to_string());
        let request_id = format!("hostile-{i}");
        let log_before = file_len(&s.workers[0].proc.log);
        let seen = call(&s, &hostile, &path, &auth, &request_id).await;
        let want = expected(attack.want, &request_id);
        if attack.path.starts_with("/log-flood") {
            let growth = file_len(&s.workers[0].proc.log).saturating_sub(log_before);
            if growth > LOG_FLOOD_MAX_GROWTH {
                mismatches.push(format!(
                    "{path} ({}): the worker's log grew by {growth} bytes (at most {LOG_FLOOD_MAX_GROWTH})",
                    attack.what
                ));
            }
        }
        eprintln!(
            "{} {path}: expected {want:?}, observed {seen:?}",
            if seen == want { "ok  " } else { "FAIL" }
        );
        if seen != want {
            mismatches.push(format!(
                "{path} ({}): expected {want:?}, observed {seen:?}",
                attack.what
            ));
        }
    }

    stop.store(true, Ordering::SeqCst);
    let victim_errors = victim_loop
        .await
        .unwrap_or_else(|e| panic!("victim loop: {e}"));
    let (calls, failures) = (
        calls.load(Ordering::SeqCst),
        failures.load(Ordering::SeqCst),
    );
    assert!(calls > 0, "the victim never called");
    assert!(
        mismatches.is_empty() && failures == 0,
        "hostile routes that did not give their answer:\n{}\nvictim: {failures} of {calls} calls failed: {victim_errors:?}\n{}",
        mismatches.join("\n"),
        s.logs()
    );
}

/// What a call observed: the status and body as the expectation spells them.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Json(u16, Value),
    Text(u16, String),
    /// No HTTP answer at all (the connection failed or was closed).
    NoAnswer(String),
}

fn expected(want: Want, request_id: &str) -> Seen {
    match want {
        Want::Gateway(status, code) => {
            Seen::Json(status, json!({"error": code, "requestId": request_id}))
        }
        Want::Json(status, body) => Seen::Json(
            status,
            serde_json::from_str(body).unwrap_or_else(|e| panic!("{body}: {e}")),
        ),
        Want::Text(status, body) => Seen::Text(status, body.to_owned()),
    }
}

async fn call(s: &Stack, hostile: &Installed, path: &str, auth: &str, request_id: &str) -> Seen {
    let url = format!("/api/ext/{}{path}", hostile.registry_id);
    let headers = [("authorization", auth), ("x-request-id", request_id)];
    match try_send(s.edge.http, "GET", &url, &headers, b"").await {
        Err(e) => Seen::NoAnswer(e),
        Ok(r) => match serde_json::from_slice::<Value>(&r.body) {
            Ok(v) if r.header("content-type").is_some_and(|c| c.contains("json")) => {
                Seen::Json(r.status, v)
            }
            _ => {
                let mut text = r.text();
                text.truncate(200);
                Seen::Text(r.status, text)
            }
        },
    }
}

/// Tenant B's calls of its own extension until `stop`: each must be a 200.
/// Bounded by a call cap as well as by the stop flag.
async fn victim_calls(
    edge: std::net::SocketAddr,
    path: String,
    auth: String,
    stop: Arc<AtomicBool>,
    calls: Arc<AtomicU64>,
    failures: Arc<AtomicU64>,
) -> Vec<String> {
    const MAX_CALLS: u64 = 200_000;
    let mut errors = Vec::new();
    while !stop.load(Ordering::SeqCst) && calls.load(Ordering::SeqCst) < MAX_CALLS {
        let r = try_send(edge, "GET", &path, &[("authorization", &auth)], b"").await;
        calls.fetch_add(1, Ordering::SeqCst);
        match r {
            Ok(r) if r.status == 200 => {}
            Ok(r) => {
                failures.fetch_add(1, Ordering::SeqCst);
                if errors.len() < 20 {
                    errors.push(format!("{} {}", r.status, r.text()));
                }
            }
            Err(e) => {
                failures.fetch_add(1, Ordering::SeqCst);
                if errors.len() < 20 {
                    errors.push(e);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    errors
}

/// Publishes `examples/hostile` signed and installs it for [`TENANT`] with
/// [`EGRESS`] allowed (or `localhost` alone, if the control plane refuses
/// the metadata address at install time, which is as good).
async fn install_hostile(s: &Stack) -> Installed {
    let wasm = std::fs::read(annex_worker::testing::guest("hostile"))
        .unwrap_or_else(|e| panic!("hostile guest: {e}"));
    let mut manifest: Value =
        serde_json::from_str(include_str!("../../examples/hostile/manifest.json"))
            .unwrap_or_else(|e| panic!("manifest: {e}"));
    manifest["publisher"] = json!(PUBLISHER);
    let installed = s.publish_and_install(&manifest, &wasm).await;
    let mut installs = pb::installs_client::InstallsClient::new(s.channel(Role::Operator).await);
    let request = |egress: &[&str]| pb::InstallRequest {
        tenant_id: TENANT.into(),
        extension: installed.registry_id.clone(),
        egress_allowlist: egress.iter().map(|h| (*h).to_owned()).collect(),
        ..Default::default()
    };
    if let Err(status) = installs.install(request(&EGRESS)).await {
        eprintln!("the metadata address was refused at install: {status}");
        installs
            .install(request(&EGRESS[..1]))
            .await
            .unwrap_or_else(|e| panic!("installing hostile with egress: {e}"));
    }
    installed
}

fn file_len(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or_default()
}
