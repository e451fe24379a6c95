package transport

import (
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/parliament-lab/parliament/protocol"
	"github.com/parliament-lab/parliament/wire"
)

// Every refusal case: the refused peer gets no message through, the acceptor logs one
// line naming the reason and the remote address, and a good peer on the same listener
// keeps working before and after.

const refusalSecret = "shared-secret"

type refusalCase struct {
	name string
	// attack talks to the acceptor at addr on a raw connection, then tries to get a
	// message from replica 3 through. It returns the connection (the test waits for the
	// acceptor to close it).
	attack func(t *testing.T, addr string) net.Conn
	logs   string // what the acceptor's refusal line must say
}

func rawDial(t *testing.T, addr string) net.Conn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(waitTimeout))
	return nc
}

// smuggle writes a valid message frame from replica 3 (ignoring errors: the acceptor may
// have closed already).
func smuggle(nc net.Conn) {
	nc.Write(wire.AppendMessageFrame(nil, &protocol.Message{Type: protocol.MsgAccept, From: 3, To: 2, Seq: 666}))
}

func wantErr(t *testing.T, err, target error, text string) {
	t.Helper()
	if !errors.Is(err, target) || !strings.Contains(err.Error(), text) {
		t.Fatalf("dialer error = %v; want %v containing %q", err, target, text)
	}
}

