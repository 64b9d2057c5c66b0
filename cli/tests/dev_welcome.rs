//! `annex dev`'s welcome lines name what this run really uses: the
//! control-plane port it was given, the PKI directory under `--dir`, and,
//! under `--no-sample`, no commands for a sample that is not there.

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[test]
fn the_welcome_shows_the_real_port_and_pki_directory_and_no_sample_commands() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let log_path = dir.path().join("dev.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let cp_port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_annex"))
        .current_dir(dir.path())
        .arg("dev")
        .arg("--dir")
        .arg(&state)
        .args([
            "--no-sample".to_owned(),
            "--memory-store".to_owned(),
            format!("--control-plane-port={cp_port}"),
            format!("--edge-port={}", free_port()),
            format!("--worker-port={}", free_port()),
        ])
        .env_remove("ANNEX_DEV_DIR")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn annex dev");
    let read = || {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&log_path) {
            let _ = f.read_to_string(&mut text);
        }
        text
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let text = loop {
        let text = read();
        if text.contains("Ctrl-C stops everything.") {
            break text;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("annex dev exited with {status}:\n{text}");
        }
        assert!(Instant::now() < deadline, "no welcome lines:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        text.contains(&format!("control plane: https://127.0.0.1:{cp_port} ")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "the annex CLI uses {}",
            state.join("pki").display()
        )),
        "{text}"
    );
    let welcome = &text[text.find("Annex is running.").expect("welcome")..];
    for sample_command in ["annex call", "curl", "ANNEX_SAMPLE", "/hello"] {
        assert!(
            !welcome.contains(sample_command),
            "{sample_command} in:\n{welcome}"
        );
    }
}
