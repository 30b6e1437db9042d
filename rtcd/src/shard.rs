//! Which engine shard owns a datagram, told without shared state: every session's local ICE
//! ufrag starts with its shard's number, and a STUN request's USERNAME carries that ufrag
//! before ICE has validated the sender's address. Also the default shard count.

/// At most this many shards (two characters of the ufrag alphabet encode up to 62²).
pub const MAX_SHARDS: usize = 256;

/// The characters str0m draws ufrags from; the shard number is written in the same ones, so a
/// tagged ufrag looks like any other on the wire.
const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// The number of cores this process may use: its CPU affinity and its cgroup CPU quota
/// (`std::thread::available_parallelism` reads both), at least 1, at most [`MAX_SHARDS`].
pub fn usable_cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, MAX_SHARDS)
}

/// Writes `shard` into the first two characters of `ufrag` (at least 4 characters, ICE's own
/// minimum; str0m's are 16).
pub fn tag_ufrag(ufrag: &str, shard: usize) -> String {
    let shard = shard.min(MAX_SHARDS - 1);
    let mut out = String::with_capacity(ufrag.len().max(4));
    out.push(char::from(ALPHABET[shard / ALPHABET.len()]));
    out.push(char::from(ALPHABET[shard % ALPHABET.len()]));
    out.extend(ufrag.chars().skip(2));
    while out.len() < 4 {
        out.push('x');
    }
    out
}

/// The shard a ufrag written by [`tag_ufrag`] names (any other string may name one too: the
/// caller checks the range and the session itself checks the credentials).
pub fn shard_of_ufrag(ufrag: &str) -> Option<usize> {
    let pos = |c: u8| ALPHABET.iter().position(|a| *a == c);
    match ufrag.as_bytes() {
        [hi, lo, ..] => Some(pos(*hi)? * ALPHABET.len() + pos(*lo)?),
        _ => None,
    }
}

/// The shard (below `shards`) that a STUN Binding request in `buf` names by its local ufrag.
pub fn stun_shard(buf: &[u8], shards: usize) -> Option<usize> {
    stun_local_ufrag(buf)
        .and_then(shard_of_ufrag)
        .filter(|s| *s < shards)
}

/// The local ufrag (before `:`) of a STUN Binding request's USERNAME, if `buf` is one.
pub fn stun_local_ufrag(buf: &[u8]) -> Option<&str> {
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
    fn a_tagged_ufrag_names_its_shard() {
        for shard in [0, 1, 7, 61, 62, 200, MAX_SHARDS - 1] {
            let u = tag_ufrag("abcdefghijklmnop", shard);
            assert_eq!(u.len(), 16);
            assert!(u.bytes().all(|c| c.is_ascii_alphanumeric()), "{u}");
            assert_eq!(shard_of_ufrag(&u), Some(shard), "{u}");
            assert!(u.ends_with("cdefghijklmnop"));
        }
        assert_eq!(
            shard_of_ufrag(&tag_ufrag("ab", 3)),
            Some(3),
            "short ufrags are padded"
        );
        assert_eq!(tag_ufrag("ab", 3).len(), 4);
        assert_eq!(shard_of_ufrag("a"), None);
        assert_eq!(shard_of_ufrag("+/xyz"), None, "not from the alphabet");
        assert!(usable_cores() >= 1);
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
