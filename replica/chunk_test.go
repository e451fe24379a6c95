package replica

import (
	"bytes"
	"hash/crc32"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/parliament-lab/parliament/config"
	"github.com/parliament-lab/parliament/protocol"
	"github.com/parliament-lab/parliament/wire"
)

// outbox collects what a chunk sender or assembler sends, as copies (the sender reuses
// its chunk buffer once Send returns, as the transports allow).
type outbox struct{ msgs []protocol.Message }

func (o *outbox) send(m protocol.Message) {
	m.Data = bytes.Clone(m.Data)
	o.msgs = append(o.msgs, m)
}

func (o *outbox) take() []protocol.Message {
	out := o.msgs
	o.msgs = nil
	return out
}

// prefixOf parses a chunk's or ack's Data, failing the test on a bad prefix.
func prefixOf(t *testing.T, m protocol.Message) (total, off uint64, crc uint32, rest []byte) {
	t.Helper()
	total, off, crc, rest, err := parseChunkPrefix(m.Data)
	if err != nil {
		t.Fatalf("%v: %v", m.Type, err)
	}
	return total, off, crc, rest
}

func testLogger(buf *bytes.Buffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// A Multi-Paxos-like snapshot header (Index, VBallot, Deps) and an EPaxos-like one (Deps).
func mpSnapshot(to protocol.ReplicaID, index uint64, data []byte) protocol.Message {
	return protocol.Message{Type: protocol.MsgSnapshot, From: 1, To: to, Index: index,
		VBallot: protocol.Ballot{Round: 3, Replica: 1}, Deps: []protocol.InstanceID{{Num: index}}, Data: data}
}

func testBytes(seed uint64, n int) []byte {
	rng := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// TestChunkAssembler: the receiver's reassembly, one case per situation a sender, a
// reconnect or a bad peer can produce. Snapshot A is 1000 bytes in chunks of 300.
func TestChunkAssembler(t *testing.T) {
	dataA, dataB := testBytes(1, 1000), testBytes(2, 700)
	crcA, crcB := crc32.Checksum(dataA, crc32c), crc32.Checksum(dataB, crc32c)
	hdrA, hdrB := mpSnapshot(2, 40, nil), mpSnapshot(2, 90, nil)
	chunk := func(h protocol.Message, total, off uint64, crc uint32, part []byte) protocol.Message {
		c := h
		c.Type = protocol.MsgSnapshotChunk
		c.Data = appendChunkPrefix(nil, total, off, crc)
		c.Data = append(c.Data, part...)
		return c
	}
	a := func(i int) protocol.Message { // chunk i of A
		off := i * 300
		return chunk(hdrA, 1000, uint64(off), crcA, dataA[off:min(off+300, 1000)])
	}
	b := func(i int) protocol.Message {
		off := i * 300
		return chunk(hdrB, 700, uint64(off), crcB, dataB[off:min(off+300, 700)])
	}
	raw := func(h protocol.Message, data []byte) protocol.Message {
		c := h
		c.Type, c.Data = protocol.MsgSnapshotChunk, data
		return c
	}
	none := int64(-1)
	tests := []struct {
		name     string
		chunks   []protocol.Message
		acks     []int64 // the ack sent after each chunk (have), none = no ack
		want     []byte  // the Data of the MsgSnapshot stepped after the last chunk; nil: none
		wantHdr  protocol.Message
		notAhead bool
		// notAheadFrom: the engine stops wanting the snapshot at this chunk (0 = never)
		notAheadFrom int
		log          string // a substring of the log
	}{
		{name: "in-order", chunks: []protocol.Message{a(0), a(1), a(2), a(3)},
			acks: []int64{300, 600, 900, 1000}, want: dataA, wantHdr: hdrA},
		{name: "reconnect-restarts-from-zero", chunks: []protocol.Message{a(0), a(1), a(0), a(1), a(2), a(3)},
			acks: []int64{300, 600, 600, 600, 900, 1000}, want: dataA, wantHdr: hdrA},
		{name: "start-lost-asks-for-zero", chunks: []protocol.Message{a(2), a(0), a(1), a(2), a(3)},
			acks: []int64{0, 300, 600, 900, 1000}, want: dataA, wantHdr: hdrA},
		{name: "newer-snapshot-resets", chunks: []protocol.Message{a(0), a(1), b(0), b(1), b(2)},
			acks: []int64{300, 600, 300, 600, 700}, want: dataB, wantHdr: hdrB, log: "restarting snapshot reassembly"},
		{name: "other-snapshot-mid-stream-ignored", chunks: []protocol.Message{a(0), b(1), a(1), a(2), a(3)},
			acks: []int64{300, 0, 600, 900, 1000}, want: dataA, wantHdr: hdrA},
		{name: "gap-then-resend", chunks: []protocol.Message{a(0), a(2), a(3), a(1), a(2), a(3)},
			acks: []int64{300, 300, 300, 600, 900, 1000}, want: dataA, wantHdr: hdrA, log: "out-of-order"},
		{name: "overlapping-dropped", chunks: []protocol.Message{a(0), chunk(hdrA, 1000, 150, crcA, dataA[150:450]), a(1), a(2), a(3)},
			acks: []int64{300, 300, 600, 900, 1000}, want: dataA, wantHdr: hdrA},
		{name: "done-acked-again", chunks: []protocol.Message{a(0), a(1), a(2), a(3), a(3), a(0)},
			acks: []int64{300, 600, 900, 1000, 1000, 1000}, want: dataA, wantHdr: hdrA},
		{name: "bad-prefix", chunks: []protocol.Message{raw(hdrA, []byte{0x80})},
			acks: []int64{none}, log: "bad chunk prefix"},
		{name: "no-checksum", chunks: []protocol.Message{raw(hdrA, []byte{10, 0, 1, 2})},
			acks: []int64{none}, log: "bad chunk prefix: checksum"},
		{name: "empty-chunk", chunks: []protocol.Message{chunk(hdrA, 1000, 0, crcA, nil)},
			acks: []int64{none}, log: "empty chunk"},
		{name: "offset-beyond-total", chunks: []protocol.Message{chunk(hdrA, 1000, 1000, crcA, []byte{1})},
			acks: []int64{none}, log: "beyond the snapshot"},
		{name: "bytes-beyond-total", chunks: []protocol.Message{chunk(hdrA, 1000, 900, crcA, make([]byte, 101))},
			acks: []int64{none}, log: "beyond the snapshot"},
		{name: "oversized-total", chunks: []protocol.Message{chunk(hdrA, 9<<30, 0, crcA, dataA[:300])},
			acks: []int64{none}, log: "above the limit"},
		{name: "checksum-mismatch", chunks: []protocol.Message{
			chunk(hdrA, 1000, 0, crcA^1, dataA[:500]), chunk(hdrA, 1000, 500, crcA^1, dataA[500:])},
			acks: []int64{500, none}, log: "checksum mismatch"},
		{name: "not-ahead-stepped-at-once", chunks: []protocol.Message{a(0), a(1)}, notAhead: true,
			acks: []int64{1000, 1000}, want: []byte{}, wantHdr: hdrA},
		{name: "not-ahead-any-more", chunks: []protocol.Message{a(0), a(1), a(2)}, notAheadFrom: 2,
			acks: []int64{300, 600, 1000}, want: []byte{}, wantHdr: hdrA},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			var out outbox
			asm := newChunkAssembler(2, time.Millisecond, out.send, testLogger(&logs))
			if tt.notAhead {
				asm.ahead = func([]protocol.InstanceID) bool { return false }
			}
			var got *protocol.Message
			for i, c := range tt.chunks {
				if tt.notAheadFrom > 0 && i == tt.notAheadFrom {
					asm.ahead = func([]protocol.InstanceID) bool { return false }
				}
				c.From, c.To = 1, 2
				whole, ok := asm.receive(&c, uint64(i))
				if ok {
					if got != nil && !tt.notAhead {
						t.Fatalf("chunk %d: a second snapshot completed", i)
					}
					got = &whole
				}
				acks := out.take()
				switch {
				case tt.acks[i] == none && len(acks) != 0:
					t.Fatalf("chunk %d: acks %v, want none", i, acks)
				case tt.acks[i] != none && len(acks) != 1:
					t.Fatalf("chunk %d: %d acks, want one with %d", i, len(acks), tt.acks[i])
				case tt.acks[i] != none:
					ack := acks[0]
					_, have, _, rest := prefixOf(t, ack)
					if ack.Type != protocol.MsgSnapshotAck || ack.From != 2 || ack.To != 1 || have != uint64(tt.acks[i]) || len(rest) != 0 {
						t.Fatalf("chunk %d: ack %v have %d, want have %d from 2 to 1", i, ack, have, tt.acks[i])
					}
					if !slices.Equal(ack.Deps, c.Deps) || ack.Index != c.Index || ack.VBallot != c.VBallot {
						t.Fatalf("chunk %d: ack fields %v do not name the chunk's snapshot %v", i, ack, c)
					}
				}
			}
			switch {
			case tt.want == nil && got != nil:
				t.Fatalf("a snapshot of %d bytes was stepped, want none", len(got.Data))
			case tt.want != nil && got == nil:
				t.Fatalf("no snapshot stepped")
			case tt.want != nil:
				if got.Type != protocol.MsgSnapshot || got.From != 1 || got.To != 2 || got.Index != tt.wantHdr.Index ||
					got.VBallot != tt.wantHdr.VBallot || !slices.Equal(got.Deps, tt.wantHdr.Deps) {
					t.Fatalf("stepped %v, want the fields of %v", got, tt.wantHdr)
				}
				if !bytes.Equal(got.Data, tt.want) {
					t.Fatalf("reassembled %d bytes differ from the %d sent", len(got.Data), len(tt.want))
				}
			}
			if tt.log != "" && !strings.Contains(logs.String(), tt.log) {
				t.Fatalf("log lacks %q:\n%s", tt.log, logs.String())
			}
			if !slices.ContainsFunc(tt.acks, func(a int64) bool { return a != none }) && len(asm.in) > 0 {
				t.Fatalf("a refused chunk started an assembly")
			}
		})
	}
}