func refusalCases() []refusalCase {
	good := func(self protocol.ReplicaID, cluster uint64, secret string) *dialParams {
		p := &dialParams{self: self, cluster: cluster}
		if secret != "" {
			p.secret = []byte(secret)
		}
		return p
	}
	return []refusalCase{
		{
			name: "wrong-cluster",
			attack: func(t *testing.T, addr string) net.Conn {
				nc := rawDial(t, addr)
				_, err := dialHandshake(nc, good(3, 9, refusalSecret))
				wantErr(t, err, ErrWrongCluster, "cluster ID mismatch: replica has 7, we have 9")
				smuggle(nc)
				return nc
			},
			logs: "cluster ID mismatch: peer has 9, we have 7",
		},
		{
			name: "unknown-replica",
			attack: func(t *testing.T, addr string) net.Conn {
				nc := rawDial(t, addr)
				_, err := dialHandshake(nc, good(9, 7, refusalSecret))
				wantErr(t, err, ErrUnknownReplica, "does not know replica ID 9")
				smuggle(nc)
				return nc
			},
			logs: "unknown replica ID: 9 is not a replica of this cluster",
		},
		{
			name: "own-replica-id",
			attack: func(t *testing.T, addr string) net.Conn {
				nc := rawDial(t, addr)
				_, err := dialHandshake(nc, good(2, 7, refusalSecret))
				wantErr(t, err, ErrUnknownReplica, "is itself replica ID 2")
				smuggle(nc)
				return nc
			},
			logs: "peer claims our own ID 2",
		},
		{
			name: "bad-proof",
			attack: func(t *testing.T, addr string) net.Conn {
				nc := rawDial(t, addr)
				h := hello{version: WireVersion, flags: flagAuth, cluster: 7, replica: 3}
				nc.Write(h.marshal())
				var w [welcomeLen]byte
				if _, err := io.ReadFull(nc, w[:]); err != nil {
					t.Fatalf("reading welcome: %v", err)
				}
				var forged [proofLen]byte // a peer that does not know the secret
				nc.Write(forged[:])
				var verdict [1]byte
				if _, err := io.ReadFull(nc, verdict[:]); err != nil || verdict[0] != statusBadProof {
					t.Fatalf("verdict = %v, %v; want statusBadProof", verdict[0], err)
				}
				smuggle(nc)
				return nc
			},
			logs: "bad HMAC proof from replica 3",
		},
		{
			name: "wrong-secret",
			attack: func(t *testing.T, addr string) net.Conn {
				nc := rawDial(t, addr)
				_, err := dialHandshake(nc, good(3, 7, "another secret"))
				// The dialer notices first: the acceptor's proof does not verify.
				wantErr(t, err, ErrBadProof, "could not prove the shared secret")
				smuggle(nc)
				return nc
			},
			logs: "reading proof",
		},
		{
			name: "no-secret",
			attack: func(t *testing.T, addr string) net.Conn {
				nc := rawDial(t, addr)
				_, err := dialHandshake(nc, good(3, 7, ""))
				wantErr(t, err, ErrAuth, "requires a shared secret")
				smuggle(nc)
				return nc
			},
			logs: "we require a shared secret, peer has none",
		},
		{
			name: "wrong-version",
			attack: func(t *testing.T, addr string) net.Conn {
				nc := rawDial(t, addr)
				h := hello{version: WireVersion + 1, flags: flagAuth, cluster: 7, replica: 3}
				nc.Write(h.marshal())
				var b [welcomeLen]byte
				if _, err := io.ReadFull(nc, b[:]); err != nil {
					t.Fatalf("reading welcome: %v", err)
				}
				var w welcome
				w.unmarshal(b[:])
				if w.status != statusVersion || w.version != WireVersion {
					t.Fatalf("welcome status %d version %d; want %d, %d", w.status, w.version, statusVersion, WireVersion)
				}
				smuggle(nc)
				return nc
			},
			logs: "wire version mismatch: peer speaks 2, we speak 1",
		},
		{
			name: "garbage",
			attack: func(t *testing.T, addr string) net.Conn {
				nc := rawDial(t, addr)
				req := "GET / HTTP/1.1\r\nHost: replica\r\nUser-Agent: curl\r\n\r\n"
				nc.Write([]byte(req + strings.Repeat("x", helloLen)))
				smuggle(nc)
				return nc
			},
			logs: "not a Parliament peer (bad magic)",
		},
		{
			name: "oversize-frame",
			attack: func(t *testing.T, addr string) net.Conn {
				nc := rawDial(t, addr)
				if _, err := dialHandshake(nc, good(3, 7, refusalSecret)); err != nil {
					t.Fatalf("handshake: %v", err)
				}
				// A header announcing 1 MiB (MaxFrame is 64 KiB here), then a valid frame.
				big := wire.AppendMessageFrame(nil, &protocol.Message{Type: protocol.MsgAccept, From: 3, To: 2, Data: make([]byte, 1<<20)})
				nc.Write(big[:4096])
				smuggle(nc)
				return nc
			},
			logs: "frame over MaxFrame",
		},
		{
			name: "oversize-after-good-frames",
			attack: func(t *testing.T, addr string) net.Conn {
				nc := rawDial(t, addr)
				if _, err := dialHandshake(nc, good(3, 7, refusalSecret)); err != nil {
					t.Fatalf("handshake: %v", err)
				}
				// Valid frames and the oversize header in one write: one batch, refused whole.
				var b []byte
				for i := 0; i < 3; i++ {
					b = wire.AppendMessageFrame(b, &protocol.Message{Type: protocol.MsgAccept, From: 3, To: 2, Seq: 665})
				}
				b = append(b, 0, 0, 0x10, 0, byte(wire.FrameMessage)) // 1 MiB announced
				nc.Write(b)
				return nc
			},
			logs: "frame over MaxFrame",
		},
		{
			name: "spoofed-sender",
			attack: func(t *testing.T, addr string) net.Conn {
				nc := rawDial(t, addr)
				if _, err := dialHandshake(nc, good(3, 7, refusalSecret)); err != nil {
					t.Fatalf("handshake: %v", err)
				}
				// Authenticated as 3, claims to be 1: a protocol violation.
				nc.Write(wire.AppendMessageFrame(nil, &protocol.Message{Type: protocol.MsgAccept, From: 1, To: 2, Seq: 666}))
				return nc
			},
			logs: "bad frame",
		},
		{
			name: "silent-peer",
			attack: func(t *testing.T, addr string) net.Conn {
				return rawDial(t, addr) // says nothing: the handshake deadline closes it
			},
			logs: "reading hello",
		},
		{
			name: "client-not-accepted",
			attack: func(t *testing.T, addr string) net.Conn {
				_, err := DialClient(ctxTimeout(t), addr, ClientConfig{ClusterID: 7, Secret: []byte(refusalSecret)})
				wantErr(t, err, ErrClientsRefused, "does not accept clients")
				nc := rawDial(t, addr)
				dialHandshake(nc, good(0, 7, refusalSecret))
				nc.Write(wire.AppendCommandFrame(nil, &protocol.Command{ClientID: 1, Seq: 1, Op: protocol.OpGet}))
				return nc
			},
			logs: "replica does not accept clients",
		},
	}
}

