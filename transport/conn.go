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

// chunk is complete frames read from a connection, n of them (at most maxBatch).
type chunk struct {
	n      int
	frames []byte
	// recycle, when not nil, is the read buffer frames alias, to give back (readBufs.put)
	// once the frames are copied out: it is the last chunk read into that buffer. nil means
	// frames is memory of its own (a frame larger than a read buffer), which the consumer
	// may keep.
	recycle []byte
	owned   bool
}

// take returns the chunk's frames in memory the caller owns: a copy into one exactly-sized
// arena (the receivers' memory: a message an engine keeps pins only the arena of its own
// read), or the frames themselves when they already are memory of their own.
func (ch *chunk) take() []byte {
	if ch.owned {
		return ch.frames
	}
	return append([]byte(nil), ch.frames...)
}

// readBufs is the read buffers one connection's reader rotates through: while the consumer
// copies the frames of one buffer out, the reader fills another. Buffers are allocated on
// first use, up to the number given to newReadBufs.
type readBufs struct {
	free chan []byte
	done <-chan struct{} // the connection failed
	stop <-chan struct{} // the transport is closing (nil: never)
}

func newReadBufs(n int, done, stop <-chan struct{}) *readBufs {
	b := &readBufs{free: make(chan []byte, n), done: done, stop: stop}
	for range n {
		b.free <- nil
	}
	return b
}

// get returns a free buffer, waiting for the consumer to give one back when all are in use.
func (b *readBufs) get() ([]byte, error) {
	var buf []byte
	select {
	case buf = <-b.free:
	default:
		select {
		case buf = <-b.free:
		case <-b.done:
			return nil, net.ErrClosed
		case <-b.stop:
			return nil, ErrClosed
		}
	}
	if buf == nil {
		buf = make([]byte, readBuffer)
	}
	return buf, nil
}

// put gives back a buffer a chunk carried in recycle (nil is ignored).
func (b *readBufs) put(buf []byte) {
	if buf != nil {
		b.free <- buf // never blocks: there are never more buffers than slots
	}
}

// readLoop reads frames until an error and hands them to batch, in memory the callee owns,
// from this goroutine. It is readChunks with one read buffer whose frames are copied out
// before batch runs.
func (c *conn) readLoop(maxFrame int, batch func(n int, frames []byte) error) error {
	bufs := newReadBufs(1, c.done, nil)
	return c.readChunks(maxFrame, bufs, func(ch chunk) error {
		frames := ch.take()
		bufs.put(ch.recycle)
		return batch(ch.n, frames)
	})
}

// readChunks reads frames until an error. It reads the connection into large buffers from
// bufs (as a bufio.Reader would, so that one system call brings in many frames) and hands
// the complete frames of each read to deliver as chunks of at most maxBatch frames. The
// chunks alias the read buffer: the consumer copies them out and gives the buffer back
// (the last chunk of a buffer carries it in recycle), and may do so in another goroutine
// while the reader fills the next buffer. deliver returns an error to stop (ErrClosed
// when the receiver is gone).
//
// A frame larger than a read buffer is read into a buffer of its own that grows with the
// bytes actually received (so a header that claims a large frame costs nothing until the
// bytes arrive) and is delivered as an owned chunk, without a copy. A header over
// maxFrame, of length 0 or of an unknown type fails as soon as its 5 bytes are in; the
// frames read with it are abandoned.
func (c *conn) readChunks(maxFrame int, bufs *readBufs, deliver func(chunk) error) error {
	buf, err := bufs.get()
	if err != nil {
		return err
	}
	r, w := 0, 0 // buf[r:w] is read but not yet delivered
	var rerr error
	for {
		// Deliver every complete frame buffered, at most maxBatch per chunk. The last chunk
		// is held back until it is known to be the last, so that it can carry buf.
		var pending chunk
		for {
			end, n, err := scanFrames(buf[r:w], maxFrame)
			if err != nil {
				return err
			}
			if n == 0 {
				break
			}
			if pending.n > 0 {
				if err := deliver(pending); err != nil {
					return err
				}
			}
			pending = chunk{n: n, frames: buf[r : r+end]}
			r += end
		}
		if pending.n > 0 {
			// Hand buf over with its last chunk and go on in another buffer, starting with
			// the partial frame at buf's end (which the consumer never touches).
			pending.recycle = buf
			tail := buf[r:w]
			if err := deliver(pending); err != nil {
				return err
			}
			nb, err := bufs.get()
			if err != nil {
				return err
			}
			w = copy(nb, tail) // nb may be buf itself, already consumed: copy handles overlap
			r = 0
			buf = nb
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
	return deliver(chunk{n: 1, frames: fb, owned: true})
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