// TestChunkAssemblerMemory: the buffer follows the bytes received, not the claimed size,
// and an assembly whose sender goes silent is dropped.
func TestChunkAssemblerMemory(t *testing.T) {
	var logs bytes.Buffer
	var out outbox
	asm := newChunkAssembler(2, time.Millisecond, out.send, testLogger(&logs))
	m := mpSnapshot(2, 5, nil)
	m.Type, m.From = protocol.MsgSnapshotChunk, 1
	m.Data = append(appendChunkPrefix(nil, 1<<32, 0, 7), make([]byte, 1000)...)
	if _, ok := asm.receive(&m, 1); ok {
		t.Fatal("completed")
	}
	if c := cap(asm.in[1].buf); c > 2000 {
		t.Fatalf("a 1000-byte chunk of a claimed 4 GiB snapshot allocated %d bytes", c)
	}
	asm.tick(1 + asm.idleTicks - 1)
	if asm.in[1] == nil {
		t.Fatal("dropped too early")
	}
	asm.tick(1 + asm.idleTicks)
	if asm.in[1] != nil || !strings.Contains(logs.String(), "dropping an incomplete snapshot") {
		t.Fatalf("a silent sender's bytes were kept (log:\n%s)", logs.String())
	}
}

// senderFixture is a chunk sender with 100-byte chunks and known tick thresholds.
func senderFixture(logs *bytes.Buffer) (*chunkSender, *outbox) {
	var out outbox
	s := newChunkSender(1, config.MinMaxFrame, 10*time.Millisecond, out.send, testLogger(logs))
	s.chunkCap = 100
	return s, &out
}

