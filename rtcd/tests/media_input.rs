//! Bad input on the media ports of the real binary: garbage UDP datagrams, garbage and
//! truncated ICE-TCP frames, and a flood of unauthenticated TCP connections. Each is dropped
//! and counted in `rtcd_net_dropped_total`, costs bounded resources, and the daemon stays up.
#![allow(clippy::unwrap_used)] // test crate: a failed unwrap is a failed test

mod common;

use std::time::{Duration, Instant};

use common::Daemon;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn ice_port(d: &Daemon) -> u16 {
    // The daemon logs its media listeners; read the port from the config we gave it.
    let text = std::fs::read_to_string(d.dir.path().join("config.toml")).unwrap();
    let doc: toml::Table = toml::from_str(&text).unwrap();
    doc["rtc"]["ice_port_udp"].as_integer().unwrap() as u16
}

async fn dropped(d: &Daemon, transport: &str, reason: &str) -> u64 {
    let body = common::get(d.api, "/metrics").await.body;
    let prefix = format!(r#"rtcd_net_dropped_total{{transport="{transport}",reason="{reason}"}} "#);
    body.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn garbage_udp_is_dropped_and_counted() {
    let d = Daemon::start("", &[]).await;
    let port = ice_port(&d).await;
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let target = ("127.0.0.1", port);
    let mut stun_unknown_ufrag = vec![0x00, 0x01, 0x00, 0x0c, 0x21, 0x12, 0xa4, 0x42];
    stun_unknown_ufrag.extend_from_slice(&[1; 12]);
    stun_unknown_ufrag.extend_from_slice(&[0x00, 0x06, 0x00, 0x07]);
    stun_unknown_ufrag.extend_from_slice(b"nobody:x\0");
    let rtp_like = [
        &[0x80u8, 111, 0, 1, 0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef][..],
        &[0u8; 100],
    ]
    .concat();
    let packets: Vec<Vec<u8>> = vec![
        vec![],
        vec![0xff; 1],
        vec![0x16; 300],
        stun_unknown_ufrag,
        rtp_like,
        vec![0; 1500],
    ];
    for _ in 0..50 {
        for p in &packets {
            sock.send_to(p, target).await.unwrap();
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut counted = 0;
    while Instant::now() < deadline {
        counted = dropped(&d, "udp", "no_session").await;
        if counted >= 250 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(counted >= 250, "only {counted} drops counted");
    assert_eq!(common::get(d.api, "/api/v1/health").await.status, 200);
}

#[tokio::test]
async fn garbage_and_truncated_tcp_frames_cost_a_connection_not_the_server() {
    let d = Daemon::start("", &[]).await;
    let port = ice_port(&d).await;

    // A truncated frame: a length of 1000, ten bytes, then the client goes away.
    let mut t = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    t.write_all(&[0x03, 0xe8]).await.unwrap();
    t.write_all(&[7; 10]).await.unwrap();
    drop(t);

    // Well-framed garbage, then silence: closed once 10 s pass without ICE.
    let mut g = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    for n in [1usize, 20, 300, 1500] {
        g.write_all(&(n as u16).to_be_bytes()).await.unwrap();
        g.write_all(&vec![0xab; n]).await.unwrap();
    }
    let start = Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(20), g.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "the server wrote to an unauthenticated connection");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(9) && took <= Duration::from_secs(13),
        "closed after {took:?}"
    );

    assert!(dropped(&d, "tcp", "truncated_frame").await >= 1);
    assert!(dropped(&d, "tcp", "unauthenticated_timeout").await >= 1);
    assert!(
        dropped(&d, "tcp", "no_session").await >= 4,
        "garbage frames counted"
    );
    assert_eq!(common::get(d.api, "/api/v1/health").await.status, 200);
}

#[tokio::test]
async fn a_flood_of_unauthenticated_tcp_connections_is_bounded() {
    let d = Daemon::start("", &[]).await;
    let port = ice_port(&d).await;
    let limit = rtcd::net::tcp::MAX_UNAUTHENTICATED;
    let mut held = Vec::new();
    for _ in 0..limit + 40 {
        held.push(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    // Connections past the limit are closed at once; the first `limit` stay open for now.
    let mut closed_at_once = 0;
    for s in held.iter_mut() {
        let mut b = [0u8; 1];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(20), s.read(&mut b)).await {
            closed_at_once += 1;
        }
    }
    assert!(
        closed_at_once >= 40,
        "only {closed_at_once} of the excess connections were refused"
    );
    assert!(
        closed_at_once <= 45,
        "{closed_at_once} refused: the limit is {limit}"
    );
    assert!(dropped(&d, "tcp", "too_many_unauthenticated").await >= 40);
    assert_eq!(common::get(d.api, "/api/v1/health").await.status, 200);
}
