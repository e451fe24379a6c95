package transport

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"

	"github.com/parliament-lab/parliament/protocol"
	"github.com/parliament-lab/parliament/wire"
)

// FuzzReadChunks feeds arbitrary bytes, in reads of arbitrary sizes, to the connection
// reader and checks it against wire.ReadFrame on the same bytes: the same frames in the
// same order (whatever the read boundaries, chunking, buffer switches and large-frame
// path; only a refused header may cut the frames read with it), then an error of the
// same kind. A small maxFrame (3000 bytes against 64 KiB read
// buffers, and frames of up to 200 KiB when maxFrame allows) exercises both refusal and
// the large-frame path.
func FuzzReadChunks(f *testing.F) {
	m := protocol.Message{Type: protocol.MsgAccept, From: 1, To: 2, Data: bytes.Repeat([]byte("d"), 100)}
	one := wire.AppendMessageFrame(nil, &m)
	f.Add(bytes.Repeat(one, 3), uint8(7), false)
	f.Add(append(bytes.Repeat(one, 700), one[:50]...), uint8(0), false) // several buffers, a torn tail
	big := protocol.Message{Type: protocol.MsgAccept, From: 1, To: 2, Data: bytes.Repeat([]byte("b"), 100<<10)}
	f.Add(append(wire.AppendMessageFrame(nil, &big), one...), uint8(3), true) // larger than a read buffer
	f.Add([]byte{0, 0, 0, 0, 1}, uint8(1), false)                             // length 0
	f.Add([]byte{5, 0, 0, 0, 99, 1, 2, 3, 4}, uint8(1), false)                // unknown type
	f.Fuzz(func(t *testing.T, in []byte, step uint8, large bool) {
		maxFrame := 3000
		if large {
			maxFrame = 200 << 10
		}
		// What ReadFrame makes of the stream.
		var want [][]byte
		br := bufio.NewReader(bytes.NewReader(in))
		var wantErr error
		for {
			ft, payload, err := wire.ReadFrame(br, nil, maxFrame)
			if err != nil {
				wantErr = err
				break
			}
			want = append(want, append([]byte{byte(ft)}, payload...))
		}
		// What the connection reader delivers, reading at most step+1 bytes per Read.
		var r io.Reader = bytes.NewReader(in)
		if step < 255 {
			r = &limitedReads{r: r, n: int(step) + 1}
		}
		c := &conn{r: iotest.DataErrReader(r), done: make(chan struct{})}
		var got [][]byte
		err := c.readChunks(maxFrame, newBufPool(4), func(ch chunk) error {
			n := 0
			forFrames(ch.frames, func(ft wire.FrameType, payload []byte) error {
				got = append(got, append([]byte{byte(ft)}, payload...))
				n++
				return nil
			})
			if n != ch.n {
				t.Fatalf("chunk says %d frames, holds %d", ch.n, n)
			}
			if ch.buf != nil {
				ch.buf.unref()
			}
			return nil
		})
		// A refused header abandons the frames read with it (the connection is dropped
		// anyway), so the reader may deliver fewer frames, never others; on a stream that
		// ends cleanly or torn it delivers every complete frame.
		if len(got) > len(want) || (len(got) < len(want) && (errors.Is(wantErr, io.EOF) || errors.Is(wantErr, io.ErrUnexpectedEOF))) {
			t.Fatalf("reader delivered %d frames, ReadFrame reads %d (reader err %v, ReadFrame err %v)", len(got), len(want), err, wantErr)
		}
		for i := range got {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("frame %d differs", i)
			}
		}
		for _, kind := range []error{io.EOF, wire.ErrTruncated, wire.ErrTooLarge, wire.ErrUnknownType, wire.ErrMalformed} {
			if errors.Is(wantErr, kind) != errors.Is(err, kind) {
				t.Fatalf("reader error %v, ReadFrame error %v: not the same kind", err, wantErr)
			}
		}
	})
}

// limitedReads returns at most n bytes per Read.
type limitedReads struct {
	r io.Reader
	n int
}

func (l *limitedReads) Read(p []byte) (int, error) {
	if len(p) > l.n {
		p = p[:l.n]
	}
	return l.r.Read(p)
}
