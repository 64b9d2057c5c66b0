//! Misbehaving guests end with the right outcome and do not disturb other
//! tenants on the same worker.

use std::time::{Duration, Instant};

use annex_proto::pb;
use annex_worker::testing::Call;

use crate::support::{eventually, publisher, worker};

fn outcome(r: &pb::ExecuteResponse) -> pb::Outcome {
    pb::Outcome::try_from(r.outcome).unwrap_or(pb::Outcome::Unspecified)
}

#[tokio::test]
async fn an_endless_loop_times_out_at_its_deadline() {
    let (w, _) = worker().await;
    let hash = publisher().publish("misbehave");
    // Load first so the measured time is the guest's alone.
    w.execute(Call::new(&hash, "GET", "/ok").build()).await;
    let started = Instant::now();
    let r = w
        .execute(Call::new(&hash, "GET", "/loop").timeout_ms(300).build())
        .await;
    let elapsed = started.elapsed();
    assert_eq!(outcome(&r), pb::Outcome::Timeout, "{r:?}");
    assert_eq!(r.status, 500);
    assert_eq!(
        r.error,
        "execute_failed: execution exceeded its time limit of 300 ms"
    );
    // Never before the deadline; the bound above it only catches a guest
    // that is not stopped at all (the machine may be busy).
    assert!(
        elapsed >= Duration::from_millis(300),
        "stopped early: {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(5), "not stopped: {elapsed:?}");
    eprintln!("loop with a 300 ms limit ended after {elapsed:?}");
    // The spinning guest's CPU time is reported with the timeout.
    let usage = r.usage.expect("usage");
    assert!(usage.cpu_us > 0, "{usage:?}");
    assert!(usage.cpu_us <= usage.wall_us, "{usage:?}");
}

#[tokio::test]
async fn a_memory_bomb_ends_as_oom() {
    let (w, _) = worker().await;
    let hash = publisher().publish("misbehave");
    let r = w
        .execute(Call::new(&hash, "GET", "/oom").memory_mb(64).build())
        .await;
    assert_eq!(outcome(&r), pb::Outcome::Oom, "{r:?}");
    assert!(
        r.error.starts_with("execute_failed: memory limit exceeded"),
        "{}",
        r.error
    );
    let peak = r.usage.map_or(0, |u| u.peak_memory_bytes);
    assert!(peak <= 64 * 1024 * 1024, "peak {peak} above the limit");
}

#[tokio::test]
async fn unbounded_recursion_traps() {
    let (w, _) = worker().await;
    let hash = publisher().publish("misbehave");
    let r = w.execute(Call::new(&hash, "GET", "/recurse").build()).await;
    assert_eq!(outcome(&r), pb::Outcome::Trap, "{r:?}");
    // Either the wasm stack or the guest's shadow stack (in linear memory)
    // overflows first; both trap.
    assert!(
        r.error.starts_with("execute_failed: wasm trap: "),
        "{}",
        r.error
    );
}

#[tokio::test]
async fn a_panic_traps() {
    let (w, _) = worker().await;
    let hash = publisher().publish("misbehave");
    let r = w.execute(Call::new(&hash, "GET", "/panic").build()).await;
    assert_eq!(outcome(&r), pb::Outcome::Trap, "{r:?}");
    assert!(r.error.starts_with("execute_failed: "), "{}", r.error);
}

#[tokio::test]
async fn a_giant_response_is_rejected() {
    let (w, _) = worker().await;
    let hash = publisher().publish("misbehave");
    let r = w
        .execute(
            Call::new(&hash, "GET", "/giant")
                .query("mb", "4")
                .max_response_bytes(1024 * 1024)
                .build(),
        )
        .await;
    assert_eq!(outcome(&r), pb::Outcome::Rejected, "{r:?}");
    assert!(r.body.is_none());
    assert_eq!(
        r.error,
        "execute_failed: response body of 4194304 bytes exceeds the limit of 1048576 bytes"
    );
}

#[tokio::test]
async fn stdout_and_stderr_are_captured_into_the_log() {
    let (w, backend) = worker().await;
    let hash = publisher().publish("misbehave");
    let r = w.execute(Call::new(&hash, "GET", "/stdout").build()).await;
    assert_eq!(outcome(&r), pb::Outcome::Ok, "{r:?}");
    let out = eventually(Duration::from_secs(5), || {
        backend.logs_containing("line one to stdout").pop()
    })
    .await;
    assert_eq!(out.stream, "stdout");
    let err = eventually(Duration::from_secs(5), || {
        backend.logs_containing("line two to stderr").pop()
    })
    .await;
    assert_eq!(err.stream, "stderr");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_tenants_keep_succeeding_while_loops_run() {
    let (w, _) = worker().await;
    let bad = publisher().publish("misbehave");
    let good = publisher().publish("hello");
    w.execute(Call::new(&bad, "GET", "/ok").build()).await;
    w.execute(Call::new(&good, "GET", "/hello").build()).await;
    // Three spinning guests of tenant A, more than the machine has cores,
    // with a deadline far beyond this test.
    let loops: Vec<_> = (0..3)
        .map(|_| {
            let client = w.client.clone();
            let req = Call::new(&bad, "GET", "/loop")
                .tenant("tenant-a")
                .timeout_ms(120_000)
                .build();
            tokio::spawn(async move { client.clone().execute(req).await })
        })
        .collect();
    let executor = w.executor.clone();
    eventually(Duration::from_secs(10), || {
        (executor.admission().running() >= 3).then_some(())
    })
    .await;
    let t = Instant::now();
    for i in 0..10 {
        let r = w
            .execute(Call::new(&good, "GET", "/hello").tenant("tenant-b").build())
            .await;
        assert_eq!(outcome(&r), pb::Outcome::Ok, "request {i}: {r:?}");
        assert_eq!(r.status, 200);
    }
    assert!(
        loops.iter().all(|l| !l.is_finished()),
        "a loop ended before tenant B was served"
    );
    eprintln!(
        "tenant B served 10 requests in {:?} beside 3 spinning guests",
        t.elapsed()
    );
    // Cancelling the callers stops the guests and frees their slots.
    let t = Instant::now();
    for l in &loops {
        l.abort();
    }
    eventually(Duration::from_secs(10), || {
        (executor.admission().running() == 0).then_some(())
    })
    .await;
    eprintln!(
        "cancelled guests released their slots after {:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn a_host_call_that_outlives_the_deadline_ends_as_timeout() {
    // A server that accepts and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    let (w, _) = worker().await;
    let hash = publisher().publish("probe");
    let body =
        serde_json::json!({"method": "GET", "url": format!("http://{addr}/slow")}).to_string();
    let started = Instant::now();
    let r = w
        .execute(
            Call::new(&hash, "POST", "/fetch")
                .caps(&["cap:http.fetch"])
                .allow(&[addr.to_string().as_str()])
                .body(body)
                .timeout_ms(300)
                .build(),
        )
        .await;
    let elapsed = started.elapsed();
    // Epochs do not advance while the guest awaits the host; the async
    // bound still ends the call (Alga's runner would wait 30 s).
    assert_eq!(outcome(&r), pb::Outcome::Timeout, "{r:?}");
    assert!(
        elapsed >= Duration::from_millis(300),
        "stopped early: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(10),
        "not stopped: {elapsed:?}"
    );
}
