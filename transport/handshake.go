package transport

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/parliament-lab/parliament/protocol"
)

// Handshake (docs/transport.md has the byte layout). Every connection, replica or client,
// starts with it before any frame:
//
//	dialer   -> acceptor  hello    (52 bytes): magic, version, flags, cluster ID, replica ID, nonce
//	acceptor -> dialer    welcome  (84 bytes): magic, version, status, flags, cluster ID, replica ID, nonce, proof
//	and only when a shared secret is configured:
//	dialer   -> acceptor  proof    (32 bytes)
//	acceptor -> dialer    verdict  (1 byte)
//
// Fixed sizes mean the acceptor never allocates or waits for more than 52 bytes from an
// unauthenticated peer; the caller puts a deadline on the whole exchange.
const (
	handshakeMagic = "PRLM"
	// WireVersion is the handshake and framing version this package speaks.
	WireVersion uint16 = 1

	helloLen   = 52
	welcomeLen = 84
	nonceLen   = 32
	proofLen   = sha256.Size

	flagCompress = 1 << 0 // hello: please compress; welcome: compression is on
	flagAuth     = 1 << 1 // this side has a shared secret
)

// Status codes of the welcome and verdict messages.
const (
	statusOK             = 0
	statusVersion        = 1
	statusCluster        = 2
	statusUnknownReplica = 3
	statusNoClients      = 4
	statusAuthRequired   = 5 // the acceptor has a secret, the dialer none
	statusAuthUnexpected = 6 // the dialer has a secret, the acceptor none
	statusBadProof       = 7
	statusSelf           = 8 // the dialer claims the acceptor's own replica ID
)

// Handshake errors, errors.Is-able; the returned errors wrap them with the details.
var (
	ErrNotParliament  = errors.New("not a Parliament peer (bad magic)")
	ErrWrongVersion   = errors.New("wire version mismatch")
	ErrWrongCluster   = errors.New("cluster ID mismatch")
	ErrUnknownReplica = errors.New("unknown replica ID")
	ErrClientsRefused = errors.New("replica does not accept clients")
	ErrAuth           = errors.New("shared secret configuration differs")
	ErrBadProof       = errors.New("bad HMAC proof")
	ErrWrongPeer      = errors.New("unexpected replica at this address")
)

type hello struct {
	version uint16
	flags   uint16
	cluster uint64
	replica protocol.ReplicaID
	nonce   [nonceLen]byte
}

func (h *hello) marshal() []byte {
	b := make([]byte, helloLen)
	copy(b, handshakeMagic)
	binary.LittleEndian.PutUint16(b[4:], h.version)
	binary.LittleEndian.PutUint16(b[6:], h.flags)
	binary.LittleEndian.PutUint64(b[8:], h.cluster)
	binary.LittleEndian.PutUint32(b[16:], uint32(h.replica))
	copy(b[20:], h.nonce[:])
	return b
}

func (h *hello) unmarshal(b []byte) {
	h.version = binary.LittleEndian.Uint16(b[4:])
	h.flags = binary.LittleEndian.Uint16(b[6:])
	h.cluster = binary.LittleEndian.Uint64(b[8:])
	h.replica = protocol.ReplicaID(binary.LittleEndian.Uint32(b[16:]))
	copy(h.nonce[:], b[20:52])
}

type welcome struct {
	version uint16
	status  uint8
	flags   uint8
	cluster uint64
	replica protocol.ReplicaID
	nonce   [nonceLen]byte
	proof   [proofLen]byte
}

func (w *welcome) marshal() []byte {
	b := make([]byte, welcomeLen)
	copy(b, handshakeMagic)
	binary.LittleEndian.PutUint16(b[4:], w.version)
	b[6] = w.status
	b[7] = w.flags
	binary.LittleEndian.PutUint64(b[8:], w.cluster)
	binary.LittleEndian.PutUint32(b[16:], uint32(w.replica))
	copy(b[20:], w.nonce[:])
	copy(b[52:], w.proof[:])
	return b
}

func (w *welcome) unmarshal(b []byte) {
	w.version = binary.LittleEndian.Uint16(b[4:])
	w.status = b[6]
	w.flags = b[7]
	w.cluster = binary.LittleEndian.Uint64(b[8:])
	w.replica = protocol.ReplicaID(binary.LittleEndian.Uint32(b[16:]))
	copy(w.nonce[:], b[20:52])
	copy(w.proof[:], b[52:84])
}

