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
	// readBuffer is the size of a connection's reused read buffer: large enough for one
	// read to bring in many frames. Frames are copied out of it into arenas sized to the
	// bytes received, which the receivers own (a message an engine keeps pins only the
	// arena of its own read); a frame larger than it gets a buffer of its own.
	readBuffer = 64 << 10
	readMin    = 4 << 10
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

// spare decides whether a writer keeps the buffer it just wrote as the queue's next one.
// Keeping it matters: a queue that regrows its buffer on every burst allocates (and faults
// in) fresh memory each time, which costs more than the encoding. But a buffer far larger
// than anything written during a whole window of spareWindow writes is dropped, so that
// one burst does not pin its memory forever.
type spare struct{ writes, peak int }

const spareWindow = 1024

func (s *spare) keep(b []byte) []byte {
	s.peak = max(s.peak, len(b))
	if s.writes++; s.writes < spareWindow {
		return b
	}
	shrink := cap(b) > 4*max(s.peak, ioBufferSize)
	s.writes, s.peak = 0, 0
	if shrink {
		return nil
	}
	return b
}

// conn is one established (handshaken) connection with its optional s2 layers.
type conn struct {
	nc     net.Conn
	remote string
	s2w    *s2.Writer // non-nil when compressed
	r      io.Reader  // nc, or an s2Reader on it

	once sync.Once
	done chan struct{} // closed by fail
	err  error         // why it failed; read after done
}

func newConn(nc net.Conn, compress bool) *conn {
	c := &conn{nc: nc, remote: nc.RemoteAddr().String(), done: make(chan struct{})}
	if compress {
		// Concurrency 1: compress in the writer goroutine, start no goroutines of its own.
		c.s2w = s2.NewWriter(nc, s2.WriterConcurrency(1), s2.WriterBlockSize(s2BlockSize))
		c.r = newS2Reader(nc, s2BlockSize)
	} else {
		c.r = nc
	}
	return c
}

