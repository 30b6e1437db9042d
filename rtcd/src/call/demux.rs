//! Finding the session a datagram belongs to without asking every peer: the STUN USERNAME's
//! local ufrag names it before ICE has validated the remote address.

/// The local ufrag (before `:`) of a STUN Binding request's USERNAME, if `buf` is one.
pub(crate) fn stun_local_ufrag(buf: &[u8]) -> Option<&str> {
    // RFC 5389: 20-byte header, first two bits zero, magic cookie 0x2112A442.
    if buf.len() < 20 || buf[0] & 0xc0 != 0 || buf[4..8] != [0x21, 0x12, 0xa4, 0x42] {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    let attrs = buf.get(20..20 + len)?;
    let mut rest = attrs;
    while rest.len() >= 4 {
        let kind = u16::from_be_bytes([rest[0], rest[1]]);
        let alen = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        let value = rest.get(4..4 + alen)?;
        if kind == 0x0006 {
            let username = std::str::from_utf8(value).ok()?;
            return username.split(':').next();
        }
        let padded = (alen + 3) & !3;
        rest = rest.get(4 + padded..)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(username: &[u8]) -> Vec<u8> {
        let mut attrs = vec![0x00, 0x06];
        attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attrs.extend_from_slice(username);
        while attrs.len() % 4 != 0 {
            attrs.push(0);
        }
        let mut m = vec![0x00, 0x01];
        m.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        m.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
        m.extend_from_slice(&[7; 12]);
        m.extend_from_slice(&attrs);
        m
    }

    #[test]
    fn finds_the_local_ufrag() {
        assert_eq!(stun_local_ufrag(&binding(b"srvufrag:cliufrag")), Some("srvufrag"));
    }

    #[test]
    fn ignores_non_stun_and_truncated_input() {
        assert_eq!(stun_local_ufrag(&[0x80; 40]), None);
        let mut m = binding(b"a:b");
        m.truncate(26);
        assert_eq!(stun_local_ufrag(&m), None);
        assert_eq!(stun_local_ufrag(&[]), None);
    }
}