func TestRefusals(t *testing.T) {
	var logs logBuffer
	// Replica 2 accepts; replica 1 is the good peer; replica 3 is known but is the
	// attacker's claimed identity (it never runs).
	server, err := NewTCP(Config{
		ID: 2, ClusterID: 7, Listen: "127.0.0.1:0",
		Peers:    map[protocol.ReplicaID]string{1: "", 2: "", 3: ""},
		Secret:   []byte(refusalSecret),
		MaxFrame: 64 << 10, HandshakeTimeout: 300 * time.Millisecond,
		Logger: logs.logger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	addr := server.Addr().String()
	goodPeer, err := NewTCP(Config{
		ID: 1, ClusterID: 7, Peers: map[protocol.ReplicaID]string{2: addr},
		Secret: []byte(refusalSecret),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer goodPeer.Close()

	seq := uint64(0)
	goodRoundTrip := func(t *testing.T) {
		t.Helper()
		seq++
		goodPeer.Send(protocol.Message{Type: protocol.MsgAccept, From: 1, To: 2, Seq: seq})
		for _, m := range recvN(t, server, 1) {
			if m.From != 1 || m.Seq != seq {
				t.Fatalf("acceptor received %v (Seq %d) from a refused peer; want only the good peer's Seq %d", m, m.Seq, seq)
			}
		}
	}
	goodRoundTrip(t)
	for _, tc := range refusalCases() {
		t.Run(tc.name, func(t *testing.T) {
			nc := tc.attack(t, addr)
			waitClosed(t, nc)
			// Everything the refused connection could have delivered precedes, on the one
			// Recv channel, what the good peer sends now.
			goodRoundTrip(t)
			remote := nc.LocalAddr().String()
			lines := logs.lines("refused connection", "remote="+remote)
			if len(lines) != 1 || !strings.Contains(lines[0], tc.logs) {
				t.Fatalf("want one refusal line for %s saying %q; log:\n%s", remote, tc.logs, logs.String())
			}
		})
	}
}

// TestDialerErrors: a replica dialing a misconfigured peer gets a clear error in its log,
// and a client gets it from DialClient.
func TestDialerErrors(t *testing.T) {
	server := tcpCluster(t, 1, func(c *Config) {
		c.OnClient = func(s *ServerConn) {}
		c.Peers[3] = ""
	})[0]
	addr := server.Addr().String()
	_, err := DialClient(ctxTimeout(t), addr, ClientConfig{ClusterID: 9})
	wantErr(t, err, ErrWrongCluster, "cluster ID mismatch: replica has 7, we have 9")
	if !strings.Contains(err.Error(), addr) {
		t.Fatalf("error %q does not name the address %s", err, addr)
	}
	_, err = DialClient(ctxTimeout(t), addr, ClientConfig{ClusterID: 7, Secret: []byte("x")})
	wantErr(t, err, ErrAuth, "replica 1 has none")

	// A replica with another cluster ID keeps retrying with backoff and logs the reason
	// once, not once per attempt.
	var serverLogs, peerLogs logBuffer
	three, err := NewTCP(Config{
		ID: 3, ClusterID: 7, Listen: "127.0.0.1:0", Peers: map[protocol.ReplicaID]string{2: ""},
		Logger: serverLogs.logger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer three.Close()
	two, err := NewTCP(Config{
		ID: 2, ClusterID: 8, Peers: map[protocol.ReplicaID]string{3: three.Addr().String()},
		Logger: peerLogs.logger(), MinBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer two.Close()
	serverLogs.waitFor(t, "three refused attempts", func() bool {
		return len(serverLogs.lines("refused connection", "cluster ID mismatch")) >= 3
	})
	lines := peerLogs.lines("cannot connect to peer", "peer=3")
	if len(lines) != 1 || !strings.Contains(lines[0], "cluster ID mismatch: replica has 7, we have 8") {
		t.Fatalf("want exactly one dial error line naming the mismatch; log:\n%s", peerLogs.String())
	}
}