// write sends b (whole frames) and pushes it out. With s2, b is compressed straight from
// where it is (EncodeBuffer: no copy into the writer's own buffer, which Write would make;
// with concurrency 1 it is done with b when it returns) and flushed.
func (c *conn) write(b []byte) error {
	if c.s2w == nil {
		_, err := c.nc.Write(b)
		return err
	}
	if err := c.s2w.EncodeBuffer(b); err != nil {
		return err
	}
	return c.s2w.Flush()
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

// chunk is complete frames read from a connection, n of them (at most maxBatch).
type chunk struct {
	n      int
	frames []byte
	// buf is the read buffer frames alias, holding one reference for this chunk: the
	// consumer drops it (buf.unref) once it no longer needs the frames. nil means frames
	// is memory of its own (a frame larger than a read buffer), which the consumer may
	// keep.
	buf *readBuf
}

// take returns the chunk's frames in memory the caller owns, and drops the chunk's
// reference to its read buffer: a copy into one exactly-sized arena (a message a
// receiver keeps pins only the arena of its own read), or the frames themselves when they
// already are memory of their own.
func (ch *chunk) take() []byte {
	if ch.buf == nil {
		return ch.frames
	}
	out := append([]byte(nil), ch.frames...)
	ch.buf.unref()
	return out
}

// readBuf is one read buffer, shared by the reader that fills it and the chunks read
// into it; it goes back to its pool when the last of them lets go (refs reaches 0).
type readBuf struct {
	b    []byte
	refs atomic.Int32
	pool *bufPool
}

// unref drops one reference; the last one returns the buffer to its pool.
func (rb *readBuf) unref() {
	if n := rb.refs.Add(-1); n == 0 {
		rb.pool.put(rb)
	} else if n < 0 {
		panic("transport: read buffer released twice")
	}
}

// bufPool recycles read buffers (readBuffer bytes each). get never blocks: when none is
// free it allocates, so a receiver that holds on to what it received slows nothing down;
// it only keeps up to max free buffers.
type bufPool struct {
	mu     sync.Mutex
	free   []*readBuf
	max    int
	reused atomic.Uint64 // buffers handed out again (tests, stats)
}

func newBufPool(max int) *bufPool { return &bufPool{max: max} }

// get returns a buffer holding one reference (the caller's).
func (p *bufPool) get() *readBuf {
	p.mu.Lock()
	var rb *readBuf
	if k := len(p.free); k > 0 {
		rb = p.free[k-1]
		p.free[k-1] = nil
		p.free = p.free[:k-1]
	}
	p.mu.Unlock()
	if rb == nil {
		rb = &readBuf{b: make([]byte, readBuffer), pool: p}
	} else {
		p.reused.Add(1)
	}
	rb.refs.Store(1)
	return rb
}

func (p *bufPool) put(rb *readBuf) {
	p.mu.Lock()
	if len(p.free) < p.max {
		p.free = append(p.free, rb)
	}
	p.mu.Unlock()
}

// readLoop reads frames until an error and hands them to batch, in memory the callee owns,
// from this goroutine: readChunks whose frames are copied out before batch runs.
func (c *conn) readLoop(maxFrame int, batch func(n int, frames []byte) error) error {
	return c.readChunks(maxFrame, newBufPool(1), func(ch chunk) error {
		return batch(ch.n, ch.take())
	})
}

// readChunks reads frames until an error. It reads the connection into large buffers from
// bufs (as a bufio.Reader would, so that one system call brings in many frames) and hands
// the complete frames of each read to deliver as chunks of at most maxBatch frames, each
// holding a reference to its buffer. After delivering from a buffer the reader moves to
// another one (copying the partial frame at the end over), so the consumer may use a
// chunk, in another goroutine, for as long as it holds the reference. deliver returns an
// error to stop (ErrClosed when the receiver is gone).
//
// A frame larger than a read buffer is read into a buffer of its own that grows with the
// bytes actually received (so a header that claims a large frame costs nothing until the
// bytes arrive) and is delivered as a chunk without a buffer. A header over maxFrame, of
// length 0 or of an unknown type fails as soon as its 5 bytes are in; the frames read
// with it are abandoned.
func (c *conn) readChunks(maxFrame int, bufs *bufPool, deliver func(chunk) error) error {
	rb := bufs.get()
	buf := rb.b
	r, w := 0, 0 // buf[r:w] is read but not yet delivered
	var rerr error
	for {
		// Deliver every complete frame buffered, at most maxBatch per chunk.
		delivered := false
		for {
			end, n, err := scanFrames(buf[r:w], maxFrame)
			if err != nil {
				return err
			}
			if n == 0 {
				break
			}
			rb.refs.Add(1)
			if err := deliver(chunk{n: n, frames: buf[r : r+end], buf: rb}); err != nil {
				return err
			}
			delivered = true
			r += end
		}
		if delivered && rb.refs.Load() > 1 {
			// A chunk still uses buf: go on in another buffer, starting with the partial
			// frame at buf's end (which no chunk covers). (When every chunk is done with
			// it already, buf is read into again: it is the one in the cache.)
			nrb := bufs.get()
			w = copy(nrb.b, buf[r:w])
			r = 0
			rb.unref()
			rb, buf = nrb, nrb.b
		}
		if rerr != nil {
			if rerr == io.EOF && r < w {
				return fmt.Errorf("wire: read frame: %w (%w)", wire.ErrTruncated, io.ErrUnexpectedEOF)
			}
			return rerr
		}
		if r == w {
			r, w = 0, 0
		}
		need := wire.HeaderSize // to make progress: the partial frame's header, or all of it
		if w-r >= wire.HeaderSize {
			// (Its header passed scanFrames.)
			need = 4 + int(binary.LittleEndian.Uint32(buf[r:]))
			if need > len(buf) {
				if err := c.readLarge(buf[r:w], need, deliver); err != nil {
					return err
				}
				r, w = 0, 0
				continue
			}
		}
		if r > 0 && (len(buf)-w < readMin || r+need > len(buf)) {
			// Move the partial frame to the front so that reads stay large.
			w = copy(buf, buf[r:w])
			r = 0
		}
		var k int
		k, rerr = c.r.Read(buf[w:])
		w += k
	}
}

// scanFrames checks the headers of the frames at the start of b (including the header of
// a trailing partial frame) and returns the length of the complete frames, at most
// maxBatch of them, and their number.
func scanFrames(b []byte, maxFrame int) (end, n int, err error) {
	for n < maxBatch && len(b)-end >= wire.HeaderSize {
		size := binary.LittleEndian.Uint32(b[end:])
		t := wire.FrameType(b[end+4])
		switch {
		case size == 0:
			return 0, 0, fmt.Errorf("wire: read frame: length 0: %w", wire.ErrMalformed)
		case uint64(size) > uint64(maxFrame):
			return 0, 0, fmt.Errorf("wire: read frame: length %d exceeds maximum %d: %w", size, maxFrame, wire.ErrTooLarge)
		case !t.Valid():
			return 0, 0, fmt.Errorf("wire: read frame: frame type %d: %w", uint8(t), wire.ErrUnknownType)
		}
		next := end + 4 + int(size)
		if next > len(b) {
			break
		}
		end = next
		n++
	}
	return end, n, nil
}

// forFrames calls fn for every frame of frames (complete frames whose headers readLoop
// checked). Each payload's capacity ends with it: a receiver appending to it cannot
// overwrite the next frame.
func forFrames(frames []byte, fn func(t wire.FrameType, payload []byte) error) error {
	for off := 0; off < len(frames); {
		end := off + 4 + int(binary.LittleEndian.Uint32(frames[off:]))
		if err := fn(wire.FrameType(frames[off+4]), frames[off+wire.HeaderSize:end:end]); err != nil {
			return err
		}
		off = end
	}
	return nil
}

// readLarge reads the rest of a frame of need bytes (header included) whose first bytes
// are partial, into a buffer of its own that doubles as the bytes arrive, and delivers it
// as one batch.
func (c *conn) readLarge(partial []byte, need int, deliver func(chunk) error) error {
	fb := make([]byte, min(need, 2*readBuffer))
	got := copy(fb, partial)
	for got < need {
		if got == len(fb) {
			nb := make([]byte, min(need, 2*len(fb)))
			copy(nb, fb)
			fb = nb
		}
		k, err := c.r.Read(fb[got:])
		got += k
		if err != nil && got < need {
			if err == io.EOF {
				return fmt.Errorf("wire: read frame: %w (%w)", wire.ErrTruncated, io.ErrUnexpectedEOF)
			}
			return err
		}
	}
	return deliver(chunk{n: 1, frames: fb})
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
