package transport

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/s2"
	"github.com/parliament-lab/parliament/wire"
)

const (
	// ioBufferSize is the buffer size of the benchmark's raw baseline and the point from
	// which a writer drops an oversized spare buffer.
	ioBufferSize = 64 << 10
	// readChunk is the size of the chunks connections are read into. Received payloads
	// stay in them (decoded messages alias them, and receivers own those), so a chunk is
	// never reused: a fresh one starts when less than readMin is left. Small enough that
	// a message an engine keeps for long does not pin much memory, large enough for one
	// read to bring in many frames.
	readChunk = 64 << 10
	readMin   = 4 << 10
	// maxBatch bounds the messages delivered in one batch, so that a fast sender cannot
	// starve the latency of the batch being built.
	maxBatch = 4096
	// s2BlockSize bounds what one s2 block (and so the decompression buffer) may be.
	s2BlockSize = 128 << 10
	// DefaultHandshakeTimeout bounds the whole handshake: a silent peer cannot pin a
	// goroutine for longer.
	DefaultHandshakeTimeout = 5 * time.Second
)

// errQueueFull is what a full send queue reports.
var errQueueFull = errors.New("transport: send queue full")

// sendQueue holds encoded frames waiting for one connection's writer. Senders encode
// directly into it (so they may reuse their memory at once and nothing is allocated per
// message); the writer swaps the whole buffer out and writes it with one call: while that
// write is in progress the next batch accumulates (natural batching, flush only when the
// queue is empty).
type sendQueue struct {
	mu       sync.Mutex
	buf      []byte
	n        int // frames in buf
	maxN     int
	maxBytes int
	closed   bool
	signal   chan struct{} // something was queued (capacity 1)
	space    chan struct{} // the writer took the queue (capacity 1); for senders that wait
	dropped  atomic.Uint64
	sent     atomic.Uint64
}

func newSendQueue(maxN, maxBytes int) *sendQueue {
	return &sendQueue{
		maxN:     maxN,
		maxBytes: maxBytes,
		signal:   make(chan struct{}, 1),
		space:    make(chan struct{}, 1),
	}
}

// push appends one frame produced by enc. It drops (returns errQueueFull) when the queue
// is full, and refuses a frame longer than maxFrame (the receiver would refuse it and drop
// the connection).
func (q *sendQueue) push(maxFrame int, enc func([]byte) []byte) error {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		q.dropped.Add(1)
		return ErrClosed
	}
	if q.n >= q.maxN || len(q.buf) >= q.maxBytes {
		q.mu.Unlock()
		q.dropped.Add(1)
		return errQueueFull
	}
	start := len(q.buf)
	q.buf = enc(q.buf)
	if size := len(q.buf) - start - 4; size > maxFrame {
		q.buf = q.buf[:start]
		q.mu.Unlock()
		q.dropped.Add(1)
		return fmt.Errorf("transport: frame of %d bytes exceeds MaxFrame %d: %w", size, maxFrame, wire.ErrTooLarge)
	}
	q.n++
	first := q.n == 1
	q.mu.Unlock()
	if first {
		select {
		case q.signal <- struct{}{}:
		default:
		}
	}
	return nil
}

// take swaps the queued bytes for spare (emptied) and returns them with their frame count.
func (q *sendQueue) take(spare []byte) ([]byte, int) {
	q.mu.Lock()
	out, n := q.buf, q.n
	q.buf, q.n = spare[:0], 0
	q.mu.Unlock()
	if n > 0 {
		q.sent.Add(uint64(n))
		select {
		case q.space <- struct{}{}:
		default:
		}
	}
	return out, n
}

func (q *sendQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.buf, q.n = nil, 0
	q.mu.Unlock()
}

// conn is one established (handshaken) connection with its optional s2 layers.
type conn struct {
	nc     net.Conn
	remote string
	w      io.Writer  // nc, or s2w
	s2w    *s2.Writer // non-nil when compressed
	r      io.Reader  // nc, or an s2 reader on it

	once sync.Once
	done chan struct{} // closed by fail
	err  error         // why it failed; read after done
}

