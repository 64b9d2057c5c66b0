//! A real S3-compatible server for the tests: moto's server mode, from PyPI
//! into a virtualenv under the target directory, on a free loopback port,
//! killed when dropped. Under `CI=true` a missing prerequisite fails the
//! test; elsewhere (no network, no `python3 -m venv`) it says why and skips.
//! Also a TCP proxy that cuts an upload off after a byte budget.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use annex_control_plane::store::{S3BlobStore, S3Settings};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

const PACKAGE: &str = "moto[server]==5.2.5";

/// The virtualenv's python with moto installed, or why there is none; set
/// up once per test binary.
fn python() -> Result<PathBuf, String> {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PYTHON.get_or_init(install).clone()
}

fn install() -> Result<PathBuf, String> {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("moto-venv");
    let py = venv.join("bin/python");
    let ready = |py: &Path| {
        Command::new(py)
            .args(["-c", "import moto.server, flask"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if ready(&py) {
        return Ok(py);
    }
    let run = |cmd: &mut Command, what: &str| -> Result<(), String> {
        let out = cmd.output().map_err(|e| format!("{what}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{what} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    };
    run(
        Command::new("python3").args(["-m", "venv"]).arg(&venv),
        "python3 -m venv",
    )?;
    run(
        Command::new(&py).args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            PACKAGE,
        ]),
        "pip install moto[server]",
    )?;
    if ready(&py) {
        Ok(py)
    } else {
        Err("moto does not import after installing".into())
    }
}

/// A running moto server; killed on drop.
pub struct Moto {
    child: Child,
    pub addr: SocketAddr,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Moto {
    /// Starts a server, or `None` (after a notice) where moto cannot be had
    /// outside CI.
    pub async fn start() -> Option<Moto> {
        annex_ops::tls::install_crypto_provider();
        let py = match tokio::task::spawn_blocking(python).await.expect("join") {
            Ok(py) => py,
            Err(why) if std::env::var("CI").as_deref() != Ok("true") => {
                eprintln!("skipped: moto is not available ({why})");
                return None;
            }
            Err(why) => panic!("moto[server] is required under CI=true: {why}"),
        };
        let port = free_port();
        let child = Command::new(py)
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting moto.server");
        let moto = Moto {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        let url = moto.endpoint();
        annex_testkit::assert_eventually!(
            Duration::from_secs(60),
            async || reqwest::get(&url)
                .await
                .is_ok_and(|r| r.status().is_success()),
            "moto to serve on {url}"
        );
        Some(moto)
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Creates `bucket` (moto takes unsigned requests).
    pub async fn bucket(&self, bucket: &str) {
        let response = reqwest::Client::new()
            .put(format!("{}/{bucket}", self.endpoint()))
            .send()
            .await
            .expect("creating a bucket");
        assert!(response.status().is_success(), "{}", response.status());
    }

    /// A store on `bucket` through `endpoint` (this server or a proxy to it).
    pub fn store_at(endpoint: &str, bucket: &str) -> S3BlobStore {
        S3BlobStore::new(bucket, "annex", &settings(endpoint)).expect("S3 store")
    }

    pub fn store(&self, bucket: &str) -> S3BlobStore {
        Moto::store_at(&self.endpoint(), bucket)
    }
}

/// Settings for a local server: static credentials, plain HTTP, few retries.
pub fn settings(endpoint: &str) -> S3Settings {
    S3Settings {
        endpoint: Some(endpoint.to_owned()),
        region: Some("us-east-1".into()),
        access_key_id: Some("testing".into()),
        secret_access_key: Some("testing".into()),
        allow_http: true,
        max_retries: 2,
        retry_timeout: Duration::from_secs(10),
    }
}

/// A TCP proxy that forwards to `upstream` until `budget` request bytes have
/// gone through, then cuts every connection and refuses new ones until healed.
pub struct CutProxy {
    pub addr: SocketAddr,
    budget: Arc<AtomicI64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl CutProxy {
    pub async fn start(upstream: SocketAddr, budget: u64) -> CutProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let budget = Arc::new(AtomicI64::new(i64::try_from(budget).expect("budget")));
        let task = tokio::spawn({
            let budget = budget.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    if budget.load(Ordering::SeqCst) <= 0 {
                        drop(client);
                        continue;
                    }
                    tokio::spawn(relay(client, upstream, budget.clone()));
                }
            }
        });
        CutProxy { addr, budget, task }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Forwards everything from now on.
    pub fn heal(&self) {
        self.budget.store(i64::MAX, Ordering::SeqCst);
    }
}

async fn relay(mut client: TcpStream, upstream: SocketAddr, budget: Arc<AtomicI64>) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.split();
    let (mut server_read, mut server_write) = server.split();
    let requests = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = client_read.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                return;
            }
            let left = budget.fetch_sub(n as i64, Ordering::SeqCst) - n as i64;
            if left <= 0 {
                // Cut off midway: the connection closes with the request unfinished.
                return;
            }
            if server_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let responses = tokio::io::copy(&mut server_read, &mut client_write);
    tokio::select! {
        () = requests => {}
        _ = responses => {}
    }
}
