package transport

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"

	"github.com/parliament-lab/parliament/protocol"
)

// The handshake fuzz targets play one side of the handshake with arbitrary bytes against
// the real other side, in memory. Both sides read fixed sizes, so an in-memory stream that
// ends is enough to bound them: no deadline is needed.
//
// With a shared secret, arbitrary bytes can never carry a valid proof (it covers a fresh
// random nonce of the side under test). To reach the code after the proof as well, the
// targets have an oracle mode: the fuzzed proof bytes are then XORed with the correct
// proof, worked out from what the side under test has written so far, so that all-zero
// bytes stand for the right proof and anything else for a wrong one.

const (
	fuzzCluster  uint64             = 7
	fuzzAcceptor protocol.ReplicaID = 2 // the acceptor; replicas 1..5 form the cluster
	fuzzDialer   protocol.ReplicaID = 3
	fuzzReplicas                    = 5
	fuzzSecret                      = "fuzz-secret"
)

// scriptedPeer is the other side of a handshake: it serves script as what the peer sent
// and records what the side under test wrote. With fix set, the reads of
// script[fixAt:fixAt+proofLen] are XORed with fix(written so far), computed when the side
// under test first reads there.
type scriptedPeer struct {
	script  []byte
	off     int
	out     bytes.Buffer
	fixAt   int
	fix     func(written []byte) [proofLen]byte
	patched bool
}

func (p *scriptedPeer) Read(b []byte) (int, error) {
	if p.off >= len(p.script) {
		return 0, io.EOF
	}
	if p.fix != nil && !p.patched {
		if p.off < p.fixAt {
			b = b[:min(len(b), p.fixAt-p.off)] // stop at the proof: it depends on what comes back
		} else {
			want := p.fix(p.out.Bytes())
			p.script = append([]byte(nil), p.script...)
			for i := p.fixAt; i < len(p.script) && i < p.fixAt+proofLen; i++ {
				p.script[i] ^= want[i-p.fixAt]
			}
			p.patched = true
		}
	}
	n := copy(b, p.script[p.off:])
	p.off += n
	return n, nil
}

func (p *scriptedPeer) Write(b []byte) (int, error) { return p.out.Write(b) }

// recordHandshake runs dialHandshake against acceptHandshake over net.Pipe and returns
// the bytes each side wrote.
func recordHandshake(dp *dialParams, ap *acceptParams) (dialerSent, acceptorSent []byte, err error) {
	d, a := net.Pipe()
	var dialed, accepted bytes.Buffer
	done := make(chan error, 1)
	go func() {
		defer a.Close()
		_, err := acceptHandshake(struct {
			io.Reader
			io.Writer
		}{a, io.MultiWriter(a, &accepted)}, ap)
		done <- err
	}()
	_, derr := dialHandshake(struct {
		io.Reader
		io.Writer
	}{d, io.MultiWriter(d, &dialed)}, dp)
	d.Close()
	aerr := <-done
	return dialed.Bytes(), accepted.Bytes(), errors.Join(derr, aerr)
}

func fuzzAcceptParams(secret, clients, compress bool) *acceptParams {
	p := &acceptParams{
		self: fuzzAcceptor, cluster: fuzzCluster, compress: compress, clients: clients,
		known: func(id protocol.ReplicaID) bool { return id >= 1 && id <= fuzzReplicas },
	}
	if secret {
		p.secret = []byte(fuzzSecret)
	}
	return p
}

func fuzzDialParams(secret, client, compress bool) *dialParams {
	p := &dialParams{self: fuzzDialer, cluster: fuzzCluster, compress: compress, expect: fuzzAcceptor}
	if client {
		p.self, p.expect = 0, 0
	}
	if secret {
		p.secret = []byte(fuzzSecret)
	}
	return p
}

// parsedHello and parsedWelcome read the fields straight from the bytes (not through
// hello.unmarshal, which is under test).
type parsedHello struct {
	magic          string
	version, flags uint16
	cluster        uint64
	replica        protocol.ReplicaID
	nonce          [nonceLen]byte
}

