package replica

// Chunked state transfer. A MsgSnapshot whose Data (the kv.Store snapshot) does not fit
// one frame of the cluster's max_frame leaves as a stream of MsgSnapshotChunk messages,
// paced by MsgSnapshotAck messages from the receiver, and is stepped into the receiving
// engine as one MsgSnapshot once every byte is in. Engines never see either type: they
// emit and Step whole MsgSnapshots, as before (docs/durability.md, docs/wire.md).
//
// Both halves live in the event loop (no goroutine, no lock): the sender (chunkSender) is
// driven by the MsgSnapshots the engine emits, the acks that arrive and the ticks; the
// receiver (chunkAssembler) by the chunks that arrive and the ticks.
//
// Flow control. The transport's send queue drops what does not fit and Send never blocks,
// so the sender keeps at most chunkWindow chunks beyond what the receiver acknowledged
// (go-back-N): each in-order chunk is acknowledged with the number of bytes the receiver
// holds contiguously from offset 0, and every ack that moves that number lets the sender
// send further. A chunk that is lost (full queue, broken connection) leaves a gap the
// receiver does not fill; with no progress for chunkResendAfter the sender sends again
// from the acknowledged offset. An engine that re-emits the same snapshot (same fields,
// same bytes) to the same peer while its transfer runs changes nothing: the transfer goes
// on. With no progress for chunkAbandonAfter the transfer is abandoned (logged), and the
// engine's next MsgSnapshot starts it again — the receiver, which kept its bytes, answers
// the first chunk with how much it has, and the sender resumes there.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"math"
	"slices"
	"time"

	"github.com/parliament-lab/parliament/protocol"
	"github.com/parliament-lab/parliament/wire"
)

const (
	// maxChunkBytes bounds the snapshot bytes in one chunk, whatever max_frame allows, so
	// that one chunk does not hold a connection (and the peer's other traffic) for long.
	maxChunkBytes = 4 << 20
	// chunkWindow is how many chunks may be unacknowledged: at most 16 MiB in a peer's send
	// queue (transport.DefaultQueueBytes is 64 MiB), enough to keep a link busy over a
	// round trip.
	chunkWindow = 4
	// maxSnapshotBytes is the largest snapshot a receiver reassembles: a claimed total
	// above it is refused before anything is allocated.
	maxSnapshotBytes = 8 << 30
	// chunkPrefixMax bounds the runtime prefix of a chunk's or an ack's Data.
	chunkPrefixMax = 2*binary.MaxVarintLen64 + 4
	// chunkResendAfter: a transfer without progress for this long sends again from the
	// acknowledged offset. chunkAbandonAfter: a transfer without progress for this long is
	// abandoned (the sender), or its bytes are dropped (the receiver, after twice as long).
	chunkResendAfter  = time.Second
	chunkAbandonAfter = 15 * time.Second
)

var crc32c = crc32.MakeTable(crc32.Castagnoli)

// appendChunkPrefix appends the runtime prefix of a chunk's Data (off = where its bytes go)
// or of an ack's Data (off = bytes held): uvarint total | uvarint off | CRC-32C of the
// whole snapshot, 4 bytes little-endian.
func appendChunkPrefix(dst []byte, total, off uint64, crc uint32) []byte {
	dst = binary.AppendUvarint(dst, total)
	dst = binary.AppendUvarint(dst, off)
	return binary.LittleEndian.AppendUint32(dst, crc)
}

var errChunkPrefix = errors.New("bad chunk prefix")

// parseChunkPrefix splits a chunk's or an ack's Data into its prefix and the rest.
func parseChunkPrefix(data []byte) (total, off uint64, crc uint32, rest []byte, err error) {
	total, n := binary.Uvarint(data)
	if n <= 0 {
		return 0, 0, 0, nil, fmt.Errorf("%w: total", errChunkPrefix)
	}
	data = data[n:]
	off, n = binary.Uvarint(data)
	if n <= 0 {
		return 0, 0, 0, nil, fmt.Errorf("%w: offset", errChunkPrefix)
	}
	data = data[n:]
	if len(data) < 4 {
		return 0, 0, 0, nil, fmt.Errorf("%w: checksum", errChunkPrefix)
	}
	return total, off, binary.LittleEndian.Uint32(data), data[4:], nil
}

