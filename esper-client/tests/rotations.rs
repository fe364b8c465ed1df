//! Connection rotations never fail a call that Esper never processed.

mod fake;

use std::collections::HashSet;
use std::time::Duration;

use esper_client::Http2;
use esper_protocol::Failure;
use fake::{burst, call, origin, H2Server};

/// A server closing every HTTP/2 connection gracefully after 40 calls,
/// with 8 streams per connection (nginx's `keepalive_requests 40` and
/// `http2_max_concurrent_streams 8`), under a burst of 300 calls: every
/// call is answered, each exactly once.
#[tokio::test]
async fn goaway_mid_burst_fails_no_call() {
    let (address, seen) = H2Server {
        max_streams: 8,
        requests_per_connection: 40,
        delay: Duration::from_millis(20),
        big_head: vec![],
    }
    .start()
    .await;
    let origin = origin(&format!("http://{address}"), Http2::On);
    let results = burst(&origin, 300).await;
    let failed: Vec<_> = results.iter().filter(|r| !matches!(r, Ok((200, _)))).collect();
    assert!(failed.is_empty(), "{} calls failed: {:?}", failed.len(), failed.first());
    let answered = seen.answered();
    assert_eq!(answered.len(), 300, "each call answered once");
    assert_eq!(answered.iter().collect::<HashSet<_>>().len(), 300, "no call answered twice");
    assert!(seen.connections() >= 8, "the server rotated connections: {}", seen.connections());
}

/// The same rotation with the calls one after another: the call that
/// meets a connection just closed is sent on a new one.
#[tokio::test]
async fn goaway_between_calls_fails_no_call() {
    let (address, seen) = H2Server {
        max_streams: 8,
        requests_per_connection: 3,
        delay: Duration::ZERO,
        big_head: vec![],
    }
    .start()
    .await;
    let origin = origin(&format!("http://{address}"), Http2::On);
    for n in 0..30 {
        assert!(matches!(call(&origin, n).await, Ok((200, _))), "call {n}");
    }
    assert_eq!(seen.answered().len(), 30);
    assert!(seen.connections() >= 10, "rotated: {}", seen.connections());
}

/// An HTTP/2 answer head of 70 KB fails its own call and no other: the
/// connection and the calls on it go on.
#[tokio::test]
async fn oversized_head_fails_only_its_call() {
    let (address, seen) = H2Server {
        max_streams: 100,
        requests_per_connection: usize::MAX,
        delay: Duration::from_millis(50),
        big_head: vec![3],
    }
    .start()
    .await;
    let origin = origin(&format!("http://{address}"), Http2::On);
    let results = burst(&origin, 20).await;
    for (n, result) in results.iter().enumerate() {
        if n == 3 {
            assert_eq!(result.as_ref().err(), Some(&Failure::TooLarge), "call {n}");
        } else {
            assert!(matches!(result, Ok((200, _))), "call {n}: {result:?}");
        }
    }
    assert_eq!(seen.answered().len(), 20, "the oversized call was sent once");
    assert!(matches!(call(&origin, 99).await, Ok((200, _))));
    assert_eq!(seen.connections(), 1, "one connection throughout");
}

/// A kept-alive HTTP/1.1 connection closed by the server as the next call
/// is written to it: that call goes on a new connection. On a connection
/// just opened, the same close is the call's failure: nothing shows it
/// unprocessed.
#[tokio::test]
async fn http1_keepalive_close_race_is_resent() {
    let (address, seen) = fake::h1_closing_after_one().await;
    let origin = origin(&format!("http://{address}"), Http2::Off);
    for n in 0..5 {
        assert!(matches!(call(&origin, n).await, Ok((200, _))), "call {n}");
    }
    assert_eq!(seen.answered().len(), 5);
    // Each call after the first met the closing connection, then a new one.
    assert_eq!(seen.connections(), 5);
}

/// A peer that accepts and then never answers: the call gives up at its
/// deadline, and its connection is closed with it (over HTTP/1.1 a
/// connection serves one call; nothing else could use it).
#[tokio::test]
async fn connection_to_a_mute_peer_ends_with_its_call() {
    let (address, accepted, closed) = fake::mute_peer().await;
    let origin = origin(&format!("http://{address}"), Http2::Off);
    let deadline = Duration::from_millis(200);
    assert!(tokio::time::timeout(deadline, call(&origin, 1)).await.is_err(), "no answer");
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    let mut waited = Duration::ZERO;
    while closed.load(std::sync::atomic::Ordering::SeqCst) == 0 && waited < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += Duration::from_millis(20);
    }
    assert_eq!(closed.load(std::sync::atomic::Ordering::SeqCst), 1, "closed after {waited:?}");
}