// proof is HMAC-SHA256 over a role label and everything both sides said: the label stops a
// proof from being reflected back as the other role's, the fresh nonces stop replays.
func proof(secret []byte, label string, cluster uint64, dialer, acceptor protocol.ReplicaID, dn, an *[nonceLen]byte) [proofLen]byte {
	mac := hmac.New(sha256.New, secret)
	var b [16]byte
	binary.LittleEndian.PutUint64(b[0:], cluster)
	binary.LittleEndian.PutUint32(b[8:], uint32(dialer))
	binary.LittleEndian.PutUint32(b[12:], uint32(acceptor))
	mac.Write([]byte(label))
	mac.Write(b[:])
	mac.Write(dn[:])
	mac.Write(an[:])
	var out [proofLen]byte
	mac.Sum(out[:0])
	return out
}

const (
	labelAcceptor = "parliament-v1-acceptor"
	labelDialer   = "parliament-v1-dialer"
)

// handshakeResult is what a successful handshake established.
type handshakeResult struct {
	peer     protocol.ReplicaID // the other side's replica ID (0 = a client)
	compress bool
}

type acceptParams struct {
	self     protocol.ReplicaID
	cluster  uint64
	secret   []byte
	compress bool
	clients  bool                          // accept replica ID 0
	known    func(protocol.ReplicaID) bool // is this a replica of the cluster?
}

// acceptHandshake runs the acceptor side. On refusal it tells the dialer why (except to
// garbage, which gets nothing) and returns an error naming the reason, for the log.
func acceptHandshake(rw io.ReadWriter, p *acceptParams) (handshakeResult, error) {
	var buf [helloLen]byte
	if _, err := io.ReadFull(rw, buf[:]); err != nil {
		return handshakeResult{}, fmt.Errorf("reading hello: %w", err)
	}
	if string(buf[:4]) != handshakeMagic {
		return handshakeResult{}, fmt.Errorf("%w: first bytes %q", ErrNotParliament, buf[:4])
	}
	var h hello
	h.unmarshal(buf[:])
	w := welcome{version: WireVersion, cluster: p.cluster, replica: p.self}
	if p.secret != nil {
		w.flags |= flagAuth
	}
	refuse := func(status uint8, err error) (handshakeResult, error) {
		w.status = status
		rw.Write(w.marshal()) // best effort: the dialer learns why; the error is ours to log
		return handshakeResult{}, err
	}
	switch {
	case h.version != WireVersion:
		return refuse(statusVersion, fmt.Errorf("%w: peer speaks %d, we speak %d", ErrWrongVersion, h.version, WireVersion))
	case h.cluster != p.cluster:
		return refuse(statusCluster, fmt.Errorf("%w: peer has %d, we have %d", ErrWrongCluster, h.cluster, p.cluster))
	case h.replica == 0 && !p.clients:
		return refuse(statusNoClients, ErrClientsRefused)
	case h.replica != 0 && h.replica == p.self:
		return refuse(statusSelf, fmt.Errorf("%w: peer claims our own ID %d", ErrUnknownReplica, h.replica))
	case h.replica != 0 && !p.known(h.replica):
		return refuse(statusUnknownReplica, fmt.Errorf("%w: %d is not a replica of this cluster", ErrUnknownReplica, h.replica))
	case p.secret != nil && h.flags&flagAuth == 0:
		return refuse(statusAuthRequired, fmt.Errorf("%w: we require a shared secret, peer has none", ErrAuth))
	case p.secret == nil && h.flags&flagAuth != 0:
		return refuse(statusAuthUnexpected, fmt.Errorf("%w: peer has a shared secret, we have none", ErrAuth))
	}
	res := handshakeResult{peer: h.replica, compress: p.compress && h.flags&flagCompress != 0}
	if res.compress {
		w.flags |= flagCompress
	}
	if p.secret != nil {
		if _, err := rand.Read(w.nonce[:]); err != nil {
			return handshakeResult{}, fmt.Errorf("nonce: %w", err)
		}
		w.proof = proof(p.secret, labelAcceptor, p.cluster, h.replica, p.self, &h.nonce, &w.nonce)
	}
	if _, err := rw.Write(w.marshal()); err != nil {
		return handshakeResult{}, fmt.Errorf("writing welcome: %w", err)
	}
	if p.secret == nil {
		return res, nil
	}
	var got [proofLen]byte
	if _, err := io.ReadFull(rw, got[:]); err != nil {
		return handshakeResult{}, fmt.Errorf("reading proof: %w", err)
	}
	want := proof(p.secret, labelDialer, p.cluster, h.replica, p.self, &h.nonce, &w.nonce)
	if !hmac.Equal(got[:], want[:]) {
		rw.Write([]byte{statusBadProof})
		return handshakeResult{}, fmt.Errorf("%w from replica %d (shared secret differs)", ErrBadProof, h.replica)
	}
	if _, err := rw.Write([]byte{statusOK}); err != nil {
		return handshakeResult{}, fmt.Errorf("writing verdict: %w", err)
	}
	return res, nil
}