// snapID identifies one snapshot in transfer: the fields of its MsgSnapshot that the
// engine set (Cmds and Insts aside), the size of its Data and their checksum.
type snapID struct {
	hdr   protocol.Message // Ballot, VBallot, Inst, OK, Status, Seq, Index and Deps (an own copy)
	total uint64
	crc   uint32
}

func newSnapID(m *protocol.Message, total uint64, crc uint32) snapID {
	return snapID{hdr: protocol.Message{Ballot: m.Ballot, VBallot: m.VBallot, Inst: m.Inst, OK: m.OK,
		Status: m.Status, Seq: m.Seq, Index: m.Index, Deps: slices.Clone(m.Deps)}, total: total, crc: crc}
}

// matches reports whether m (a chunk, an ack or a MsgSnapshot) with this total and
// checksum belongs to the snapshot id names.
func (id *snapID) matches(m *protocol.Message, total uint64, crc uint32) bool {
	h := &id.hdr
	return id.total == total && id.crc == crc && h.Ballot == m.Ballot && h.VBallot == m.VBallot &&
		h.Inst == m.Inst && h.OK == m.OK && h.Status == m.Status && h.Seq == m.Seq &&
		h.Index == m.Index && slices.Equal(h.Deps, m.Deps)
}

// ackMsg is the MsgSnapshotAck saying that have bytes of id's snapshot are held here.
func (id *snapID) ackMsg(from, to protocol.ReplicaID, have uint64) protocol.Message {
	a := id.hdr
	a.Type, a.From, a.To = protocol.MsgSnapshotAck, from, to
	a.Data = appendChunkPrefix(make([]byte, 0, chunkPrefixMax), id.total, have, id.crc)
	return a
}

// ticksFor converts d into ticks of length tick (at least 1).
func ticksFor(d, tick time.Duration) uint64 {
	if tick <= 0 {
		tick = 10 * time.Millisecond
	}
	return uint64(max(1, d/tick))
}

// outTransfer is one snapshot being sent in chunks to one peer.
type outTransfer struct {
	id       snapID
	msg      protocol.Message // the MsgSnapshot as filled: its fields go into every chunk; Data is shared, read-only
	chunk    uint64           // snapshot bytes per chunk
	next     uint64           // offset of the next chunk to send
	acked    uint64           // bytes the receiver said it holds
	progress uint64           // tick of the start or of the last ack that moved acked
	resent   uint64           // tick of the last progress or resend
	chunks   uint64           // chunks sent
}

// chunkSender sends the MsgSnapshots too large for one frame, one transfer per peer.
type chunkSender struct {
	self     protocol.ReplicaID
	send     func(protocol.Message) // must copy what it sends before it returns (transport.Transport.Send does)
	log      *slog.Logger
	maxFrame int
	// chunkCap bounds the snapshot bytes per chunk (maxChunkBytes; tests make it smaller).
	chunkCap                  int
	resendTicks, abandonTicks uint64
	out                       map[protocol.ReplicaID]*outTransfer
	buf                       []byte // scratch Data of the chunk being sent
}

func newChunkSender(self protocol.ReplicaID, maxFrame int, tick time.Duration, send func(protocol.Message), log *slog.Logger) *chunkSender {
	return &chunkSender{
		self: self, send: send, log: log, maxFrame: maxFrame, chunkCap: maxChunkBytes,
		resendTicks:  ticksFor(chunkResendAfter, tick),
		abandonTicks: ticksFor(chunkAbandonAfter, tick),
		out:          map[protocol.ReplicaID]*outTransfer{},
	}
}