func parseHello(b []byte) parsedHello {
	h := parsedHello{
		magic:   string(b[:4]),
		version: binary.LittleEndian.Uint16(b[4:]),
		flags:   binary.LittleEndian.Uint16(b[6:]),
		cluster: binary.LittleEndian.Uint64(b[8:]),
		replica: protocol.ReplicaID(binary.LittleEndian.Uint32(b[16:])),
	}
	copy(h.nonce[:], b[20:52])
	return h
}

type parsedWelcome struct {
	magic         string
	version       uint16
	status, flags uint8
	cluster       uint64
	replica       protocol.ReplicaID
	nonce         [nonceLen]byte
	proof         [proofLen]byte
}

func parseWelcome(b []byte) parsedWelcome {
	w := parsedWelcome{
		magic:   string(b[:4]),
		version: binary.LittleEndian.Uint16(b[4:]),
		status:  b[6],
		flags:   b[7],
		cluster: binary.LittleEndian.Uint64(b[8:]),
		replica: protocol.ReplicaID(binary.LittleEndian.Uint32(b[16:])),
	}
	copy(w.nonce[:], b[20:52])
	copy(w.proof[:], b[52:84])
	return w
}

func isEOF(err error) bool { return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) }

// FuzzAcceptHandshake feeds arbitrary bytes as what a dialer sends to acceptHandshake
// (replica 2 of cluster 7, replicas 1..5) and checks its contract: it reads no more than
// the hello (and the proof, with a secret); garbage gets no answer; every refusal sends
// one welcome whose status names a reason that holds for the hello, and an error wrapping
// the matching sentinel; it succeeds only for a hello of this cluster and version from a
// known replica other than itself (or a client, when clients are accepted) whose secret
// flag matches, and with a secret only after the right proof.
func FuzzAcceptHandshake(f *testing.F) {
	for _, secret := range []bool{false, true} {
		for _, client := range []bool{false, true} {
			dialed, _, err := recordHandshake(fuzzDialParams(secret, client, true), fuzzAcceptParams(secret, true, true))
			if err != nil {
				f.Fatalf("recording a handshake (secret %v, client %v): %v", secret, client, err)
			}
			f.Add(dialed, secret, true, true, false)
			f.Add(dialed, !secret, !client, false, false) // refused: secret differs, clients not accepted
			for _, n := range []int{0, 3, 4, helloLen - 1, helloLen, helloLen + 1, len(dialed) - 1} {
				if n <= len(dialed) {
					f.Add(dialed[:n], secret, true, false, false)
				}
			}
			if secret {
				// Oracle mode: the genuine hello, then zeros for the right proof.
				f.Add(append(dialed[:helloLen:helloLen], make([]byte, proofLen)...), true, client, true, true)
			}
		}
	}
	f.Add((&hello{version: WireVersion, cluster: fuzzCluster, replica: fuzzAcceptor}).marshal(), false, false, false, false)
	f.Add((&hello{version: WireVersion + 1, cluster: fuzzCluster, replica: 1}).marshal(), false, false, false, false)
	f.Add((&hello{version: WireVersion, cluster: fuzzCluster + 1, replica: 1}).marshal(), false, false, false, false)
	f.Add((&hello{version: WireVersion, cluster: fuzzCluster, replica: 9}).marshal(), false, false, false, false)
	f.Add((&hello{version: WireVersion, flags: flagAuth, cluster: fuzzCluster, replica: 1}).marshal(), false, false, false, false)
	f.Add([]byte("GET / HTTP/1.1\r\nHost: replica\r\n\r\nxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"), true, true, true, false)

	f.Fuzz(func(t *testing.T, in []byte, secret, clients, compress, oracle bool) {
		p := fuzzAcceptParams(secret, clients, compress)
		peer := &scriptedPeer{script: in}
		if secret && oracle && len(in) >= helloLen {
			h := parseHello(in)
			peer.fixAt = helloLen
			peer.fix = func(written []byte) [proofLen]byte {
				if len(written) < welcomeLen {
					t.Fatalf("acceptor reads the proof after writing %d bytes, before its welcome", len(written))
				}
				w := parseWelcome(written)
				return proof(p.secret, labelDialer, fuzzCluster, h.replica, fuzzAcceptor, &h.nonce, &w.nonce)
			}
		}
		res, err := acceptHandshake(peer, p)
		out := peer.out.Bytes()

		if len(in) < helloLen || string(in[:4]) != handshakeMagic {
			if err == nil || len(out) != 0 || peer.off != min(len(in), helloLen) {
				t.Fatalf("short or garbage hello: err %v, wrote %d bytes, read %d; want an error, silence, and no read past the hello", err, len(out), peer.off)
			}
			if len(in) < helloLen && !isEOF(err) || len(in) >= helloLen && !errors.Is(err, ErrNotParliament) {
				t.Fatalf("short or garbage hello: err %v", err)
			}
			return
		}
		h := parseHello(in)
		if len(out) < welcomeLen {
			t.Fatalf("a hello with the magic got %d bytes back, want a welcome (err %v)", len(out), err)
		}
		w := parseWelcome(out)
		if w.magic != handshakeMagic || w.version != WireVersion || w.cluster != fuzzCluster || w.replica != fuzzAcceptor || (w.flags&flagAuth != 0) != secret {
			t.Fatalf("welcome %+v does not describe the acceptor (secret %v)", w, secret)
		}
		if w.status != statusOK {
			if err == nil || len(out) != welcomeLen || peer.off != helloLen {
				t.Fatalf("refusal with status %d: err %v, wrote %d bytes, read %d; want an error, one welcome, the hello read", w.status, err, len(out), peer.off)
			}
			var holds bool
			var sentinel error
			switch w.status {
			case statusVersion:
				holds, sentinel = h.version != WireVersion, ErrWrongVersion
			case statusCluster:
				holds, sentinel = h.cluster != fuzzCluster, ErrWrongCluster
			case statusNoClients:
				holds, sentinel = h.replica == 0 && !clients, ErrClientsRefused
			case statusSelf:
				holds, sentinel = h.replica == fuzzAcceptor, ErrUnknownReplica
			case statusUnknownReplica:
				holds, sentinel = h.replica > fuzzReplicas, ErrUnknownReplica
			case statusAuthRequired:
				holds, sentinel = secret && h.flags&flagAuth == 0, ErrAuth
			case statusAuthUnexpected:
				holds, sentinel = !secret && h.flags&flagAuth != 0, ErrAuth
			default:
				t.Fatalf("refusal with unknown status %d", w.status)
			}
			if !holds || !errors.Is(err, sentinel) {
				t.Fatalf("refused hello %+v with status %d and error %v: reason does not hold or error does not wrap %v", h, w.status, err, sentinel)
			}
			return
		}

		// Welcomed: the hello must be acceptable.
		if h.version != WireVersion || h.cluster != fuzzCluster || h.replica == fuzzAcceptor || h.replica > fuzzReplicas ||
			(h.replica == 0 && !clients) || (h.flags&flagAuth != 0) != secret {
			t.Fatalf("welcomed hello %+v (clients %v, secret %v)", h, clients, secret)
		}
		wantCompress := compress && h.flags&flagCompress != 0
		if (w.flags&flagCompress != 0) != wantCompress {
			t.Fatalf("welcome flags %#x, want compression %v", w.flags, wantCompress)
		}
		if !secret {
			if err != nil || len(out) != welcomeLen || peer.off != helloLen {
				t.Fatalf("acceptable hello without a secret: err %v, wrote %d bytes, read %d", err, len(out), peer.off)
			}
		} else {
			var nonce [nonceLen]byte
			if w.nonce == nonce {
				t.Fatal("welcome with a secret carries no nonce")
			}
			right := oracle && len(in) >= helloLen+proofLen && bytes.Equal(in[helloLen:helloLen+proofLen], make([]byte, proofLen))
			switch {
			case len(in) < helloLen+proofLen:
				if !isEOF(err) || len(out) != welcomeLen {
					t.Fatalf("short proof: err %v, wrote %d bytes", err, len(out))
				}
			case right:
				if err != nil || !bytes.Equal(out[welcomeLen:], []byte{statusOK}) {
					t.Fatalf("right proof: err %v, verdict %v", err, out[welcomeLen:])
				}
			default:
				if err == nil || !errors.Is(err, ErrBadProof) || !bytes.Equal(out[welcomeLen:], []byte{statusBadProof}) {
					t.Fatalf("wrong proof (oracle %v): err %v, verdict %v; want ErrBadProof", oracle, err, out[welcomeLen:])
				}
			}
			if peer.off != min(len(in), helloLen+proofLen) {
				t.Fatalf("read %d bytes of %d, want the hello and the proof only", peer.off, len(in))
			}
		}
		if err == nil && (res.peer != h.replica || res.compress != wantCompress) {
			t.Fatalf("result %+v for hello %+v, want peer %d compress %v", res, h, h.replica, wantCompress)
		}
	})
}

