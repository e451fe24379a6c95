package wire

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/parliament-lab/parliament/protocol"
)

// FrameType says what a frame's payload is.
type FrameType uint8

const (
	FrameMessage FrameType = 1 // payload: one protocol.Message
	FrameRequest FrameType = 2 // payload: one protocol.Command (client -> replica)
	FrameReply   FrameType = 3 // payload: one protocol.Reply   (replica -> client)
	FrameRecord  FrameType = 4 // payload: one protocol.Record  (WAL)
	frameLast    FrameType = 5
)

// Valid reports whether t is a frame type this version knows.
func (t FrameType) Valid() bool { return t > 0 && t < frameLast }

func (t FrameType) String() string {
	switch t {
	case FrameMessage:
		return "message"
	case FrameRequest:
		return "request"
	case FrameReply:
		return "reply"
	case FrameRecord:
		return "record"
	}
	return fmt.Sprintf("frame(%d)", uint8(t))
}

// HeaderSize is the size of a frame header: uint32 LE length, uint8 type. The length
// counts the type byte and the payload, not itself.
const HeaderSize = 5

// DefaultMaxFrame is the largest frame (type byte + payload) ReadFrame accepts when given
// a max <= 0.
const DefaultMaxFrame = 16 << 20

// BeginFrame appends a frame header of type t with a placeholder length to dst. Append the
// payload to out, then call EndFrame(out, start).
func BeginFrame(dst []byte, t FrameType) (out []byte, start int) {
	start = len(dst)
	return append(dst, 0, 0, 0, 0, byte(t)), start
}

// EndFrame patches the length of the frame that BeginFrame started at start. It panics if
// the frame is longer than a uint32 can say (4 GiB): an encoder bug, not an input error.
func EndFrame(b []byte, start int) []byte {
	n := len(b) - start - 4
	if n < 1 || uint64(n) > math.MaxUint32 {
		panic(fmt.Sprintf("wire: EndFrame: frame length %d out of range", n))
	}
	le.PutUint32(b[start:], uint32(n))
	return b
}

// AppendMessageFrame appends a complete FrameMessage (header and payload) to dst.
func AppendMessageFrame(dst []byte, m *protocol.Message) []byte {
	dst, start := BeginFrame(dst, FrameMessage)
	return EndFrame(AppendMessage(dst, m), start)
}

// AppendCommandFrame appends a complete FrameRequest carrying c to dst.
func AppendCommandFrame(dst []byte, c *protocol.Command) []byte {
	dst, start := BeginFrame(dst, FrameRequest)
	return EndFrame(AppendCommand(dst, c), start)
}

// AppendReplyFrame appends a complete FrameReply carrying r to dst.
func AppendReplyFrame(dst []byte, r *protocol.Reply) []byte {
	dst, start := BeginFrame(dst, FrameReply)
	return EndFrame(AppendReply(dst, r), start)
}

// AppendRecordFrame appends a complete FrameRecord carrying r to dst.
func AppendRecordFrame(dst []byte, r *protocol.Record) []byte {
	dst, start := BeginFrame(dst, FrameRecord)
	return EndFrame(AppendRecord(dst, r), start)
}

// chunkSize bounds what ReadFrame allocates ahead of the bytes actually received for a
// frame that does not fit the caller's buffer: a peer that announces a large frame and
// then stalls or disconnects costs at most about twice what it sent plus this.
const chunkSize = 64 << 10

// ReadFrame reads one frame from r. The payload is read into buf when it fits its
// capacity (so the caller can reuse one buffer; the payload is valid until the next call
// that uses buf), otherwise into a new slice. A frame longer than max (type byte plus
// payload; max <= 0 means DefaultMaxFrame) fails with ErrTooLarge before anything is
// allocated or read past the header; an unknown frame type fails with ErrUnknownType. A
// clean end of stream before a frame starts returns io.EOF itself; an end of stream inside
// a frame returns an error matching both ErrTruncated and io.ErrUnexpectedEOF. After any
// error other than io.EOF the stream position is unspecified: close the connection.
func ReadFrame(r *bufio.Reader, buf []byte, max int) (t FrameType, payload []byte, err error) {
	if max <= 0 {
		max = DefaultMaxFrame
	}
	h, err := r.Peek(HeaderSize)
	if err != nil {
		if len(h) == 0 && err == io.EOF {
			return 0, nil, io.EOF
		}
		return 0, nil, readErr("frame header", err)
	}
	n := le.Uint32(h)
	t = FrameType(h[4])
	if n == 0 {
		return 0, nil, fmt.Errorf("wire: read frame: length 0 leaves no room for the type: %w", ErrMalformed)
	}
	if uint64(n) > uint64(max) {
		return 0, nil, fmt.Errorf("wire: read frame: length %d exceeds maximum %d: %w", n, max, ErrTooLarge)
	}
	if !t.Valid() {
		return 0, nil, fmt.Errorf("wire: read frame: frame type %d: %w", uint8(t), ErrUnknownType)
	}
	if _, err := r.Discard(HeaderSize); err != nil {
		return 0, nil, readErr("frame header", err) // cannot happen after a successful Peek
	}
	size := int(n) - 1
	switch {
	case size <= cap(buf):
		payload = buf[:size]
	case size <= chunkSize:
		payload = make([]byte, size)
	default:
		// Grow while reading so that memory follows the bytes that really arrive.
		payload = make([]byte, 0, chunkSize)
		for len(payload) < size {
			if len(payload) == cap(payload) {
				payload = append(payload, 0)[:len(payload)]
			}
			m := min(cap(payload), size)
			k, err := io.ReadFull(r, payload[len(payload):m])
			payload = payload[:len(payload)+k]
			if err != nil {
				return 0, nil, readErr("frame payload", err)
			}
		}
		return t, payload, nil
	}
	if _, err := io.ReadFull(r, payload); err != nil {
		return 0, nil, readErr("frame payload", err)
	}
	return t, payload, nil
}

func readErr(what string, err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("wire: read %s: %w (%w)", what, ErrTruncated, io.ErrUnexpectedEOF)
	}
	return fmt.Errorf("wire: read %s: %w", what, err)
}
