// Package transport moves protocol.Messages between replicas and client commands between
// clients and replicas.
//
// Three implementations share the Transport interface:
//
//   - TCP (NewTCP): one TCP connection per replica pair, a handshake on every connection
//     (magic, version, cluster ID, replica ID, optional HMAC-SHA256 challenge-response,
//     optional s2 compression), a bounded send queue per peer drained by one writer
//     goroutine that flushes only when its queue is empty (natural batching), one reader
//     goroutine per connection delivering every message one read decoded as one batch, and
//     reconnection with capped exponential backoff. The same listener serves clients
//     (ServerConn, DialClient/ClientConn).
//   - MemNetwork: in-process, for tests.
//   - NewWAN: a wrapper around any Transport that delays each message by the one-way
//     latency of its (sender site, receiver site) pair from a latency Matrix, FIFO per link,
//     so that a multi-site WAN can be reproduced on one machine.
//
// The transport may drop messages (full queue, broken link): the protocols retransmit.
// It never reorders messages on one link and never blocks the sender.
//
// See docs/transport.md for the handshake bytes and the design.
package transport

import (
	"errors"

	"github.com/parliament-lab/parliament/protocol"
)

// Transport carries protocol messages between replicas.
type Transport interface {
	// Send queues m for m.To and returns at once: it never blocks. The message may be
	// dropped when the peer is unknown or down, or its queue is full. Send copies (or
	// encodes) m before returning, so the caller may reuse m's memory immediately (the
	// engine contract lets an engine reuse a Ready's memory after Advance). A message to
	// the transport's own ID is delivered locally.
	Send(m protocol.Message)
	// Recv returns the channel of received batches. A batch holds the messages one read
	// decoded; the receiver owns them (their slices may share memory with each other, not
	// with anything the transport keeps). The channel is closed by Close.
	Recv() <-chan []protocol.Message
	// Close stops every goroutine of the transport and waits for them. Safe to call twice.
	Close() error
}

// ErrClosed is returned by operations on a closed transport or connection.
var ErrClosed = errors.New("transport: closed")

// Default sizes.
const (
	// DefaultQueueLen is the default per-peer send queue, in messages.
	DefaultQueueLen = 8192
	// DefaultQueueBytes bounds the encoded bytes queued for one peer.
	DefaultQueueBytes = 64 << 20
	// recvChanLen is the number of batches buffered on a Recv channel; readers block (and
	// TCP pushes back on the sender) when the consumer falls behind. Readers block without
	// losing anything (the bytes wait in the socket), so the channel only needs to smooth
	// the receiver's hiccups; a short one keeps the memory of received-but-unconsumed
	// batches small, and with Release lets slots come back before the reader needs more.
	recvChanLen = 32
)
