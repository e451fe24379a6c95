package wire

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// The fuzz targets check, for arbitrary input, that decoding never panics, fails only with
// one of the sentinels, and, when it succeeds, that the encoding is canonical: re-encoding
// reproduces the input byte for byte and decodes to the same value.

func isSentinel(err error) bool {
	return errors.Is(err, ErrTruncated) || errors.Is(err, ErrTooLarge) ||
		errors.Is(err, ErrUnknownType) || errors.Is(err, ErrMalformed)
}

// seedable drops the very large samples, which slow the fuzzer down without covering more.
func seedable(b []byte) bool { return len(b) <= 8192 }

func fuzzCodec[T any](f *testing.F, c codec[T]) {
	for _, name := range sortedKeys(c.samples) {
		v := c.samples[name]
		if b := c.enc(nil, &v); seedable(b) {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var v T
		err := c.dec(in, &v)
		if err != nil {
			if !isSentinel(err) {
				t.Fatalf("error without sentinel: %v", err)
			}
			return
		}
		out := c.enc(nil, &v)
		if !bytes.Equal(in, out) {
			t.Fatalf("not canonical:\n in %x\nout %x", in, out)
		}
		var v2 T
		if err := c.dec(out, &v2); err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if diff := cmp.Diff(v, v2, equateEmpty); diff != "" {
			t.Fatalf("decode→encode→decode unstable:\n%s", diff)
		}
	})
}

func FuzzDecodeMessage(f *testing.F) { fuzzCodec(f, messageCodec()) }
func FuzzDecodeCommand(f *testing.F) { fuzzCodec(f, commandCodec()) }
func FuzzDecodeReply(f *testing.F)   { fuzzCodec(f, replyCodec()) }
func FuzzDecodeRecord(f *testing.F)  { fuzzCodec(f, recordCodec()) }

// FuzzReadFrame reads frames from an arbitrary stream until it fails, checking that each
// frame respects max, re-encodes to the bytes it was read from, and that a failure is io.EOF
// at a frame boundary or a sentinel.
func FuzzReadFrame(f *testing.F) {
	var stream []byte
	for _, name := range sortedKeys(sampleMessages()) {
		m := sampleMessages()[name]
		if b := AppendMessageFrame(nil, &m); seedable(b) {
			f.Add(b, uint16(0))
			stream = append(stream, b...)
		}
	}
	cmd := sampleCommands()["cas"]
	rep := sampleReplies()["ok"]
	rec := sampleRecords()["instance"]
	stream = AppendCommandFrame(stream, &cmd)
	stream = AppendReplyFrame(stream, &rep)
	stream = AppendRecordFrame(stream, &rec)
	f.Add(stream, uint16(0))
	f.Add(stream, uint16(100))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 1}, uint16(0))
	f.Add([]byte{3, 0, 0, 0, 2, 0}, uint16(0))
	f.Fuzz(func(t *testing.T, in []byte, max16 uint16) {
		max := int(max16)
		limit := max
		if max <= 0 {
			limit = DefaultMaxFrame
		}
		r := bufio.NewReaderSize(bytes.NewReader(in), 16)
		buf := make([]byte, 0, 32)
		consumed := 0
		for {
			typ, p, err := ReadFrame(r, buf, max)
			if err != nil {
				if err == io.EOF {
					if consumed != len(in) {
						t.Fatalf("io.EOF after %d of %d bytes", consumed, len(in))
					}
				} else if !isSentinel(err) {
					t.Fatalf("error without sentinel: %v", err)
				}
				return
			}
			if !typ.Valid() || len(p)+1 > limit {
				t.Fatalf("frame type %v, %d bytes accepted with max %d", typ, len(p), max)
			}
			var frame []byte
			frame, start := BeginFrame(frame, typ)
			frame = EndFrame(append(frame, p...), start)
			if !bytes.Equal(frame, in[consumed:consumed+len(frame)]) {
				t.Fatalf("frame at %d does not re-encode to its bytes", consumed)
			}
			consumed += len(frame)
			// Exercise the payload decoders as the transport would.
			var err2 error
			switch typ {
			case FrameMessage:
				err2 = decMsg(p)
			case FrameRequest:
				err2 = decCmd(p)
			case FrameReply:
				err2 = decReply(p)
			case FrameRecord:
				err2 = decRec(p)
			}
			if err2 != nil && !isSentinel(err2) {
				t.Fatalf("payload error without sentinel: %v", err2)
			}
		}
	})
}
