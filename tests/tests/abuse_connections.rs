//! Connections that send nothing, or a byte now and then, or never read their answers, are
//! closed within the configured timeouts; past the connection cap new connections wait
//! while the ones already open are served; the operations listener is not behind the
//! public one's cap. Raw TCP clients on loopback, a few dozen connections.

use std::time::{Duration, Instant};

use sightline_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the server closes the connection (or resets it); what arrived, and when the
/// close came. Panics when the connection is still open after `limit`.
async fn until_closed(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, Instant) {
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => panic!("still open after {limit:?}; got {:?}", String::from_utf8_lossy(&got)),
            Ok(Ok(0)) | Ok(Err(_)) => return (got, Instant::now()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads one HTTP response with a Content-Length body; `None` if none arrives in `limit`.
async fn response(stream: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = Instant::now() + limit;
    loop {
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_string())
                })
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if body.len() >= length {
                return Some(text);
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return (!got.is_empty()).then_some(text),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

const GET: &[u8] = b"GET /v1/openapi.json HTTP/1.1\r\nHost: t\r\n\r\n";

#[tokio::test(flavor = "multi_thread")]
async fn half_sent_headers_trickled_bodies_and_unread_answers_are_cut() {
    let (_dir, data, tenants) = fixture();
    let server = Server::start(
        &data,
        &tenants,
        &[
            "--header-timeout-secs",
            "1",
            "--body-timeout-secs",
            "2",
            "--idle-timeout-secs",
            "3",
            "--max-connections",
            "16",
        ],
    );

    // 40 half-sent request heads, unauthenticated: 16 served at a time, each closed a
    // second after it was accepted, so all are gone within a few seconds (they stayed open
    // past 70 s before).
    let started = Instant::now();
    let mut halves = Vec::new();
    for _ in 0..40 {
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        s.write_all(b"POST /v1/collect HTTP/1.1\r\nHost: t\r\nContent-Le")
            .await
            .unwrap();
        halves.push(s);
    }
    let mut last = started;
    for s in &mut halves {
        // In order: a close seen late (behind an earlier one) only makes `last` later.
        last = last.max(until_closed(s, Duration::from_secs(20)).await.1);
    }
    assert!(
        last - started < Duration::from_secs(12),
        "the last half-sent head was cut after {:?}",
        last - started
    );

    // Bodies trickled a byte at a time (with a valid token): cut at the body deadline with
    // a 400 naming the body, long before the trickle would end (1000 bytes, 5 a second).
    let token = write_token("acme", "blog.example.com");
    let mut trickles = Vec::new();
    for _ in 0..10 {
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        let head = format!(
            "POST /v1/collect HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{"
        );
        s.write_all(head.as_bytes()).await.unwrap();
        trickles.push(s);
    }
    let started = Instant::now();
    let trickling = tokio::spawn(async move {
        let mut outcomes = Vec::new();
        let mut open: Vec<(TcpStream, Vec<u8>)> = trickles.into_iter().map(|s| (s, Vec::new())).collect();
        for _ in 0..1000 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let mut still = Vec::new();
            for (mut s, mut got) in open {
                let mut buf = [0u8; 4096];
                // Whatever the server said so far.
                while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(1), s.read(&mut buf)).await {
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                if s.write_all(b" ").await.is_err() || !got.is_empty() && got.ends_with(b"}") {
                    outcomes.push((got, Instant::now()));
                } else {
                    still.push((s, got));
                }
            }
            open = still;
            if open.is_empty() {
                break;
            }
        }
        outcomes
    });
    let outcomes = trickling.await.unwrap();
    assert_eq!(outcomes.len(), 10, "every trickling request was cut");
    for (got, at) in &outcomes {
        assert!(*at - started < Duration::from_secs(8), "cut after {:?}", *at - started);
        let text = String::from_utf8_lossy(got);
        assert!(text.starts_with("HTTP/1.1 400"), "{text}");
        assert!(
            text.contains("\"field\":\"body\"") && text.contains("did not arrive within"),
            "{text}"
        );
    }

    // A client that asks and never reads: once the socket buffers are full nothing moves,
    // and the idle timeout closes the connection (every answer would be 40 MB).
    let mut reader = TcpStream::connect(server.addr).await.unwrap();
    let pipelined = GET.repeat(1_500);
    let (mut rd, mut wr) = reader.split();
    let _ = tokio::time::timeout(Duration::from_secs(10), wr.write_all(&pipelined)).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let mut total = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(5), rd.read(&mut buf)).await {
            Err(_) => break false,
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => total += n,
        }
    };
    eprintln!("unread answers: {total} bytes before the close");
    assert!(closed, "a connection that stopped reading is closed");
    let one = 28_000;
    assert!(total < 1_500 * one, "the server stopped writing: {total} bytes");
}

#[tokio::test(flavor = "multi_thread")]
async fn past_the_cap_new_connections_wait_and_open_ones_are_served() {
    let (_dir, data, tenants) = fixture();
    let server = Server::start(
        &data,
        &tenants,
        &["--header-timeout-secs", "3", "--max-connections", "4"],
    );
    // One keep-alive connection that is served.
    let mut kept = TcpStream::connect(server.addr).await.unwrap();
    kept.write_all(GET).await.unwrap();
    let first = response(&mut kept, Duration::from_secs(5)).await.expect("served");
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    // Three more hold the other slots with half-sent heads.
    let mut holders = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        s.write_all(b"GET /v1/openapi.json HTTP/1.1\r\nHo").await.unwrap();
        holders.push(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A fifth connection waits (in the backlog: not accepted, not refused) ...
    let waiting_since = Instant::now();
    let mut fifth = TcpStream::connect(server.addr).await.unwrap();
    fifth.write_all(GET).await.unwrap();
    assert!(
        response(&mut fifth, Duration::from_millis(1_000)).await.is_none(),
        "past the cap a new connection is not served"
    );
    // ... while the open one is served, and the operations listener answers.
    kept.write_all(GET).await.unwrap();
    let second = response(&mut kept, Duration::from_secs(2))
        .await
        .expect("an open connection is served at the cap");
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
    let r = client().get(server.ops_url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // The holders time out (3 s), and the fifth is served then.
    let fifth_answer = response(&mut fifth, Duration::from_secs(10))
        .await
        .expect("served once a slot frees");
    assert!(fifth_answer.starts_with("HTTP/1.1 200"), "{fifth_answer}");
    assert!(
        waiting_since.elapsed() >= Duration::from_secs(2),
        "it waited for a slot"
    );
}