type dialParams struct {
	self     protocol.ReplicaID // 0 for a client
	cluster  uint64
	secret   []byte
	compress bool
	expect   protocol.ReplicaID // the replica we meant to reach; 0 = any (clients)
}

// dialHandshake runs the dialer side and returns an error a user can act on.
func dialHandshake(rw io.ReadWriter, p *dialParams) (handshakeResult, error) {
	h := hello{version: WireVersion, cluster: p.cluster, replica: p.self}
	if p.compress {
		h.flags |= flagCompress
	}
	if p.secret != nil {
		h.flags |= flagAuth
		if _, err := rand.Read(h.nonce[:]); err != nil {
			return handshakeResult{}, fmt.Errorf("nonce: %w", err)
		}
	}
	if _, err := rw.Write(h.marshal()); err != nil {
		return handshakeResult{}, fmt.Errorf("writing hello: %w", err)
	}
	var buf [welcomeLen]byte
	if _, err := io.ReadFull(rw, buf[:]); err != nil {
		return handshakeResult{}, fmt.Errorf("reading welcome (the replica closed the connection: see its log): %w", err)
	}
	if string(buf[:4]) != handshakeMagic {
		return handshakeResult{}, fmt.Errorf("%w: first bytes %q", ErrNotParliament, buf[:4])
	}
	var w welcome
	w.unmarshal(buf[:])
	switch w.status {
	case statusOK:
	case statusVersion:
		return handshakeResult{}, fmt.Errorf("%w: replica speaks %d, we speak %d", ErrWrongVersion, w.version, WireVersion)
	case statusCluster:
		return handshakeResult{}, fmt.Errorf("%w: replica has %d, we have %d", ErrWrongCluster, w.cluster, p.cluster)
	case statusNoClients:
		return handshakeResult{}, fmt.Errorf("%w (replica %d)", ErrClientsRefused, w.replica)
	case statusUnknownReplica:
		return handshakeResult{}, fmt.Errorf("%w: replica %d does not know replica ID %d", ErrUnknownReplica, w.replica, p.self)
	case statusSelf:
		return handshakeResult{}, fmt.Errorf("%w: replica %d is itself replica ID %d", ErrUnknownReplica, w.replica, p.self)
	case statusAuthRequired:
		return handshakeResult{}, fmt.Errorf("%w: replica %d requires a shared secret, we have none", ErrAuth, w.replica)
	case statusAuthUnexpected:
		return handshakeResult{}, fmt.Errorf("%w: we have a shared secret, replica %d has none", ErrAuth, w.replica)
	default:
		return handshakeResult{}, fmt.Errorf("replica refused the handshake with unknown status %d", w.status)
	}
	if w.cluster != p.cluster {
		return handshakeResult{}, fmt.Errorf("%w: replica has %d, we have %d", ErrWrongCluster, w.cluster, p.cluster)
	}
	if p.expect != 0 && w.replica != p.expect {
		return handshakeResult{}, fmt.Errorf("%w: expected replica %d, found replica %d", ErrWrongPeer, p.expect, w.replica)
	}
	res := handshakeResult{peer: w.replica, compress: w.flags&flagCompress != 0}
	if p.secret == nil {
		if w.flags&flagAuth != 0 {
			return handshakeResult{}, fmt.Errorf("%w: replica %d requires a shared secret, we have none", ErrAuth, w.replica)
		}
		return res, nil
	}
	if w.flags&flagAuth == 0 {
		return handshakeResult{}, fmt.Errorf("%w: we have a shared secret, replica %d has none", ErrAuth, w.replica)
	}
	want := proof(p.secret, labelAcceptor, p.cluster, p.self, w.replica, &h.nonce, &w.nonce)
	if !hmac.Equal(w.proof[:], want[:]) {
		return handshakeResult{}, fmt.Errorf("%w: replica %d could not prove the shared secret", ErrBadProof, w.replica)
	}
	mine := proof(p.secret, labelDialer, p.cluster, p.self, w.replica, &h.nonce, &w.nonce)
	if _, err := rw.Write(mine[:]); err != nil {
		return handshakeResult{}, fmt.Errorf("writing proof: %w", err)
	}
	var verdict [1]byte
	if _, err := io.ReadFull(rw, verdict[:]); err != nil {
		return handshakeResult{}, fmt.Errorf("reading verdict: %w", err)
	}
	switch verdict[0] {
	case statusOK:
		return res, nil
	case statusBadProof:
		return handshakeResult{}, fmt.Errorf("%w: replica %d refused our proof (shared secret differs)", ErrBadProof, w.replica)
	default:
		return handshakeResult{}, fmt.Errorf("replica %d refused the handshake with unknown verdict %d", w.replica, verdict[0])
	}
}
