package compat

import (
	"encoding/binary"
	"fmt"
	"net"
	"sync"
	"testing"

	"github.com/pion/transport/v4"
	"github.com/pion/transport/v4/stdnet"
)

// srtpProfileNames are the RFC 5764 / RFC 7714 SRTP protection profile IDs.
var srtpProfileNames = map[uint16]string{
	0x0001: "SRTP_AES128_CM_HMAC_SHA1_80",
	0x0002: "SRTP_AES128_CM_HMAC_SHA1_32",
	0x0007: "SRTP_AEAD_AES_128_GCM",
	0x0008: "SRTP_AEAD_AES_256_GCM",
}

// sniffNet is the standard network with every UDP datagram a peer sends or
// receives passed through a DTLS 1.2 ServerHello reader: the use_srtp
// extension of the ServerHello is the SRTP protection profile the DTLS server
// chose (pion does not expose the one it negotiated).
type sniffNet struct {
	transport.Net
	mu   sync.Mutex
	seen []string
}

type sniffConn struct {
	transport.UDPConn
	n *sniffNet
}

func newSniffNet() (*sniffNet, error) {
	n, err := stdnet.NewNet()
	if err != nil {
		return nil, err
	}
	return &sniffNet{Net: n}, nil
}

func (n *sniffNet) ListenUDP(network string, laddr *net.UDPAddr) (transport.UDPConn, error) {
	c, err := n.Net.ListenUDP(network, laddr)
	if err != nil {
		return nil, err
	}
	return &sniffConn{UDPConn: c, n: n}, nil
}

func (c *sniffConn) ReadFrom(b []byte) (int, net.Addr, error) {
	k, a, err := c.UDPConn.ReadFrom(b)
	if k > 0 {
		c.n.inspect("received by pion (pion is the DTLS client)", b[:k])
	}
	return k, a, err
}

func (c *sniffConn) WriteTo(b []byte, a net.Addr) (int, error) {
	c.n.inspect("sent by pion (pion is the DTLS server)", b)
	return c.UDPConn.WriteTo(b, a)
}

func (n *sniffNet) inspect(dir string, b []byte) {
	if p, ok := serverHelloSRTP(b); ok {
		n.mu.Lock()
		n.seen = append(n.seen, fmt.Sprintf("ServerHello %s: use_srtp %s", dir, p))
		n.mu.Unlock()
	}
}

func (n *sniffNet) profiles() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.seen...)
}

// serverHelloSRTP returns the profile named by the use_srtp extension of a
// DTLS ServerHello in the datagram, if it holds one (unfragmented, epoch 0).
func serverHelloSRTP(b []byte) (string, bool) {
	for len(b) >= 13 {
		typ, epoch, length := b[0], binary.BigEndian.Uint16(b[3:5]), int(binary.BigEndian.Uint16(b[11:13]))
		if len(b) < 13+length {
			return "", false
		}
		frag := b[13 : 13+length]
		b = b[13+length:]
		// handshake record, epoch 0, ServerHello (2), first fragment, whole message
		if typ != 22 || epoch != 0 || len(frag) < 12 || frag[0] != 2 {
			continue
		}
		msgLen := int(frag[1])<<16 | int(frag[2])<<8 | int(frag[3])
		fragOff := int(frag[6])<<16 | int(frag[7])<<8 | int(frag[8])
		if fragOff != 0 || len(frag) < 12+msgLen {
			continue
		}
		body := frag[12 : 12+msgLen]
		// version(2) random(32) session_id
		if len(body) < 35 {
			continue
		}
		i := 34
		i += 1 + int(body[i])
		i += 2 + 1 // cipher suite, compression
		if len(body) < i+2 {
			continue
		}
		extEnd := i + 2 + int(binary.BigEndian.Uint16(body[i:]))
		i += 2
		for i+4 <= extEnd && extEnd <= len(body) {
			et, el := binary.BigEndian.Uint16(body[i:]), int(binary.BigEndian.Uint16(body[i+2:]))
			data := body[i+4 : min(i+4+el, len(body))]
			i += 4 + el
			if et != 14 || len(data) < 4 {
				continue
			}
			id := binary.BigEndian.Uint16(data[2:4])
			if name, ok := srtpProfileNames[id]; ok {
				return name, true
			}
			return fmt.Sprintf("unknown 0x%04x", id), true
		}
	}
	return "", false
}

// TestSRTPProfile joins one pion peer (the Calls plugin's Go stack, default
// profile list AEAD_AES_256_GCM, AEAD_AES_128_GCM, AES128_CM_HMAC_SHA1_80)
// and reads off the wire which SRTP protection profile the DTLS handshake
// chose. The server answers either DTLS role: rtcd is the DTLS client, so
// pion sends the ServerHello; rtcd-rs is the DTLS server and sends it.
func TestSRTPProfile(t *testing.T) {
	env := getEnv(t)
	env.requireAdmin(t)
	h := newHarness(t, env)
	step(t, "connect_hello", h, func(t *testing.T) { h.waitHello(t) })
	sn, err := newSniffNet()
	if err != nil {
		t.Fatalf("net: %v", err)
	}
	step(t, "join", h, func(t *testing.T) {
		p, err := newPeerWith(h, "S", 'S', false, peerOptions{net: sn})
		if err != nil {
			t.Fatalf("newPeer: %v", err)
		}
		joinAndWait(t, h, p, newID(), newID())
	})
	step(t, "profile", h, func(t *testing.T) {
		seen := sn.profiles()
		if len(seen) != 1 {
			t.Fatalf("want exactly one ServerHello with use_srtp on the wire, saw %d: %v", len(seen), seen)
		}
		t.Logf("SRTP %s", seen[0])
	})
}
