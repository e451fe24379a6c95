package wire

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"runtime"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/parliament-lab/parliament/protocol"
)

// Decoders return nil for empty slices; encoders treat nil and empty alike. Non-empty byte
// slices are compared with bytes.Equal: cmp's element-wise reflection is far too slow for
// the 128 KiB values of the maximal samples.
var equateEmpty = cmp.Options{
	cmpopts.EquateEmpty(),
	cmp.FilterValues(func(a, b []byte) bool { return len(a)+len(b) > 0 }, cmp.Comparer(bytes.Equal)),
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// codec bundles one type's encoder and decoder for the generic tests below.
type codec[T any] struct {
	name    string
	samples map[string]T
	enc     func([]byte, *T) []byte
	dec     func([]byte, *T) error
}

func (c codec[T]) roundTrip(t *testing.T) {
	for _, name := range sortedKeys(c.samples) {
		t.Run(c.name+"/"+name, func(t *testing.T) {
			in := c.samples[name]
			b := c.enc(nil, &in)
			var out T
			if err := c.dec(b, &out); err != nil {
				t.Fatalf("decode: %v", err)
			}
			if diff := cmp.Diff(in, out, equateEmpty); diff != "" {
				t.Fatalf("round trip mismatch (-in +out):\n%s", diff)
			}
			// Canonical: re-encoding reproduces the bytes.
			if b2 := c.enc(nil, &out); !bytes.Equal(b, b2) {
				t.Fatalf("re-encoding differs:\n%x\n%x", b, b2)
			}
			// Appending after existing bytes leaves them alone and encodes the same.
			prefix := []byte("prefix")
			b3 := c.enc(append([]byte(nil), prefix...), &in)
			if !bytes.HasPrefix(b3, prefix) || !bytes.Equal(b3[len(prefix):], b) {
				t.Fatalf("append to non-empty dst changed the encoding")
			}
		})
	}
}

// truncations checks that every strict prefix and every extension of a valid encoding is
// refused with the right sentinel.
func (c codec[T]) truncations(t *testing.T) {
	for _, name := range sortedKeys(c.samples) {
		t.Run(c.name+"/"+name, func(t *testing.T) {
			in := c.samples[name]
			b := c.enc(nil, &in)
			step := 1
			if len(b) > 4096 { // the maximal samples are large; sample their prefixes
				step = 97
			}
			for n := 0; n < len(b); n += step {
				var out T
				err := c.dec(b[:n:n], &out)
				if !errors.Is(err, ErrTruncated) {
					t.Fatalf("prefix of %d/%d bytes: got %v, want ErrTruncated", n, len(b), err)
				}
			}
			var out T
			if err := c.dec(append(b[:len(b):len(b)], 0), &out); !errors.Is(err, ErrMalformed) {
				t.Fatalf("trailing byte: got %v, want ErrMalformed", err)
			}
		})
	}
}

func messageCodec() codec[protocol.Message] {
	return codec[protocol.Message]{"message", sampleMessages(), AppendMessage, DecodeMessage}
}
func commandCodec() codec[protocol.Command] {
	return codec[protocol.Command]{"command", sampleCommands(), AppendCommand, DecodeCommand}
}
func replyCodec() codec[protocol.Reply] {
	return codec[protocol.Reply]{"reply", sampleReplies(), AppendReply, DecodeReply}
}
func recordCodec() codec[protocol.Record] {
	return codec[protocol.Record]{"record", sampleRecords(), AppendRecord, DecodeRecord}
}

func TestRoundTrip(t *testing.T) {
	messageCodec().roundTrip(t)
	commandCodec().roundTrip(t)
	replyCodec().roundTrip(t)
	recordCodec().roundTrip(t)
}

func TestTruncation(t *testing.T) {
	messageCodec().truncations(t)
	commandCodec().truncations(t)
	replyCodec().truncations(t)
	recordCodec().truncations(t)
}

// TestOptionalFieldsCostNothing: unused Message fields take no bytes.
func TestOptionalFieldsCostNothing(t *testing.T) {
	if b := AppendMessage(nil, &protocol.Message{Type: protocol.MsgPrepare}); len(b) != 2 {
		t.Errorf("empty Prepare: %d bytes (%x), want 2", len(b), b)
	}
	hb := protocol.Message{Type: protocol.MsgHeartbeat, From: 1, To: 2, Ballot: protocol.Ballot{Round: 1, Replica: 1}, Index: 42}
	// type, bitmap (2 bytes: Index is bit 8), from, to, ballot (2), index.
	if b := AppendMessage(nil, &hb); len(b) != 8 {
		t.Errorf("Heartbeat: %d bytes (%x), want 8", len(b), b)
	}
	ok := protocol.Message{Type: protocol.MsgAccepted, OK: true}
	if b := AppendMessage(nil, &ok); !bytes.Equal(b, []byte{byte(protocol.MsgAccepted), fOK}) {
		t.Errorf("OK-only message: %x", b)
	}
}

// TestKnownEncoding pins the format of docs/wire.md so an accidental change shows up.
func TestKnownEncoding(t *testing.T) {
	cmd := protocol.Command{ClientID: 300, Seq: 1, Op: protocol.OpPut, Key: []byte("k"), Value: []byte("vv")}
	if got, want := AppendCommandFrame(nil, &cmd), []byte{
		11, 0, 0, 0, 2, // length 11 = type byte + 10 payload bytes; FrameRequest
		0xac, 0x02, // ClientID 300
		1,      // Seq
		2,      // OpPut
		1, 'k', // Key
		2, 'v', 'v', // Value
		0, // Old
	}; !bytes.Equal(got, want) {
		t.Errorf("command frame = %v, want %v", got, want)
	}
	m := protocol.Message{Type: protocol.MsgAccepted, From: 2, To: 1, Ballot: protocol.Ballot{Round: 1, Replica: 1},
		Inst: protocol.InstanceID{Num: 8}, OK: true}
	if got, want := AppendMessage(nil, &m), []byte{
		4,                                   // MsgAccepted
		fFrom | fTo | fBallot | fInst | fOK, // 0x37
		2, 1,                                // From, To
		1, 1, // Ballot
		0, 8, // Inst
	}; !bytes.Equal(got, want) {
		t.Errorf("Accepted = %v, want %v", got, want)
	}
	// A MsgSnapshotAck (docs/wire.md, state transfer): the fields of the snapshot it
	// answers, then Data = total 200 | have 128 | CRC-32C 0x01020304.
	ack := protocol.Message{Type: protocol.MsgSnapshotAck, From: 3, To: 1, Index: 9,
		Deps: []protocol.InstanceID{{Num: 9}}, Data: []byte{0xc8, 0x01, 0x80, 0x01, 4, 3, 2, 1}}
	if got, want := AppendMessage(nil, &ack), []byte{
		67,         // MsgSnapshotAck
		0x83, 0x26, // bitmap From|To|Index|Deps|Data = 0x1303
		3, 1, // From, To
		9,       // Index
		1, 0, 9, // Deps: one, replica 0, num 9
		8, 0xc8, 0x01, 0x80, 0x01, 4, 3, 2, 1, // Data: 8 bytes
	}; !bytes.Equal(got, want) {
		t.Errorf("SnapshotAck = %v, want %v", got, want)
	}
	rec := protocol.Record{Type: protocol.RecordBallot, Ballot: protocol.Ballot{Round: 4, Replica: 2}}
	if got, want := AppendRecord(nil, &rec), []byte{1, 4, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}; !bytes.Equal(got, want) {
		t.Errorf("ballot record = %v, want %v", got, want)
	}
}

func TestDecodeErrors(t *testing.T) {
	pa := preAccept64()
	valid := AppendMessage(nil, &pa)
	tests := []struct {
		name string
		dec  func([]byte) error
		in   []byte
		want error
		msg  string // substring of the error
	}{
		{"message/empty", decMsg, nil, ErrTruncated, "type"},
		{"message/type-0", decMsg, []byte{0, 0}, ErrUnknownType, "message type 0"},
		{"message/type-12", decMsg, []byte{12, 0}, ErrUnknownType, "message type 12"},
		{"message/type-68", decMsg, []byte{68, 0}, ErrUnknownType, "message type 68"},
		{"message/type-255", decMsg, []byte{255, 0}, ErrUnknownType, ""},
		{"message/unknown-field", decMsg, []byte{1, 0x80, 0x40}, ErrMalformed, "unknown fields"},
		{"message/overlong-bitmap", decMsg, []byte{1, 0x80, 0x00}, ErrMalformed, "overlong"},
		{"message/varint-overflow", decMsg, []byte{1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02}, ErrMalformed, "overflows 64"},
		{"message/from-zero", decMsg, []byte{1, fFrom, 0}, ErrMalformed, "from present but zero"},
		{"message/from-overflows", decMsg, []byte{1, fFrom, 0x80, 0x80, 0x80, 0x80, 0x10}, ErrMalformed, "overflows uint32"},
		{"message/ballot-zero", decMsg, []byte{1, fBallot, 0, 0}, ErrMalformed, "ballot present but zero"},
		{"message/inst-zero", decMsg, []byte{1, fInst, 0, 0}, ErrMalformed, "inst present but zero"},
		{"message/status-zero", decMsg, []byte{1, fStatus, 0}, ErrMalformed, "status present but zero"},
		{"message/status-unknown", decMsg, []byte{1, fStatus, 9}, ErrUnknownType, "status 9"},
		{"message/seq-zero", decMsg, []byte{1, 0x80, 0x01, 0}, ErrMalformed, "seq"},
		{"message/deps-empty", decMsg, []byte{1, 0x80, 0x04, 0}, ErrMalformed, "deps present but empty"},
		{"message/deps-huge-count", decMsg, []byte{1, 0x80, 0x04, 0xff, 0xff, 0xff, 0xff, 0x0f}, ErrTruncated, "cannot fit"},
		{"message/cmds-huge-count", decMsg, []byte{1, 0x80, 0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, ErrTruncated, "cannot fit"},
		{"message/insts-huge-count", decMsg, []byte{1, 0x80, 0x10, 0xff, 0xff, 0x03}, ErrTruncated, "cannot fit"},
		{"message/data-empty", decMsg, []byte{1, 0x80, 0x20, 0}, ErrMalformed, "data present but empty"},
		{"message/data-beyond-end", decMsg, []byte{1, 0x80, 0x20, 5, 'a'}, ErrTruncated, "length 5, 1 bytes left"},
		{"message/trailing", decMsg, append(valid[:len(valid):len(valid)], 1, 2, 3), ErrMalformed, "3 trailing bytes"},
		{"message/bad-op-inside", decMsg, []byte{1, 0x80, 0x08, 1, 0, 0, 7, 0, 0, 0}, ErrUnknownType, "op 7"},
		{"command/op-unknown", decCmd, []byte{1, 1, 4, 0, 0, 0}, ErrUnknownType, "op 4"},
		{"command/key-beyond-end", decCmd, []byte{1, 1, 1, 200, 1}, ErrTruncated, "key"},
		{"reply/result-unknown", decReply, []byte{1, 1, 5, 0, 0, 0}, ErrUnknownType, "result 5"},
		{"reply/leader-overflows", decReply, []byte{1, 1, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x7f, 0}, ErrMalformed, "leader"},
		{"record/type-0", decRec, []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, ErrUnknownType, "record type 0"},
		{"record/type-5", decRec, []byte{5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, ErrUnknownType, "record type 5"},
		{"record/status-unknown", decRec, []byte{2, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0}, ErrUnknownType, "status 5"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.dec(tt.in)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			if !strings.HasPrefix(err.Error(), "wire: decode ") || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("error %q lacks context %q", err, tt.msg)
			}
		})
	}
}

func decMsg(b []byte) error   { var m protocol.Message; return DecodeMessage(b, &m) }
func decCmd(b []byte) error   { var c protocol.Command; return DecodeCommand(b, &c) }
func decReply(b []byte) error { var r protocol.Reply; return DecodeReply(b, &r) }
func decRec(b []byte) error   { var r protocol.Record; return DecodeRecord(b, &r) }

// TestDecodeAliases documents the zero-copy contract: byte slices point into src, with
// their capacity clipped so that appending to them cannot overwrite src.
func TestDecodeAliases(t *testing.T) {
	c := protocol.Command{ClientID: 1, Seq: 1, Op: protocol.OpPut, Key: []byte("key"), Value: []byte("value")}
	b := AppendCommand(nil, &c)
	var out protocol.Command
	if err := DecodeCommand(b, &out); err != nil {
		t.Fatal(err)
	}
	b[bytes.Index(b, []byte("key"))] = 'K'
	if string(out.Key) != "Key" {
		t.Errorf("Key = %q: does not alias src", out.Key)
	}
	if cap(out.Key) != len(out.Key) {
		t.Errorf("cap(Key) = %d, want %d", cap(out.Key), len(out.Key))
	}
	_ = append(out.Key, 'X')
	if string(out.Value) != "value" {
		t.Errorf("append to Key overwrote Value: %q", out.Value)
	}
}

func TestEncodeAllocs(t *testing.T) {
	pa, acc := preAccept64(), mpAccept()
	rec := sampleRecords()["instance"]
	cmd, rep := sampleCommands()["cas"], sampleReplies()["ok"]
	buf := make([]byte, 0, 64<<10)
	for name, f := range map[string]func(){
		"message-frame": func() { buf = AppendMessageFrame(buf[:0], &pa); buf = AppendMessageFrame(buf, &acc) },
		"record":        func() { buf = AppendRecord(buf[:0], &rec) },
		"command-frame": func() { buf = AppendCommandFrame(buf[:0], &cmd) },
		"reply-frame":   func() { buf = AppendReplyFrame(buf[:0], &rep) },
	} {
		if n := testing.AllocsPerRun(100, f); n != 0 {
			t.Errorf("%s: %v allocs per encode, want 0", name, n)
		}
	}
}

func TestDecodeAllocs(t *testing.T) {
	pa := preAccept64()
	paB := AppendMessage(nil, &pa)
	batch := sampleMessages()["commit-batch"]
	batchB := AppendMessage(nil, &batch)
	rec := sampleRecords()["instance"]
	recB := AppendRecord(nil, &rec)
	cmd := sampleCommands()["cas"]
	cmdB := AppendCommand(nil, &cmd)
	var m protocol.Message
	var r protocol.Record
	var c protocol.Command
	for _, tt := range []struct {
		name string
		f    func() error
		max  float64
	}{
		{"preaccept64", func() error { return DecodeMessage(paB, &m) }, 2},     // Deps, Cmds
		{"commit-batch", func() error { return DecodeMessage(batchB, &m) }, 3}, // Insts, one Deps arena, one Cmds arena
		{"record", func() error { return DecodeRecord(recB, &r) }, 2},          // Deps, Cmds
		{"command", func() error { return DecodeCommand(cmdB, &c) }, 0},
	} {
		var err error
		n := testing.AllocsPerRun(100, func() { err = tt.f() })
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if n > tt.max {
			t.Errorf("%s: %v allocs per decode, want <= %v", tt.name, n, tt.max)
		}
	}
}

func TestFrames(t *testing.T) {
	var stream []byte
	msgs := sampleMessages()
	names := sortedKeys(msgs)
	for _, name := range names {
		m := msgs[name]
		stream = AppendMessageFrame(stream, &m)
	}
	cmd := sampleCommands()["cas"]
	stream = AppendCommandFrame(stream, &cmd)
	rep := sampleReplies()["ok"]
	stream = AppendReplyFrame(stream, &rep)
	rec := sampleRecords()["instance"]
	stream = AppendRecordFrame(stream, &rec)

	r := bufio.NewReaderSize(bytes.NewReader(stream), 64)
	buf := make([]byte, 0, 4096)
	for _, name := range names {
		typ, p, err := ReadFrame(r, buf, 0)
		if err != nil || typ != FrameMessage {
			t.Fatalf("%s: ReadFrame = %v, %v", name, typ, err)
		}
		var m protocol.Message
		if err := DecodeMessage(p, &m); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if diff := cmp.Diff(msgs[name], m, equateEmpty); diff != "" {
			t.Fatalf("%s: (-want +got)\n%s", name, diff)
		}
	}
	for _, want := range []FrameType{FrameRequest, FrameReply, FrameRecord} {
		typ, _, err := ReadFrame(r, buf, 0)
		if err != nil || typ != want {
			t.Fatalf("ReadFrame = %v, %v; want %v", typ, err, want)
		}
	}
	if _, _, err := ReadFrame(r, buf, 0); err != io.EOF {
		t.Fatalf("at end: %v, want io.EOF", err)
	}
}

func TestReadFrameUsesBuf(t *testing.T) {
	cmd := sampleCommands()["cas"]
	stream := AppendCommandFrame(nil, &cmd)
	buf := make([]byte, 0, 100)
	_, p, err := ReadFrame(bufio.NewReader(bytes.NewReader(stream)), buf, 0)
	if err != nil {
		t.Fatal(err)
	}
	if &p[0] != &buf[:1][0] {
		t.Errorf("payload not read into buf")
	}
	r := bufio.NewReader(bytes.NewReader(stream))
	if n := testing.AllocsPerRun(50, func() {
		r.Reset(bytes.NewReader(stream))
		_, _, err = ReadFrame(r, buf, 0)
	}); err != nil || n > 1 { // the bytes.Reader passed to Reset escapes
		t.Errorf("ReadFrame into buf: %v allocs, err %v", n, err)
	}
}

func TestReadFrameErrors(t *testing.T) {
	hdr := func(n uint32, typ byte) []byte {
		return []byte{byte(n), byte(n >> 8), byte(n >> 16), byte(n >> 24), typ}
	}
	tests := []struct {
		name string
		in   []byte
		max  int
		want []error
	}{
		{"partial-header", []byte{5, 0}, 0, []error{ErrTruncated, io.ErrUnexpectedEOF}},
		{"zero-length", hdr(0, 1), 0, []error{ErrMalformed}},
		{"too-large", hdr(101, 1), 100, []error{ErrTooLarge}},
		{"too-large-default", hdr(DefaultMaxFrame+1, 1), 0, []error{ErrTooLarge}},
		{"claims-4GiB", hdr(0xffffffff, 1), 0, []error{ErrTooLarge}},
		{"unknown-type-0", hdr(1, 0), 0, []error{ErrUnknownType}},
		{"unknown-type-9", hdr(1, 9), 0, []error{ErrUnknownType}},
		{"payload-cut", append(hdr(10, 1), 1, 2, 3), 0, []error{ErrTruncated, io.ErrUnexpectedEOF}},
		{"large-payload-cut", append(hdr(1<<20, 1), make([]byte, 200<<10)...), 0, []error{ErrTruncated}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := ReadFrame(bufio.NewReader(bytes.NewReader(tt.in)), nil, tt.max)
			for _, w := range tt.want {
				if !errors.Is(err, w) {
					t.Errorf("got %v, want %v", err, w)
				}
			}
		})
	}
}