// sameBytes reports whether a and b are the same bytes in memory (the same snapshot).
func sameBytes(a, b []byte) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// checksum returns the CRC-32C of data, from a transfer of the same snapshot to another
// peer when there is one.
func (s *chunkSender) checksum(data []byte) uint32 {
	for _, t := range s.out {
		if sameBytes(t.msg.Data, data) {
			return t.id.crc
		}
	}
	return crc32.Checksum(data, crc32c)
}

// withoutData returns a deep copy of m's fields (the engine reuses its slices) with
// Data = data, not copied.
func withoutData(m *protocol.Message, data []byte) protocol.Message {
	h := *m
	h.Data = nil
	c := h.Clone()
	c.Data = data
	return c
}

// chunkSize returns the snapshot bytes that fit one chunk carrying m's fields.
func (s *chunkSender) chunkSize(m *protocol.Message) int {
	h := *m
	h.Type, h.From, h.Data = protocol.MsgSnapshotChunk, s.self, nil
	fixed := wire.HeaderSize + len(wire.AppendMessage(nil, &h)) + binary.MaxVarintLen64 + chunkPrefixMax
	return min(s.chunkCap, s.maxFrame-snapshotOverhead, s.maxFrame-fixed)
}

// offer starts sending m (a filled MsgSnapshot) in chunks, or lets the transfer of the
// same snapshot to the same peer go on. A transfer of an older snapshot that is making
// progress goes on too, and m is dropped: were every newer snapshot to restart the
// transfer, a peer could never catch up while snapshots are taken faster than one
// crosses the link. The older snapshot is as good a start (the engine installs whatever
// is ahead of the peer, which then asks for the rest, or for a newer snapshot).
func (s *chunkSender) offer(m *protocol.Message, now uint64) {
	if t := s.out[m.To]; t != nil {
		if sameBytes(t.msg.Data, m.Data) && t.id.matches(m, t.id.total, t.id.crc) {
			s.pump(t)
			return
		}
		if now-t.progress < s.resendTicks {
			s.log.Debug("not sending a newer snapshot: the transfer of an older one is under way", "to", m.To,
				"frontier", fmt.Sprint(m.Deps), "sending", fmt.Sprint(t.id.hdr.Deps), "acked", t.acked, "bytes", t.id.total)
			return
		}
	}
	chunk := s.chunkSize(m)
	if chunk < 1 {
		s.log.Error("cannot send a snapshot: its message fields leave no room for data under max_frame",
			"to", m.To, "max_frame", s.maxFrame)
		return
	}
	total := uint64(len(m.Data))
	t := &outTransfer{id: newSnapID(m, total, s.checksum(m.Data)), msg: withoutData(m, m.Data), chunk: uint64(chunk),
		progress: now, resent: now}
	if old := s.out[m.To]; old != nil {
		s.log.Info("replacing a stalled snapshot transfer by a newer snapshot", "to", m.To,
			"old_frontier", fmt.Sprint(old.id.hdr.Deps), "acked", old.acked, "old_bytes", old.id.total)
	}
	s.out[m.To] = t
	s.log.Info("sending a snapshot in chunks", "to", m.To, "bytes", total, "chunk_bytes", chunk,
		"frontier", fmt.Sprint(m.Deps))
	s.pump(t)
}

// cancel forgets the transfer to peer to (a newer snapshot went as one message).
func (s *chunkSender) cancel(to protocol.ReplicaID) { delete(s.out, to) }

// pump sends t's next chunks, as far as the window allows.
func (s *chunkSender) pump(t *outTransfer) {
	limit := min(t.id.total, t.acked+chunkWindow*t.chunk)
	for t.next < limit {
		n := min(t.chunk, t.id.total-t.next)
		c := t.msg
		c.Type, c.From = protocol.MsgSnapshotChunk, s.self
		s.buf = appendChunkPrefix(s.buf[:0], t.id.total, t.next, t.id.crc)
		s.buf = append(s.buf, t.msg.Data[t.next:t.next+n]...)
		c.Data = s.buf
		s.send(c)
		t.next += n
		t.chunks++
	}
}

