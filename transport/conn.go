package transport

import (
	"bufio"
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
	// ioBufferSize is the size of every connection's read buffer; writes go out in whatever
	// the send queue accumulated (at least one frame, usually many).
	ioBufferSize = 64 << 10
	// arenaSize is the size of the buffers received payloads are read into. Payloads of
	// one batch share an arena, and the receiver owns it (decoded messages alias it), so
	// a fresh one is started once the current one runs low. Small enough that a message an
	// engine keeps for long does not pin much memory, large enough to amortise allocation.
	arenaSize = 32 << 10
	// arenaMin: start a new arena when less than this is left in the current one.
	arenaMin = 2 << 10
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
	br     *bufio.Reader

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
		c.br = bufio.NewReaderSize(s2.NewReader(nc, s2.ReaderMaxBlockSize(s2BlockSize)), ioBufferSize)
	} else {
		c.br = bufio.NewReaderSize(nc, ioBufferSize)
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

// readLoop reads frames until an error. For every frame it calls frame (payload lives in
// an arena the receiver owns); after each burst (every frame that had fully arrived, up to
// maxBatch) it calls flush, which returns false to stop. A frame error means the batch
// being built is abandoned: frame and flush implementations reset on the next call.
func (c *conn) readLoop(maxFrame int, frame func(t wire.FrameType, payload []byte) error, flush func() bool) error {
	arena := make([]byte, arenaSize)
	for {
		for n := 0; ; n++ {
			if len(arena) < arenaMin {
				arena = make([]byte, arenaSize)
			}
			t, payload, err := wire.ReadFrame(c.br, arena, maxFrame)
			if err != nil {
				return err
			}
			if len(payload) > 0 && len(payload) <= len(arena) && &payload[0] == &arena[0] {
				arena = arena[len(payload):]
			}
			if err := frame(t, payload); err != nil {
				return err
			}
			if n+1 >= maxBatch || !frameReady(c.br, maxFrame) {
				break
			}
		}
		if !flush() {
			return ErrClosed
		}
	}
}

// frameReady reports whether reading the next frame from br will not block: a whole frame
// is buffered (a batch is what one read brought in), or its header is and is bad, so the
// read fails at once and the batch it would have joined is refused with it.
func frameReady(br *bufio.Reader, maxFrame int) bool {
	k := br.Buffered()
	if k < wire.HeaderSize {
		return false
	}
	h, _ := br.Peek(wire.HeaderSize)
	n := uint64(binary.LittleEndian.Uint32(h))
	if n == 0 || n > uint64(maxFrame) || !wire.FrameType(h[4]).Valid() {
		return true
	}
	return uint64(k) >= 4+n
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
