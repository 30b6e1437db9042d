//! Public address discovery with a STUN Binding request from the media socket (RFC 5389), as
//! rtcd does when `ice_servers` has a STUN server and no `ice_host_override` is set.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use tokio::net::UdpSocket;

const MAGIC: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
/// rtcd waits this long for an answer.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// `stun:host:port` / `stuns:host:port` → (host, port). rtcd requires the port.
pub fn parse_url(url: &str) -> Option<(String, u16)> {
    let rest = url.strip_prefix("stun:").or_else(|| url.strip_prefix("stuns:"))?;
    let rest = rest.split('?').next()?;
    let (host, port) = rest.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host.to_string(), port.parse().ok()?))
}

/// The first URL of the first entry whose URLs are all STUN, as rtcd picks it.
pub fn first_stun_url(servers: &[crate::config::IceServer]) -> Option<&str> {
    servers
        .iter()
        .find(|s| {
            !s.urls.is_empty()
                && s.urls
                    .iter()
                    .all(|u| u.starts_with("stun:") || u.starts_with("stuns:"))
        })
        .and_then(|s| s.urls.first())
        .map(String::as_str)
}

/// A Binding request with transaction ID `id`.
pub fn binding_request(id: [u8; 12]) -> Vec<u8> {
    let mut m = vec![0x00, 0x01, 0x00, 0x00];
    m.extend_from_slice(&MAGIC);
    m.extend_from_slice(&id);
    m
}

/// The mapped address of a Binding success response to `id`.
pub fn parse_response(buf: &[u8], id: [u8; 12]) -> Option<SocketAddr> {
    if buf.len() < 20 || buf[0..2] != [0x01, 0x01] || buf[4..8] != MAGIC || buf[8..20] != id {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    let mut rest = buf.get(20..20 + len)?;
    let mut mapped = None;
    while rest.len() >= 4 {
        let kind = u16::from_be_bytes([rest[0], rest[1]]);
        let alen = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        let v = rest.get(4..4 + alen)?;
        match kind {
            0x0020 => return decode_addr(v, Some(id)),
            0x0001 => mapped = decode_addr(v, None),
            _ => {}
        }
        rest = rest.get(4 + ((alen + 3) & !3)..)?;
    }
    mapped
}

fn decode_addr(v: &[u8], xor_id: Option<[u8; 12]>) -> Option<SocketAddr> {
    if v.len() < 8 {
        return None;
    }
    let xor = xor_id.is_some();
    let port = u16::from_be_bytes([v[2], v[3]]) ^ if xor { 0x2112 } else { 0 };
    let ip = match v[1] {
        0x01 => {
            let mut b: [u8; 4] = v.get(4..8)?.try_into().ok()?;
            if xor {
                for (x, m) in b.iter_mut().zip(MAGIC) {
                    *x ^= m;
                }
            }
            IpAddr::V4(Ipv4Addr::from(b))
        }
        0x02 => {
            let mut b: [u8; 16] = v.get(4..20)?.try_into().ok()?;
            if let Some(id) = xor_id {
                let key: Vec<u8> = MAGIC.iter().chain(id.iter()).copied().collect();
                for (x, k) in b.iter_mut().zip(key) {
                    *x ^= k;
                }
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Asks `server` for this socket's public address: three tries within [`TIMEOUT`].
pub async fn discover(sock: &UdpSocket, server: SocketAddr) -> Option<IpAddr> {
    let mut id = [0u8; 12];
    getrandom::fill(&mut id).ok()?;
    let req = binding_request(id);
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let mut buf = [0u8; 1024];
    for _ in 0..3 {
        sock.send_to(&req, server).await.ok()?;
        let attempt = (tokio::time::Instant::now() + Duration::from_millis(1700)).min(deadline);
        while let Ok(Ok((n, from))) = tokio::time::timeout_at(attempt, sock.recv_from(&mut buf)).await {
            if from == server
                && let Some(addr) = parse_response(&buf[..n], id)
            {
                return Some(addr.ip());
            }
        }
        if tokio::time::Instant::now() >= deadline {
            break;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(id: [u8; 12], addr: SocketAddr) -> Vec<u8> {
        let SocketAddr::V4(a) = addr else { panic!() };
        let mut attr = vec![0x00, 0x20, 0x00, 0x08, 0x00, 0x01];
        attr.extend_from_slice(&(a.port() ^ 0x2112).to_be_bytes());
        for (o, m) in a.ip().octets().iter().zip(MAGIC) {
            attr.push(o ^ m);
        }
        let mut m = vec![0x01, 0x01, 0x00, attr.len() as u8];
        m.extend_from_slice(&MAGIC);
        m.extend_from_slice(&id);
        m.extend_from_slice(&attr);
        m
    }

    #[test]
    fn xor_mapped_address_round_trip() {
        let id = [9; 12];
        let addr: SocketAddr = "198.51.100.7:30443".parse().unwrap();
        assert_eq!(parse_response(&response(id, addr), id), Some(addr));
        assert_eq!(
            parse_response(&response(id, addr), [8; 12]),
            None,
            "other transaction"
        );
        assert_eq!(parse_response(&[1, 1, 0], id), None);
    }

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("stun:stun.example.com:3478"),
            Some(("stun.example.com".into(), 3478))
        );
        assert_eq!(
            parse_url("stuns:[2001:db8::1]:5349"),
            Some(("2001:db8::1".into(), 5349))
        );
        assert_eq!(parse_url("stun:noport"), None);
        assert_eq!(parse_url("turn:t:3478"), None);
    }

    #[tokio::test]
    async fn discovers_through_a_binding_exchange_on_loopback() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let server_addr = server.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            let (n, from) = server.recv_from(&mut buf).await.unwrap();
            let id: [u8; 12] = buf[8..20].try_into().unwrap();
            assert_eq!(&buf[..4], &[0, 1, 0, 0][..n.min(4)]);
            // Report a public address, as a STUN server behind NAT would see it.
            let reply = response(id, SocketAddr::new("203.0.113.9".parse().unwrap(), from.port()));
            server.send_to(&reply, from).await.unwrap();
        });
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        assert_eq!(
            discover(&client, server_addr).await,
            Some("203.0.113.9".parse().unwrap())
        );
    }
}