// ack takes a MsgSnapshotAck: the receiver holds have bytes of the snapshot it names.
func (s *chunkSender) ack(m *protocol.Message, now uint64) {
	t := s.out[m.From]
	if t == nil {
		return
	}
	total, have, crc, rest, err := parseChunkPrefix(m.Data)
	if err != nil || len(rest) != 0 || have > total || !t.id.matches(m, total, crc) {
		return // an ack of an earlier transfer, or nonsense: nothing to do with this one
	}
	switch {
	case have == total:
		delete(s.out, m.From)
		s.log.Info("snapshot sent in chunks", "to", m.From, "bytes", total, "chunks", t.chunks)
		return
	case have > t.acked:
		t.acked, t.progress, t.resent = have, now, now
		t.next = max(t.next, have) // a receiver that kept the bytes of an abandoned transfer
	case have < t.acked:
		// The receiver lost what it had (it restarted, or dropped the bytes): go back.
		t.acked, t.next, t.progress, t.resent = have, have, now, now
	}
	s.pump(t)
}

// tick sends again from the acknowledged offset what made no progress for resendTicks,
// and abandons what made none for abandonTicks.
func (s *chunkSender) tick(now uint64) {
	for to, t := range s.out {
		switch {
		case now-t.progress >= s.abandonTicks:
			delete(s.out, to)
			s.log.Warn("abandoning a snapshot transfer: no progress; it starts again when the engine next sends the snapshot",
				"to", to, "bytes", t.id.total, "acked", t.acked, "chunks", t.chunks, "ticks", now-t.progress)
		case now-t.resent >= s.resendTicks:
			s.log.Debug("snapshot transfer stalled: sending again from the acknowledged offset", "to", to, "acked", t.acked, "sent", t.next)
			t.next, t.resent = t.acked, now
			s.pump(t)
		}
	}
}

// assembly is a snapshot being received in chunks from one peer.
type assembly struct {
	id   snapID
	msg  protocol.Message // the fields of the MsgSnapshot (own copies), without Data
	buf  []byte           // the bytes [0, len(buf)) received so far
	last uint64           // tick of the last chunk
}

// chunkAssembler reassembles the chunked snapshots of every peer, one at a time per peer.
type chunkAssembler struct {
	self      protocol.ReplicaID
	send      func(protocol.Message)
	log       *slog.Logger
	maxTotal  uint64
	idleTicks uint64
	// ahead reports whether the engine would install a snapshot with this frontier; nil:
	// always. A snapshot it would not install is stepped at its first chunk without Data,
	// which the engines do not read (the runtime only reads it to install it).
	ahead func(frontier []protocol.InstanceID) bool
	in    map[protocol.ReplicaID]*assembly
	done  map[protocol.ReplicaID]*snapID // per peer, the last snapshot completed (or not needed)
}

func newChunkAssembler(self protocol.ReplicaID, tick time.Duration, send func(protocol.Message), log *slog.Logger) *chunkAssembler {
	return &chunkAssembler{
		self: self, send: send, log: log,
		maxTotal:  min(maxSnapshotBytes, math.MaxInt),
		idleTicks: 2 * ticksFor(chunkAbandonAfter, tick),
		in:        map[protocol.ReplicaID]*assembly{},
		done:      map[protocol.ReplicaID]*snapID{},
	}
}