func newConn(nc net.Conn, compress bool) *conn {
	c := &conn{nc: nc, remote: nc.RemoteAddr().String(), w: nc, done: make(chan struct{})}
	if compress {
		// Concurrency 1: compress in the writer goroutine, start no goroutines of its own.
		c.s2w = s2.NewWriter(nc, s2.WriterConcurrency(1), s2.WriterBlockSize(s2BlockSize))
		c.w = c.s2w
		c.r = s2.NewReader(nc, s2.ReaderMaxBlockSize(s2BlockSize))
	} else {
		c.r = nc
	}
	return c
}

// write sends b (whole frames) and pushes it out (s2 buffers until Flush).
func (c *conn) write(b []byte) error {
	if _, err := c.w.Write(b); err != nil {
		return err
	}
	if c.s2w != nil {
		return c.s2w.Flush()
	}
	return nil
}

// fail closes the connection once, recording why; both of its goroutines then stop.
func (c *conn) fail(err error) {
	c.once.Do(func() {
		c.err = err
		close(c.done)
		c.nc.Close()
	})
}

// failed reports whether fail was called.
func (c *conn) failed() bool {
	select {
	case <-c.done:
		return true
	default:
	}
	return false
}

// readLoop reads frames until an error. It reads the connection straight into chunks
// that become the receivers' memory: every frame is parsed in place (no copy), its
// payload handed to frame, and after each read the frames it completed are one batch,
// announced by flush (which returns false to stop). Up to readChunk bytes of a chunk are
// filled before a new one starts; a frame that does not fit moves, with its partial
// bytes, to a new chunk that grows with the bytes actually received, so a header that
// claims a large frame costs nothing until the bytes arrive. A header over maxFrame, of
// length 0 or of an unknown type fails at once; the batch it would have joined is
// abandoned with it.
func (c *conn) readLoop(maxFrame int, frame func(t wire.FrameType, payload []byte) error, flush func() bool) error {
	buf := make([]byte, readChunk)
	r, w := 0, 0 // buf[r:w] is read but not yet parsed; buf[:r] belongs to receivers
	for {
		if room := len(buf) - w; room < readMin {
			// (Nearly) full: unless the rest of the current frame fits, move its partial
			// bytes to a new chunk so that reads stay large (the old chunk stays with the
			// receivers). The new chunk grows with the bytes received, up to the frame.
			size := readChunk
			if w-r >= 4 {
				need := 4 + int(binary.LittleEndian.Uint32(buf[r:]))
				size = max(readChunk, min(need, 2*(w-r)))
				if need-(w-r) <= room {
					size = 0 // the frame completes in this chunk
				}
			}
			if size > 0 {
				nb := make([]byte, size)
				w = copy(nb, buf[r:w])
				buf, r = nb, 0
			}
		}
		k, rerr := c.r.Read(buf[w:])
		w += k
		n := 0
		for w-r >= wire.HeaderSize {
			size := binary.LittleEndian.Uint32(buf[r:])
			t := wire.FrameType(buf[r+4])
			switch {
			case size == 0:
				return fmt.Errorf("wire: read frame: length 0: %w", wire.ErrMalformed)
			case uint64(size) > uint64(maxFrame):
				return fmt.Errorf("wire: read frame: length %d exceeds maximum %d: %w", size, maxFrame, wire.ErrTooLarge)
			case !t.Valid():
				return fmt.Errorf("wire: read frame: frame type %d: %w", uint8(t), wire.ErrUnknownType)
			}
			end := r + 4 + int(size)
			if end > w {
				break
			}
			// The capacity ends with the payload: a receiver appending to it cannot
			// overwrite the next frame.
			if err := frame(t, buf[r+wire.HeaderSize:end:end]); err != nil {
				return err
			}
			r = end
			if n++; n == maxBatch {
				if !flush() {
					return ErrClosed
				}
				n = 0
			}
		}
		if n > 0 && !flush() {
			return ErrClosed
		}
		if rerr != nil {
			if rerr == io.EOF && r < w {
				return fmt.Errorf("wire: read frame: %w (%w)", wire.ErrTruncated, io.ErrUnexpectedEOF)
			}
			return rerr
		}
	}
}

// backoff is a capped exponential backoff with ±25% jitter (so that replicas restarted
// together do not reconnect in lockstep).
type backoff struct {
	min, max, cur time.Duration
}

func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(b.cur*2, b.max)
	}
	j := 0.75 + 0.5*rand.Float64()
	return time.Duration(float64(b.cur) * j)
}

func (b *backoff) reset() { b.cur = 0 }