func ackOf(t *testing.T, c protocol.Message, have uint64) protocol.Message {
	t.Helper()
	total, _, crc, _ := prefixOf(t, c)
	id := newSnapID(&c, total, crc)
	return id.ackMsg(c.To, c.From, have)
}

func offsets(t *testing.T, msgs []protocol.Message) []uint64 {
	t.Helper()
	var offs []uint64
	for _, m := range msgs {
		if m.Type != protocol.MsgSnapshotChunk {
			t.Fatalf("sent %v, want chunks", m.Type)
		}
		_, off, _, _ := prefixOf(t, m)
		offs = append(offs, off)
	}
	return offs
}

// TestChunkSender: the window, acks, resumption on an engine retry, resending after a
// stall, going back when the receiver lost its bytes, abandonment.
func TestChunkSender(t *testing.T) {
	data := testBytes(3, 1050) // 11 chunks of 100 (the last 50)
	snap := mpSnapshot(2, 40, data)
	// acked starts a transfer of snap and acknowledges have bytes of it at tick 1: where
	// the stall, rewind and abandon cases start. It returns the first chunk sent.
	acked := func(t *testing.T, logs *bytes.Buffer, have uint64) (*chunkSender, *outbox, protocol.Message) {
		s, out := senderFixture(logs)
		m := snap
		s.offer(&m, 0)
		c := out.take()[0]
		s.ack(ptr(ackOf(t, c, have)), 1)
		out.take()
		return s, out, c
	}
	t.Run("window-and-acks", func(t *testing.T) {
		var logs bytes.Buffer
		s, out := senderFixture(&logs)
		m := snap
		s.offer(&m, 0)
		sent := out.take()
		if got := offsets(t, sent); !slices.Equal(got, []uint64{0, 100, 200, 300}) {
			t.Fatalf("first window %v, want 4 chunks", got)
		}
		c := sent[0]
		total, _, crc, part := prefixOf(t, c)
		if c.From != 1 || c.To != 2 || c.Index != 40 || c.VBallot != snap.VBallot || !slices.Equal(c.Deps, snap.Deps) ||
			total != 1050 || crc != crc32.Checksum(data, crc32c) || !bytes.Equal(part, data[:100]) {
			t.Fatalf("chunk 0 = %v total %d crc %x, want the snapshot's fields and first 100 bytes", c, total, crc)
		}
		if n := len(wire.AppendMessageFrame(nil, &c)); n > config.MinMaxFrame {
			t.Fatalf("a chunk frame of %d bytes exceeds max_frame", n)
		}
		// An engine retry of the same snapshot does not restart it.
		s.offer(&m, 1)
		if len(out.take()) != 0 {
			t.Fatal("an engine retry sent chunks again")
		}
		s.ack(ptr(ackOf(t, c, 100)), 2)
		if got := offsets(t, out.take()); !slices.Equal(got, []uint64{400}) {
			t.Fatalf("after an ack of 100: sent %v, want [400]", got)
		}
		s.ack(ptr(ackOf(t, c, 500)), 3)
		if got := offsets(t, out.take()); !slices.Equal(got, []uint64{500, 600, 700, 800}) {
			t.Fatalf("after an ack of 500: sent %v", got)
		}
		s.ack(ptr(ackOf(t, c, 900)), 4)
		if got := offsets(t, out.take()); !slices.Equal(got, []uint64{900, 1000}) {
			t.Fatalf("after an ack of 900: sent %v", got)
		}
		// An ack of another snapshot changes nothing.
		other := mpSnapshot(2, 41, nil)
		other.Type, other.From, other.To = protocol.MsgSnapshotChunk, 1, 2
		other.Data = appendChunkPrefix(nil, 1050, 0, crc)
		s.ack(ptr(ackOf(t, other, 1050)), 5)
		if s.out[2] == nil {
			t.Fatal("an ack of another snapshot ended the transfer")
		}
		s.ack(ptr(ackOf(t, c, 1050)), 5)
		if s.out[2] != nil || len(out.take()) != 0 || !strings.Contains(logs.String(), "snapshot sent in chunks") {
			t.Fatalf("transfer not finished by the last ack:\n%s", logs.String())
		}
	})
	t.Run("stall-resends-from-acked", func(t *testing.T) {
		var logs bytes.Buffer
		s, out, _ := acked(t, &logs, 200)
		s.tick(1 + s.resendTicks - 1)
		if len(out.take()) != 0 {
			t.Fatal("resent before resendTicks")
		}
		s.tick(1 + s.resendTicks)
		if got := offsets(t, out.take()); !slices.Equal(got, []uint64{200, 300, 400, 500}) {
			t.Fatalf("after a stall: sent %v, want the window from 200 again", got)
		}
	})
	t.Run("receiver-lost-its-bytes", func(t *testing.T) {
		var logs bytes.Buffer
		s, out, c := acked(t, &logs, 400)
		s.ack(ptr(ackOf(t, c, 0)), 2)
		if got := offsets(t, out.take()); !slices.Equal(got, []uint64{0, 100, 200, 300}) {
			t.Fatalf("after an ack of 0: sent %v, want the window from 0", got)
		}
	})
	t.Run("abandon-then-resume-where-receiver-is", func(t *testing.T) {
		var logs bytes.Buffer
		s, out, c := acked(t, &logs, 300)
		for now := uint64(2); now <= 1+s.abandonTicks; now++ {
			s.tick(now)
		}
		out.take()
		if s.out[2] != nil || !strings.Contains(logs.String(), "abandoning a snapshot transfer") {
			t.Fatalf("transfer without progress not abandoned:\n%s", logs.String())
		}
		// The engine sends the snapshot again: the transfer starts at 0, the receiver
		// answers that it holds 300 bytes, the sender goes on from there.
		now := 2 + s.abandonTicks
		m := snap
		s.offer(&m, now)
		if got := offsets(t, out.take()); !slices.Equal(got, []uint64{0, 100, 200, 300}) {
			t.Fatalf("restarted transfer sent %v", got)
		}
		s.ack(ptr(ackOf(t, c, 300)), now)
		if got := offsets(t, out.take()); !slices.Equal(got, []uint64{400, 500, 600}) {
			t.Fatalf("after the receiver said 300: sent %v, want [400 500 600]", got)
		}
	})
	t.Run("newer-snapshot-replaces", func(t *testing.T) {
		var logs bytes.Buffer
		s, out := senderFixture(&logs)
		m := snap
		s.offer(&m, 0)
		out.take()
		// A newer snapshot waits while the transfer of the older one makes progress...
		newer := mpSnapshot(2, 80, testBytes(4, 500))
		s.offer(&newer, 1)
		if sent := out.take(); len(sent) != 0 || s.out[2].id.hdr.Index != 40 {
			t.Fatalf("a newer snapshot interrupted a transfer under way (sent %d chunks)", len(sent))
		}
		// ...and replaces it once it is stalled.
		s.offer(&newer, s.resendTicks)
		sent := out.take()
		if got := offsets(t, sent); !slices.Equal(got, []uint64{0, 100, 200, 300}) || sent[0].Index != 80 {
			t.Fatalf("newer snapshot: sent %v (index %d)", got, sent[0].Index)
		}
		// A small snapshot sent as one message cancels the transfer.
		s.cancel(2)
		if s.out[2] != nil {
			t.Fatal("cancel kept the transfer")
		}
	})
}