// allocatedBytes returns the bytes f allocates on the heap.
func allocatedBytes(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestReadFrameMemoryBound: a header claiming a huge frame is refused from the header
// alone, and a frame that claims 16 MiB but delivers 100 KiB costs memory in proportion to
// the 100 KiB.
func TestReadFrameMemoryBound(t *testing.T) {
	var err error
	huge := []byte{0xff, 0xff, 0xff, 0x7f, 1}
	n := allocatedBytes(func() { _, _, err = ReadFrame(bufio.NewReader(bytes.NewReader(huge)), nil, 1<<20) })
	if !errors.Is(err, ErrTooLarge) {
		t.Fatal(err)
	}
	if n > 16<<10 { // the bufio buffer (4 KiB) and the error; never the claimed 2 GiB
		t.Errorf("refusing a too-large frame allocated %d bytes", n)
	}
	claim := []byte{0xff, 0xff, 0xff, 0x00, 1} // 16 MiB - 1
	stalled := append(claim, make([]byte, 100<<10)...)
	n = allocatedBytes(func() { _, _, err = ReadFrame(bufio.NewReader(bytes.NewReader(stalled)), nil, 0) })
	if !errors.Is(err, ErrTruncated) {
		t.Fatal(err)
	}
	if n > 1<<20 {
		t.Errorf("a 16 MiB claim with 100 KiB delivered allocated %d bytes", n)
	}
}

// TestReadFrameLarge reads a frame bigger than the chunk size through the growing path.
func TestReadFrameLarge(t *testing.T) {
	m := sampleMessages()["maximal"]
	stream := AppendMessageFrame(nil, &m)
	typ, p, err := ReadFrame(bufio.NewReader(bytes.NewReader(stream)), make([]byte, 0, 10), 0)
	if err != nil || typ != FrameMessage {
		t.Fatal(typ, err)
	}
	if !bytes.Equal(p, stream[HeaderSize:]) {
		t.Fatal("payload differs")
	}
}

// MessageAliases is true for every sample message that carries commands, instances or
// data, and false for the others.
func TestMessageAliases(t *testing.T) {
	for name, m := range sampleMessages() {
		b := AppendMessage(nil, &m)
		want := m.Cmds != nil || m.Insts != nil || m.Data != nil
		if got := MessageAliases(b); got != want {
			t.Errorf("%s: MessageAliases = %v, want %v", name, got, want)
		}
	}
	if !MessageAliases(nil) || !MessageAliases([]byte{byte(protocol.MsgAccept)}) {
		t.Errorf("a payload too short to tell must report true")
	}
}

// FuzzMessageAliases: a payload that MessageAliases calls free of aliases decodes (when it
// decodes) into a message with no byte slices, so a receiver may drop its buffer.
func FuzzMessageAliases(f *testing.F) {
	for _, m := range sampleMessages() {
		f.Add(AppendMessage(nil, &m))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var m protocol.Message
		if DecodeMessage(in, &m) != nil || MessageAliases(in) {
			return
		}
		if m.Cmds != nil || m.Insts != nil || m.Data != nil {
			t.Fatalf("MessageAliases(%x) = false, but it decodes to %v with slices", in, m)
		}
	})
}
