//! What the hardening tests need beyond a normal client: the edge's metrics
//! by name, and raw TCP connections that misbehave (partial heads, silence).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// The value of metric `name` (a line `name value`, no labels) on the admin
/// listener.
pub async fn metric(admin: SocketAddr, name: &str) -> Option<f64> {
    let text = super::get(admin, "/metrics", &[]).await.text();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// A connection that sent `prefix` and nothing more.
pub async fn partial(addr: SocketAddr, prefix: &[u8]) -> TcpStream {
    let mut c = TcpStream::connect(addr).await.expect("connect");
    c.write_all(prefix).await.expect("write");
    c
}

/// Whether the server has closed `conn` (a read sees the end, or a reset),
/// waiting at most `limit`.
pub async fn closed_within(conn: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, conn.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // A 408 or similar before closing is fine; keep reading.
            Ok(Ok(_)) => {}
        }
    }
}