func ptr[T any](v T) *T { return &v }

// TestChunkTransferLossy runs a sender and an assembler against each other over a FIFO
// link that drops chunks and acks at random, with engine retries: the snapshot arrives
// whole, exactly once, and the window is never exceeded.
func TestChunkTransferLossy(t *testing.T) {
	for seed := uint64(1); seed <= 20; seed++ {
		rng := rand.New(rand.NewPCG(seed, 7))
		data := testBytes(seed, 5000+rng.IntN(20000))
		var logs bytes.Buffer
		var toRecv, toSend outbox
		s := newChunkSender(1, config.MinMaxFrame, 10*time.Millisecond, toRecv.send, testLogger(&logs))
		s.chunkCap = 500 + rng.IntN(1000)
		asm := newChunkAssembler(2, 10*time.Millisecond, toSend.send, testLogger(&logs))
		loss := 0.3 * rng.Float64()
		m := mpSnapshot(2, 7, data)
		var got [][]byte
		now, chunks := uint64(0), 0
		s.offer(&m, now)
		for ; now < 20000 && s.out[2] != nil; now++ {
			for _, c := range toRecv.take() {
				chunks++
				_, off, _, _ := prefixOf(t, c)
				if tr := s.out[2]; tr != nil && off >= tr.acked+chunkWindow*tr.chunk {
					t.Fatalf("seed %d: chunk at %d sent with %d acknowledged: beyond the window", seed, off, tr.acked)
				}
				if rng.Float64() < loss {
					continue
				}
				c.From, c.To = 1, 2
				if whole, ok := asm.receive(&c, now); ok {
					got = append(got, whole.Data)
				}
			}
			for _, a := range toSend.take() {
				if rng.Float64() < loss {
					continue
				}
				s.ack(&a, now)
			}
			s.tick(now)
			asm.tick(now)
			if now%50 == 0 { // the engine's retry
				mm := m
				s.offer(&mm, now)
			}
		}
		t.Logf("seed %d: %d bytes, chunks of %d, loss %.2f: %d ticks, %d chunks sent", seed, len(data), s.chunkCap, loss, now, chunks)
		if len(got) != 1 || !bytes.Equal(got[0], data) {
			t.Fatalf("seed %d (loss %.2f, chunk %d): %d snapshots reassembled after %d ticks, want the one sent\n%s",
				seed, loss, s.chunkCap, len(got), now, logs.String())
		}
	}
}