// FuzzDialHandshake feeds arbitrary bytes as the acceptor's answer to dialHandshake
// (replica 3 dialing replica 2 of cluster 7, or a client) and checks its contract: it
// sends its hello, reads no more than the welcome (and the verdict, with a secret), and
// succeeds only when the welcome says OK, names this cluster and the replica it meant to
// reach, and agrees on the secret; with a secret, only after the acceptor proved it and
// accepted the dialer's proof. Every refusal is an error wrapping the matching sentinel.
func FuzzDialHandshake(f *testing.F) {
	for _, secret := range []bool{false, true} {
		for _, client := range []bool{false, true} {
			_, accepted, err := recordHandshake(fuzzDialParams(secret, client, true), fuzzAcceptParams(secret, true, true))
			if err != nil {
				f.Fatalf("recording a handshake (secret %v, client %v): %v", secret, client, err)
			}
			f.Add(accepted, secret, client, true, false)
			for _, n := range []int{0, 4, welcomeLen - 1, welcomeLen, len(accepted) - 1} {
				if n <= len(accepted) {
					f.Add(accepted[:n], secret, client, true, false)
				}
			}
			if secret {
				// Oracle mode: the welcome with zeros for the right proof, then the verdicts.
				w := append([]byte(nil), accepted[:welcomeLen]...)
				clear(w[welcomeLen-proofLen:])
				w = w[:welcomeLen:welcomeLen] // each append below copies
				f.Add(append(w, statusOK), true, client, true, true)
				f.Add(append(w, statusBadProof), true, client, false, true)
				f.Add(append(w, 42), true, client, false, true) // unknown verdict
				f.Add(w, true, client, false, true)             // no verdict
				f.Add(accepted, false, client, false, false)    // the acceptor has a secret, we none
				_, plain, err := recordHandshake(fuzzDialParams(false, client, true), fuzzAcceptParams(false, true, true))
				if err != nil {
					f.Fatalf("recording a handshake (client %v): %v", client, err)
				}
				f.Add(plain, true, client, false, false) // the acceptor has no secret, we one
			}
		}
	}
	for _, status := range []uint8{statusVersion, statusCluster, statusUnknownReplica, statusNoClients, statusAuthRequired, statusAuthUnexpected, statusBadProof, statusSelf, 99} {
		f.Add((&welcome{version: WireVersion, status: status, cluster: fuzzCluster, replica: fuzzAcceptor}).marshal(), false, false, false, false)
	}
	f.Add((&welcome{version: WireVersion, cluster: fuzzCluster + 1, replica: fuzzAcceptor}).marshal(), false, false, false, false)
	f.Add((&welcome{version: WireVersion, cluster: fuzzCluster, replica: 4}).marshal(), false, false, false, false)
	f.Add((&welcome{version: WireVersion, flags: flagAuth, cluster: fuzzCluster, replica: fuzzAcceptor}).marshal(), false, false, false, false)
	f.Add([]byte("HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n400 Bad Request: not HTTP"), false, false, false, false)

	f.Fuzz(func(t *testing.T, in []byte, secret, client, compress, oracle bool) {
		p := fuzzDialParams(secret, client, compress)
		peer := &scriptedPeer{script: in}
		if secret && oracle && len(in) >= 20 {
			acceptor := protocol.ReplicaID(binary.LittleEndian.Uint32(in[16:]))
			var an [nonceLen]byte
			copy(an[:], in[20:min(len(in), 52)])
			peer.fixAt = welcomeLen - proofLen
			peer.fix = func(written []byte) [proofLen]byte {
				if len(written) < helloLen {
					t.Fatalf("dialer reads the welcome after writing %d bytes, before its hello", len(written))
				}
				h := parseHello(written)
				return proof(p.secret, labelAcceptor, fuzzCluster, p.self, acceptor, &h.nonce, &an)
			}
		}
		res, err := dialHandshake(peer, p)
		out := peer.out.Bytes()

		if len(out) < helloLen {
			t.Fatalf("dialer wrote %d bytes, want its hello first", len(out))
		}
		h := parseHello(out)
		wantFlags := uint16(0)
		if compress {
			wantFlags |= flagCompress
		}
		if secret {
			wantFlags |= flagAuth
		}
		if h.magic != handshakeMagic || h.version != WireVersion || h.flags != wantFlags || h.cluster != fuzzCluster || h.replica != p.self {
			t.Fatalf("hello %+v does not describe the dialer %+v", h, p)
		}
		var zero [nonceLen]byte
		if secret == (h.nonce == zero) {
			t.Fatalf("hello nonce %x with secret %v", h.nonce, secret)
		}

		// What the dialer must make of the answer, in the order it checks.
		var want error // nil: success; errShort: the stream ended; errUnexpected: any error
		errShort, errUnexpected := errors.New("end of stream"), errors.New("an error")
		w := parsedWelcome{}
		proofSent, verdictRead := false, false
		switch {
		case len(in) < welcomeLen:
			want = errShort
		case string(in[:4]) != handshakeMagic:
			want = ErrNotParliament
		default:
			w = parseWelcome(in)
			if oracle && secret {
				copy(w.proof[:], in[welcomeLen-proofLen:welcomeLen]) // the delta: zero is right
			}
			switch w.status {
			case statusOK:
			case statusVersion:
				want = ErrWrongVersion
			case statusCluster:
				want = ErrWrongCluster
			case statusNoClients:
				want = ErrClientsRefused
			case statusUnknownReplica, statusSelf:
				want = ErrUnknownReplica
			case statusAuthRequired, statusAuthUnexpected:
				want = ErrAuth
			default:
				want = errUnexpected
			}
			switch {
			case want != nil:
			case w.cluster != fuzzCluster:
				want = ErrWrongCluster
			case p.expect != 0 && w.replica != p.expect:
				want = ErrWrongPeer
			case (w.flags&flagAuth != 0) != secret:
				want = ErrAuth
			case !secret:
			case !oracle || w.proof != [proofLen]byte{}:
				want = ErrBadProof // arbitrary bytes never prove the secret
			default:
				proofSent = true
				switch {
				case len(in) <= welcomeLen:
					want = errShort
				case in[welcomeLen] == statusOK:
					verdictRead = true
				case in[welcomeLen] == statusBadProof:
					verdictRead, want = true, ErrBadProof
				default:
					verdictRead, want = true, errUnexpected
				}
			}
		}
		switch {
		case want == nil && err != nil:
			t.Fatalf("answer %x: err %v, want success", in, err)
		case want == errUnexpected && err == nil:
			t.Fatalf("answer %x: success, want an error", in)
		case want == errShort && !isEOF(err):
			t.Fatalf("answer %x: err %v, want the end of the stream", in, err)
		case want != nil && want != errUnexpected && want != errShort && !errors.Is(err, want):
			t.Fatalf("answer %x: err %v, want %v", in, err, want)
		}
		if err == nil && (res.peer != w.replica || res.compress != (w.flags&flagCompress != 0)) {
			t.Fatalf("result %+v for welcome %+v", res, w)
		}

		wantOut := helloLen
		if proofSent {
			wantOut += proofLen
			an := parseWelcome(in).nonce
			mine := proof(p.secret, labelDialer, fuzzCluster, p.self, w.replica, &h.nonce, &an)
			if !bytes.Equal(out[helloLen:], mine[:]) {
				t.Fatal("dialer sent a wrong proof")
			}
		}
		if len(out) != wantOut {
			t.Fatalf("dialer wrote %d bytes, want %d", len(out), wantOut)
		}
		wantRead := min(len(in), welcomeLen)
		if verdictRead {
			wantRead++
		}
		if peer.off != wantRead {
			t.Fatalf("dialer read %d bytes of %d, want %d", peer.off, len(in), wantRead)
		}
	})
}