// receive takes one MsgSnapshotChunk. When it completes a snapshot (or starts one the
// engine would not install), receive returns the MsgSnapshot to step, as if it had come in
// one frame; its Data belongs to the caller.
func (a *chunkAssembler) receive(m *protocol.Message, now uint64) (protocol.Message, bool) {
	total, off, crc, part, err := parseChunkPrefix(m.Data)
	switch {
	case err != nil:
	case total == 0 || len(part) == 0:
		err = fmt.Errorf("empty chunk (total %d, %d bytes)", total, len(part))
	case total > a.maxTotal:
		err = fmt.Errorf("claimed snapshot size %d is above the limit of %d bytes", total, a.maxTotal)
	case off >= total || uint64(len(part)) > total-off:
		err = fmt.Errorf("chunk [%d, %d) lies beyond the snapshot's %d bytes", off, off+uint64(len(part)), total)
	}
	if err != nil {
		a.log.Warn("dropping a snapshot chunk", "from", m.From, "reason", err)
		return protocol.Message{}, false
	}
	if d := a.done[m.From]; d != nil && d.matches(m, total, crc) {
		a.send(d.ackMsg(a.self, m.From, total)) // its last ack was lost: done
		return protocol.Message{}, false
	}
	as := a.in[m.From]
	if as == nil || !as.id.matches(m, total, crc) {
		id := newSnapID(m, total, crc)
		if off != 0 {
			// Not the start of a snapshot: the rest of one whose start this replica lost
			// (it restarted, or dropped it) or of an earlier transfer. Ask for offset 0.
			a.log.Debug("snapshot chunk without its beginning", "from", m.From, "offset", off, "bytes", total)
			a.send(id.ackMsg(a.self, m.From, 0))
			return protocol.Message{}, false
		}
		if as != nil {
			a.log.Info("restarting snapshot reassembly: the peer sends another snapshot", "from", m.From,
				"had", len(as.buf), "of", as.id.total, "frontier", fmt.Sprint(m.Deps))
		}
		delete(a.in, m.From)
		whole := withoutData(m, nil)
		whole.Type = protocol.MsgSnapshot
		as = &assembly{id: id, msg: whole}
		a.in[m.From] = as
	}
	if a.ahead != nil && !a.ahead(as.id.hdr.Deps) {
		// Not needed (any more: another peer's snapshot may have been installed
		// meanwhile): step it now without Data, which changes nothing for the engine, and
		// tell the sender to stop.
		delete(a.in, m.From)
		a.done[m.From] = &as.id
		a.send(as.id.ackMsg(a.self, m.From, total))
		return as.msg, true
	}
	as.last = now
	if have := uint64(len(as.buf)); off == have {
		as.buf = appendBounded(as.buf, part, total)
	} else {
		// Out of order: a gap (a chunk was lost; the sender goes back after a while) or a
		// chunk this replica has (sent again). The ack says where to go on from.
		a.log.Debug("out-of-order snapshot chunk", "from", m.From, "offset", off, "have", have)
	}
	have := uint64(len(as.buf))
	if have < total {
		a.send(as.id.ackMsg(a.self, m.From, have))
		return protocol.Message{}, false
	}
	delete(a.in, m.From)
	if sum := crc32.Checksum(as.buf, crc32c); sum != as.id.crc {
		// Not acknowledged: the sender goes back, finds nothing here, and starts again.
		a.log.Warn("dropping a reassembled snapshot: checksum mismatch", "from", m.From, "bytes", total,
			"crc", sum, "want", as.id.crc)
		return protocol.Message{}, false
	}
	a.done[m.From] = &as.id
	a.send(as.id.ackMsg(a.self, m.From, total))
	whole := as.msg
	whole.Data = as.buf
	return whole, true
}

// tick drops the bytes of snapshots whose sender has been silent for idleTicks.
func (a *chunkAssembler) tick(now uint64) {
	for from, as := range a.in {
		if now-as.last >= a.idleTicks {
			delete(a.in, from)
			a.log.Warn("dropping an incomplete snapshot: no chunk for a while", "from", from,
				"had", len(as.buf), "of", as.id.total, "ticks", now-as.last)
		}
	}
}

// appendBounded appends part to buf, growing it at most to total and at most to twice
// what it holds: memory follows the bytes received, not the size a peer claims.
func appendBounded(buf, part []byte, total uint64) []byte {
	if need := len(buf) + len(part); need > cap(buf) {
		nb := make([]byte, len(buf), max(need, min(2*cap(buf), int(total))))
		copy(nb, buf)
		buf = nb
	}
	return append(buf, part...)
}