// FuzzChunkAssembler: arbitrary chunk Data never panics the receiver, never makes it hold
// more than it received, and a snapshot it hands out matches the checksum it was sent with.
func FuzzChunkAssembler(f *testing.F) {
	whole := []byte("0123456789")
	crc := crc32.Checksum(whole, crc32c)
	f.Add(append(appendChunkPrefix(nil, 10, 0, crc), whole[:6]...), append(appendChunkPrefix(nil, 10, 6, crc), whole[6:]...))
	f.Add(append(appendChunkPrefix(nil, 10, 0, crc), whole...), []byte{})
	f.Add(appendChunkPrefix(nil, 1<<40, 0, 0), []byte{0x80})
	f.Fuzz(func(t *testing.T, a, b []byte) {
		asm := newChunkAssembler(2, time.Millisecond, func(protocol.Message) {}, slog.New(slog.DiscardHandler))
		received := 0
		for i, d := range [][]byte{a, b, a, b} {
			m := protocol.Message{Type: protocol.MsgSnapshotChunk, From: 1, To: 2, Data: d}
			received += len(d)
			got, ok := asm.receive(&m, uint64(i))
			if ok && len(got.Data) > 0 {
				total, _, sum, _, err := parseChunkPrefix(d)
				if err != nil || uint64(len(got.Data)) != total || crc32.Checksum(got.Data, crc32c) != sum {
					t.Fatalf("handed out %d bytes that do not match the chunks' total and checksum", len(got.Data))
				}
			}
			if as := asm.in[1]; as != nil && (cap(as.buf) > 2*received || uint64(len(as.buf)) > as.id.total) {
				t.Fatalf("holds %d bytes (cap %d) after receiving %d", len(as.buf), cap(as.buf), received)
			}
		}
	})
}
