//! Bad input on the media ports of the real binary: garbage UDP datagrams, garbage and
//! truncated ICE-TCP frames, and a flood of unauthenticated TCP connections (capped per source
//! address and in total). Each is dropped and counted in `rtcd_net_dropped_total` (and the
//! caps in `rtcd_limit_refusals_total`), costs bounded resources, and the daemon stays up.
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

/// Opens `n` ICE-TCP connections from `source` and returns how many were closed at once.
async fn flood(port: u16, source: &str, n: usize, held: &mut Vec<tokio::net::TcpStream>) -> usize {
    let mut mine = Vec::new();
    for _ in 0..n {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(format!("{source}:0").parse().unwrap()).unwrap();
        mine.push(
            sock.connect(format!("127.0.0.1:{port}").parse().unwrap())
                .await
                .unwrap(),
        );
    }
    let mut closed_at_once = 0;
    for mut s in mine {
        let mut b = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(50), s.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => closed_at_once += 1,
            _ => held.push(s),
        }
    }
    closed_at_once
}

async fn refusals(d: &Daemon, limit: &str) -> u64 {
    let body = common::get(d.api, "/metrics").await.body;
    let prefix = format!(r#"rtcd_limit_refusals_total{{limit="{limit}"}} "#);
    body.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn a_flood_of_unauthenticated_tcp_connections_is_bounded_per_address_and_in_total() {
    let d = Daemon::start(
        "",
        &[
            ("RTCD_LIMITS_ICETCPMAXUNAUTHENTICATEDPERIP", "8"),
            ("RTCD_LIMITS_ICETCPMAXUNAUTHENTICATED", "20"),
        ],
    )
    .await;
    let port = ice_port(&d).await;
    let mut held = Vec::new();
    // One address floods: it gets its 8, the rest are closed at once.
    assert_eq!(flood(port, "127.0.0.1", 12, &mut held).await, 4);
    assert_eq!(refusals(&d, "ice_tcp_max_unauthenticated_per_ip").await, 4);
    // Another address still gets in while the first one holds its share.
    assert_eq!(flood(port, "127.0.0.2", 8, &mut held).await, 0);
    // The total cap: 16 held, so a third address gets only 4 more.
    assert_eq!(flood(port, "127.0.0.3", 8, &mut held).await, 4);
    assert_eq!(refusals(&d, "ice_tcp_max_unauthenticated").await, 4);
    assert!(dropped(&d, "tcp", "too_many_unauthenticated").await >= 8);
    // Closing connections frees their places.
    held.clear();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut again = Vec::new();
        let refused = flood(port, "127.0.0.3", 8, &mut again).await;
        if refused == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "places not freed: {refused} refused");
        drop(again);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(common::get(d.api, "/api/v1/health").await.status, 200);
}
