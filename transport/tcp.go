package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/bits"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lni/goutils/syncutil"
	"github.com/parliament-lab/parliament/protocol"
	"github.com/parliament-lab/parliament/wire"
)

// Config configures a TCP transport.
type Config struct {
	ID        protocol.ReplicaID
	ClusterID uint64
	Listen    string                        // host:port this replica listens on ("" = do not listen)
	Peers     map[protocol.ReplicaID]string // every replica's address (may include self)
	Secret    []byte                        // optional HMAC-SHA256 shared secret
	Compress  bool                          // ask for s2 on connections
	MaxFrame  int                           // 0 = wire.DefaultMaxFrame
	QueueLen  int                           // per-peer send queue in messages, 0 = DefaultQueueLen
	Logger    *slog.Logger
	// Listener, instead of Listen, is a listener already bound, which the transport then
	// owns (serves and closes, even when NewTCP fails). It lets a caller bind port 0 and
	// write the port into the cluster's addresses before the transport starts, leaving no
	// moment in which another process could take the port.
	Listener net.Listener
	// Lend makes received batches loans (see Releaser): the receiver releases every
	// batch and copies the bytes it keeps first (protocol.Detach), and in exchange large
	// reads are decoded in place, with no copy and no allocation. Off (the default), the
	// receiver owns everything it receives, and Release only recycles Message slots.
	Lend bool
	// OnClient is called for every authenticated client connection (handshake replica ID
	// 0), from that connection's goroutine, before any of its requests is read. nil =
	// refuse clients.
	OnClient func(c *ServerConn)

	// QueueBytes bounds the encoded bytes queued per peer (0 = DefaultQueueBytes).
	QueueBytes int
	// HandshakeTimeout bounds a handshake (0 = DefaultHandshakeTimeout).
	HandshakeTimeout time.Duration
	// MinBackoff and MaxBackoff bound the reconnection delay (0 = 20 ms and 2 s).
	MinBackoff, MaxBackoff time.Duration
}

func (c *Config) validate() error {
	if c.ID == 0 {
		return fmt.Errorf("transport: config: ID is 0; replica IDs start at 1")
	}
	for id := range c.Peers {
		if id == 0 {
			return fmt.Errorf("transport: config: Peers has replica ID 0; replica IDs start at 1")
		}
	}
	if c.MaxFrame < 0 || c.QueueLen < 0 || c.QueueBytes < 0 {
		return fmt.Errorf("transport: config: MaxFrame, QueueLen and QueueBytes must not be negative")
	}
	if c.Secret != nil && len(c.Secret) == 0 {
		return fmt.Errorf("transport: config: Secret is empty; use nil for no secret")
	}
	if c.Listen != "" && c.Listener != nil {
		return fmt.Errorf("transport: config: both Listen (%s) and Listener (%s) are set; give one", c.Listen, c.Listener.Addr())
	}
	return nil
}

// TCP is the TCP transport. Every replica pair shares one connection: the replica with the
// lower ID dials the higher one (the acceptor also takes a connection from a peer that
// dials it anyway, keeping the newest). All goroutines belong to one Stopper.
type TCP struct {
	cfg      Config
	log      *slog.Logger
	maxFrame int
	ln       net.Listener
	stopper  *syncutil.Stopper
	ctx      context.Context // cancelled by Close: aborts dials
	cancel   context.CancelFunc
	peers    map[protocol.ReplicaID]*peer
	self     *peer
	recvC    chan []protocol.Message
	pool     *batchPool
	bufs     *bufPool // read buffers of the peer connections

	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{} // every open connection, closed by Close

	closeOnce sync.Once
	unknown   atomic.Uint64 // messages to replicas not in Peers, or of an invalid type
}

// peer is the link to one replica: its send queue and the worker that owns its connection.
type peer struct {
	t        *TCP
	id       protocol.ReplicaID
	addr     string
	q        *sendQueue
	incoming chan *conn // a connection the acceptor established with this peer
}

// NewTCP starts listening (when cfg.Listen or cfg.Listener is set) and starts one worker per peer; the
// worker dials peers with a higher ID at once and redials with backoff.
func NewTCP(cfg Config) (*TCP, error) {
	if err := cfg.validate(); err != nil {
		if cfg.Listener != nil {
			cfg.Listener.Close()
		}
		return nil, err
	}
	t := &TCP{
		cfg:      cfg,
		log:      cfg.Logger,
		maxFrame: cfg.MaxFrame,
		stopper:  syncutil.NewStopper(),
		peers:    make(map[protocol.ReplicaID]*peer),
		recvC:    make(chan []protocol.Message, recvChanLen),
		pool:     newBatchPool(),
		bufs:     newBufPool(freeReadBufs),
		conns:    make(map[net.Conn]struct{}),
	}
	if t.log == nil {
		t.log = slog.New(slog.DiscardHandler)
	}
	t.log = t.log.With("replica", cfg.ID)
	if t.maxFrame == 0 {
		t.maxFrame = wire.DefaultMaxFrame
	}
	if t.cfg.QueueLen == 0 {
		t.cfg.QueueLen = DefaultQueueLen
	}
	if t.cfg.QueueBytes == 0 {
		t.cfg.QueueBytes = DefaultQueueBytes
	}
	if t.cfg.HandshakeTimeout == 0 {
		t.cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if t.cfg.MinBackoff == 0 {
		t.cfg.MinBackoff = 20 * time.Millisecond
	}
	if t.cfg.MaxBackoff == 0 {
		t.cfg.MaxBackoff = 2 * time.Second
	}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	if cfg.Listen != "" {
		ln, err := net.Listen("tcp", cfg.Listen)
		if err != nil {
			t.cancel()
			return nil, fmt.Errorf("transport: listen %s: %w", cfg.Listen, err)
		}
		t.ln = ln
	} else if cfg.Listener != nil {
		t.ln = cfg.Listener
	}
	ids := make([]protocol.ReplicaID, 0, len(cfg.Peers))
	for id := range cfg.Peers {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	t.self = &peer{t: t, id: cfg.ID, q: newSendQueue(t.cfg.QueueLen, t.cfg.QueueBytes)}
	for _, id := range ids {
		if id == cfg.ID {
			continue
		}
		t.peers[id] = &peer{
			t: t, id: id, addr: cfg.Peers[id],
			q:        newSendQueue(t.cfg.QueueLen, t.cfg.QueueBytes),
			incoming: make(chan *conn, 1),
		}
	}
	// Everything is started here, before NewTCP returns, or from inside a worker: never
	// concurrently with Close (see Close).
	t.stopper.RunWorker(t.deliverLocal)
	for _, id := range ids {
		if p := t.peers[id]; p != nil {
			t.stopper.RunWorker(p.run)
		}
	}
	if t.ln != nil {
		t.stopper.RunWorker(t.acceptLoop)
	}
	return t, nil
}

// Addr returns the listening address (nil when not listening).
func (t *TCP) Addr() net.Addr {
	if t.ln == nil {
		return nil
	}
	return t.ln.Addr()
}

// Send implements Transport. m is encoded into the peer's queue before Send returns.
func (t *TCP) Send(m protocol.Message) {
	t.send(&m)
}

func (t *TCP) queueFor(to protocol.ReplicaID) *sendQueue {
	if to == t.cfg.ID {
		return t.self.q
	}
	if p := t.peers[to]; p != nil {
		return p.q
	}
	return nil
}

func (t *TCP) send(m *protocol.Message) error {
	if !m.Type.Valid() {
		// The receiver's decoder would refuse it and drop the whole connection.
		t.unknown.Add(1)
		t.log.Warn("transport: dropped message of invalid type", "to", m.To, "type", m.Type)
		return fmt.Errorf("transport: invalid message type %v", m.Type)
	}
	q := t.queueFor(m.To)
	if q == nil {
		t.unknown.Add(1)
		return fmt.Errorf("transport: no address for replica %d", m.To)
	}
	err := q.push(t.maxFrame, func(b []byte) []byte { return wire.AppendMessageFrame(b, m) })
	if err != nil && !errors.Is(err, errQueueFull) && !errors.Is(err, ErrClosed) {
		t.log.Warn("transport: dropped message", "to", m.To, "type", m.Type, "err", err)
	}
	return err
}

// sendWait is Send that waits for room instead of dropping (benchmarks, tests).
func (t *TCP) sendWait(m *protocol.Message) error {
	for {
		err := t.send(m)
		if !errors.Is(err, errQueueFull) {
			return err
		}
		q := t.queueFor(m.To)
		select {
		case <-q.space:
		case <-t.stopper.ShouldStop():
			return ErrClosed
		}
	}
}

// Recv implements Transport.
func (t *TCP) Recv() <-chan []protocol.Message { return t.recvC }

// Stats counts messages per destination.
type Stats struct {
	Sent    uint64 // handed to a connection (or delivered locally)
	Dropped uint64 // queue full, closed, oversize, or no address
}

// Stats returns counters summed over all peers.
func (t *TCP) Stats() Stats {
	s := Stats{Dropped: t.unknown.Load()}
	for _, p := range append(t.peerList(), t.self) {
		s.Sent += p.q.sent.Load()
		s.Dropped += p.q.dropped.Load()
	}
	return s
}

func (t *TCP) peerList() []*peer {
	out := make([]*peer, 0, len(t.peers))
	for _, p := range t.peers {
		out = append(out, p)
	}
	return out
}

// Close implements Transport: it stops accepting and dialing, closes every connection,
// waits for every goroutine, then closes the Recv channel. Queued messages are dropped.
func (t *TCP) Close() error {
	t.closeOnce.Do(func() {
		// Stopper.Stop holds its mutex while waiting, so a worker starting another worker
		// during Stop would deadlock; Close then Wait does not. Workers are only started
		// by NewTCP or by other workers, so the WaitGroup never goes from 0 to 1 here.
		t.stopper.Close()
		t.cancel()
		t.mu.Lock()
		t.closed = true
		if t.ln != nil {
			t.ln.Close()
		}
		for c := range t.conns {
			c.Close()
		}
		t.mu.Unlock()
		t.stopper.Wait()
		for _, p := range append(t.peerList(), t.self) {
			p.q.close()
		}
		close(t.recvC)
	})
	return nil
}

// track registers nc so that Close can close it; false if already closed (nc is closed).
func (t *TCP) track(nc net.Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		nc.Close()
		return false
	}
	t.conns[nc] = struct{}{}
	return true
}

func (t *TCP) untrack(nc net.Conn) {
	t.mu.Lock()
	delete(t.conns, nc)
	t.mu.Unlock()
	nc.Close()
}

func (t *TCP) stopped() bool {
	select {
	case <-t.stopper.ShouldStop():
		return true
	default:
	}
	return false
}

// deliverLocal hands messages sent to ourselves to Recv, through the same encoding as
// remote ones so that the receiver owns what it gets in both cases.
func (t *TCP) deliverLocal() {
	stop := t.stopper.ShouldStop()
	q := t.self.q
	for {
		select {
		case <-q.signal:
		case <-stop:
			return
		}
		buf, n := q.take(nil) // the decoded messages alias buf: never reuse it
		if n == 0 {
			continue
		}
		batch := make([]protocol.Message, 0, n)
		for len(buf) > 0 {
			size := int(buf[0]) | int(buf[1])<<8 | int(buf[2])<<16 | int(buf[3])<<24
			var m protocol.Message
			if err := wire.DecodeMessage(buf[wire.HeaderSize:4+size], &m); err != nil {
				t.log.Error("transport: local message does not decode", "err", err)
			} else {
				batch = append(batch, m)
			}
			buf = buf[4+size:]
		}
		select {
		case t.recvC <- batch:
		case <-stop:
			return
		}
	}
}

// run owns the connection to one peer: dial (when our ID is lower) or wait for the
// acceptor to hand one over, then write until it breaks, and again.
func (p *peer) run() {
	t := p.t
	stop := t.stopper.ShouldStop()
	dialer := t.cfg.ID < p.id && p.addr != ""
	bo := backoff{min: t.cfg.MinBackoff, max: t.cfg.MaxBackoff}
	var lastErr string
	var c *conn
	for {
		if c == nil {
			select {
			case c = <-p.incoming:
			default:
			}
		}
		if c == nil && dialer {
			var err error
			c, err = p.dial()
			if err != nil {
				if t.stopped() {
					return
				}
				// One line per distinct failure, not one per retry.
				if msg := err.Error(); msg != lastErr {
					lastErr = msg
					level := slog.LevelInfo
					if isRefusal(err) {
						level = slog.LevelWarn
					}
					t.log.Log(context.Background(), level, "transport: cannot connect to peer", "peer", p.id, "addr", p.addr, "err", err)
				}
				timer := time.NewTimer(bo.next())
				select {
				case <-timer.C:
				case c = <-p.incoming:
					timer.Stop()
				case <-stop:
					timer.Stop()
					return
				}
				if c == nil {
					continue
				}
			}
		}
		if c == nil {
			select {
			case c = <-p.incoming:
			case <-stop:
				return
			}
		}
		if lastErr != "" {
			t.log.Info("transport: connected to peer", "peer", p.id, "remote", c.remote)
			lastErr = ""
		}
		bo.reset()
		c = p.serve(c)
		if t.stopped() {
			return
		}
	}
}

func isRefusal(err error) bool {
	for _, e := range []error{ErrNotParliament, ErrWrongVersion, ErrWrongCluster, ErrUnknownReplica, ErrAuth, ErrBadProof, ErrWrongPeer} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// dial connects to the peer and runs the handshake.
func (p *peer) dial() (*conn, error) {
	t := p.t
	d := net.Dialer{Timeout: t.cfg.HandshakeTimeout}
	nc, err := d.DialContext(t.ctx, "tcp", p.addr)
	if err != nil {
		return nil, err
	}
	if !t.track(nc) {
		return nil, ErrClosed
	}
	nc.SetDeadline(time.Now().Add(t.cfg.HandshakeTimeout))
	res, err := dialHandshake(nc, &dialParams{
		self: t.cfg.ID, cluster: t.cfg.ClusterID, secret: t.cfg.Secret,
		compress: t.cfg.Compress, expect: p.id,
	})
	if err != nil {
		t.untrack(nc)
		return nil, fmt.Errorf("handshake with %s: %w", p.addr, err)
	}
	nc.SetDeadline(time.Time{})
	return newConn(nc, res.compress), nil
}

// serve runs c until it breaks, the transport stops, or the acceptor hands over a newer
// connection with this peer (returned, to be served next). The reader is a worker of its
// own; the writer is this goroutine.
func (p *peer) serve(c *conn) (next *conn) {
	t := p.t
	stop := t.stopper.ShouldStop()
	t.stopper.RunWorker(func() { t.readPeer(c, p.id) })
	defer func() {
		if next != nil {
			c.fail(errors.New("replaced by a newer connection"))
		}
		t.untrack(c.nc)
	}()
	var out []byte
	var sp spare
	for {
		select {
		case <-p.q.signal:
		case <-c.done:
			return nil
		case <-stop:
			return nil
		case next = <-p.incoming:
			return next
		}
		var n int
		out, n = p.q.take(out)
		if n == 0 {
			continue
		}
		if err := c.write(out); err != nil {
			if !t.stopped() {
				t.log.Info("transport: connection to peer broke", "peer", p.id, "remote", c.remote, "err", err)
			}
			c.fail(err)
			return nil
		}
		out = sp.keep(out)
	}
}

// readPeer reads one peer connection, delivering each burst of messages as one batch.
//
// Reading and decoding are two goroutines when it pays: this one reads (system calls, and
// s2 decompression when on) and checks frame headers; decodePeer decodes a large read
// while the next read is in progress, so that on a loaded link the two stages overlap on
// two cores instead of taking turns on one. A small read that finds the decoder idle is
// decoded here instead: handing it over would cost a goroutine wakeup (CPU and latency)
// for little decoding.
func (t *TCP) readPeer(c *conn, from protocol.ReplicaID) {
	stop := t.stopper.ShouldStop()
	reads := make(chan chunk, readAhead)
	var pending atomic.Int32 // chunks handed to decodePeer and not yet delivered
	t.stopper.RunWorker(func() { t.decodePeer(c, from, reads, &pending) })
	err := c.readChunks(t.maxFrame, t.bufs, func(ch chunk) error {
		if len(ch.frames) < inlineDecode && pending.Load() == 0 {
			// Nothing is in flight, so delivering from here keeps the order.
			return t.decodeChunk(c, from, ch)
		}
		pending.Add(1)
		select {
		case reads <- ch:
			return nil
		case <-c.done:
			return net.ErrClosed
		case <-stop:
			return ErrClosed
		}
	})
	close(reads)
	if !c.failed() && !t.stopped() {
		t.logReadError(c, "peer", from, err)
	}
	c.fail(err)
}

const (
	// readAhead is how many reads may wait for the decoder: enough to keep the reader
	// busy through a decoder hiccup, few enough that a slow receiver pushes back on the
	// sender through TCP rather than through memory.
	readAhead = 4
	// inlineDecode is the size under which a read is decoded by the reader itself when
	// the decoder is idle.
	inlineDecode = 16 << 10
	// lendMin is the size from which a read is lent (Config.Lend) rather than copied:
	// copying a small read costs less than tying up a whole read buffer, and leaves the
	// buffer in the cache for the next read.
	lendMin = 8 << 10
	// freeReadBufs is how many free read buffers a transport keeps for its peer
	// connections (4 MiB): what is on loan to receivers (up to recvChanLen batches)
	// plus what the readers and decoders of a few peers hold.
	freeReadBufs = 64
)

// decodePeer decodes the chunks readPeer hands over, in order.
func (t *TCP) decodePeer(c *conn, from protocol.ReplicaID, reads <-chan chunk, pending *atomic.Int32) {
	for ch := range reads {
		if c.failed() {
			if ch.buf != nil {
				ch.buf.unref()
			}
			// Drain: the reader stops at its next send or read. pending stays above 0 on
			// purpose, so that the reader decodes nothing more itself: nothing read after a
			// failure is delivered.
			continue
		}
		t.decodeChunk(c, from, ch) // on failure the connection is failed: the reader stops
		pending.Add(-1)
	}
}

// decodeChunk decodes one chunk of a peer connection and delivers it on Recv. A frame that
// does not decode, or a message that does not belong on this connection, fails the
// connection; what came before it is delivered.
//
// Where the frames are decoded from:
//   - Frames whose messages carry no bytes (acknowledgements, votes, heartbeats) are
//     decoded in place: nothing decoded points into the read buffer, which is read into
//     again at once.
//   - With Config.Lend, a large read (lendMin and more) is decoded in place and its buffer
//     lent with the batch until Release: no byte is copied.
//   - Otherwise the frames are copied into one exactly-sized arena the receiver owns
//     first: a message it keeps pins only the bytes of its own read.
func (t *TCP) decodeChunk(c *conn, from protocol.ReplicaID, ch chunk) error {
	frames, loan, drop := ch.frames, ch.buf, (*readBuf)(nil)
	switch {
	case ch.buf == nil:
		// A large frame in memory of its own: the receiver owns it as it is.
	case t.cfg.Lend && len(frames) >= lendMin:
		// Decoded in place, lent with the batch.
	case !aliases(frames):
		// Nothing decoded will point into the buffer: decode in place, then let it go.
		loan, drop = nil, ch.buf
	default:
		frames, loan = ch.take(), nil
	}
	msgs := t.pool.get(ch.n)
	i := 0
	err := forFrames(frames, func(ft wire.FrameType, payload []byte) error {
		if ft != wire.FrameMessage {
			return fmt.Errorf("peer sent a %v frame: %w", ft, errProtocol)
		}
		m := &msgs[i]
		i++
		if err := wire.DecodeMessage(payload, m); err != nil {
			return err
		}
		if m.From != from || m.To != t.cfg.ID {
			return fmt.Errorf("message %d->%d on the connection of replica %d to %d: %w", m.From, m.To, from, t.cfg.ID, errProtocol)
		}
		return nil
	})
	if drop != nil {
		drop.unref()
	}
	if err != nil {
		if loan != nil {
			loan.unref()
		}
		if !c.failed() && !t.stopped() {
			t.logReadError(c, "peer", from, err)
		}
		c.fail(err)
		return err
	}
	if loan != nil {
		t.pool.lend(msgs, loan)
	}
	select {
	case t.recvC <- msgs:
		return nil
	case <-t.stopper.ShouldStop():
		c.fail(ErrClosed)
		return ErrClosed
	}
}

// batchPool recycles the Message slices receivers give back with Release, by capacity
// class (powers of two up to maxBatch), LIFO within a class so that the most recently
// released (cache-warm) slice is reused first. Until a receiver releases anything, get
// allocates exactly the slots a batch needs; once receivers release, it allocates whole
// classes so that released slices fit the next batches of about the same size. It holds
// at most poolSlots slots (about 5 MiB). It also keeps which read buffer a batch decoded
// in place is on loan from, so that Release can give the buffer back.
type batchPool struct {
	releasing atomic.Bool
	mu        sync.Mutex
	free      [maxBatchLog + 1][][]protocol.Message
	slots     int                            // held in free
	loans     map[*protocol.Message]*readBuf // by the address of a batch's first message
}

const (
	maxBatchLog = 12 // 1<<maxBatchLog == maxBatch
	poolSlots   = 32 << 10
)

func newBatchPool() *batchPool {
	return &batchPool{loans: make(map[*protocol.Message]*readBuf)}
}

// get returns n zeroed Message slots.
func (p *batchPool) get(n int) []protocol.Message {
	c := bits.Len(uint(n - 1)) // the class whose slices hold n
	if p.releasing.Load() {
		p.mu.Lock()
		if k := len(p.free[c]); k > 0 {
			b := p.free[c][k-1]
			p.free[c][k-1] = nil
			p.free[c] = p.free[c][:k-1]
			p.slots -= cap(b)
			p.mu.Unlock()
			return b[:n]
		}
		p.mu.Unlock()
		return make([]protocol.Message, n, 1<<c)
	}
	return make([]protocol.Message, n)
}

// lend records that batch (not empty) points into rb, holding one reference to it until
// the batch comes back through put.
func (p *batchPool) lend(batch []protocol.Message, rb *readBuf) {
	p.mu.Lock()
	p.loans[&batch[0]] = rb
	p.mu.Unlock()
}

// put takes back a batch, as Recv delivered it; its slots are cleared (dropping the
// references into payloads) and reused by a later batch, and the read buffer it was on
// loan from, if any, is given back. Only b[:len(b)] is cleared: get hands out cleared
// slices and the reader fills only the slots it returns, so the rest of the capacity is
// still clear. (Were a receiver to give back a shorter or extended slice, stale
// references would only be kept alive longer: decoding overwrites every field of a slot.)
func (p *batchPool) put(b []protocol.Message) {
	if cap(b) == 0 {
		return
	}
	p.releasing.Store(true)
	clear(b)
	b = b[:cap(b)]
	c := min(bits.Len(uint(cap(b)))-1, maxBatchLog) // the class b can serve
	p.mu.Lock()
	rb := p.loans[&b[0]]
	if rb != nil {
		delete(p.loans, &b[0])
	}
	if p.slots+cap(b) <= poolSlots {
		p.free[c] = append(p.free[c], b)
		p.slots += cap(b)
	}
	p.mu.Unlock()
	if rb != nil {
		rb.unref()
	}
}

// Releaser is implemented by transports that can reuse the memory of a received batch.
//
// Release gives back a batch, as Recv delivered it, once the receiver no longer uses its
// Message values. What their slices point to stays the receiver's, unless the transport
// lends its batches (TCP with Config.Lend): then the byte slices of large reads (Data, and
// the Key, Value and Old of commands, including the commands of Insts) point into a read
// buffer that is read into again once every batch of it is released. A receiver of loans
// must copy the bytes it keeps before it releases (protocol.Detach does a whole batch in
// one allocation) and must release every batch (one never released keeps its 64 KiB read
// buffer). The arrays of Cmds, Deps and Insts are allocated by decoding and stay the
// receiver's either way.
type Releaser interface {
	// Release gives back a batch received from Recv (see above for what the receiver may
	// keep).
	Release(batch []protocol.Message)
}

// Release implements Releaser: the batch's slots are reused for later batches, which
// spares the allocation (and garbage collection) of one Message per message received;
// with Config.Lend, a lent read buffer is read into again once all of its batches are
// back.
func (t *TCP) Release(batch []protocol.Message) { t.pool.put(batch) }

var errProtocol = errors.New("protocol violation")

// logReadError logs why a connection's reader stopped: a refusal (oversize frame, garbage,
// protocol violation) at Warn, a plain disconnect at Info.
func (t *TCP) logReadError(c *conn, kind string, id protocol.ReplicaID, err error) {
	switch {
	case errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed):
		t.log.Info("transport: connection closed", kind, id, "remote", c.remote)
	case errors.Is(err, wire.ErrTooLarge):
		t.log.Warn("transport: refused connection: frame over MaxFrame", kind, id, "remote", c.remote, "max_frame", t.maxFrame, "err", err)
	case errors.Is(err, wire.ErrUnknownType), errors.Is(err, wire.ErrMalformed), errors.Is(err, wire.ErrTruncated) && !errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, errProtocol):
		t.log.Warn("transport: refused connection: bad frame", kind, id, "remote", c.remote, "err", err)
	default:
		t.log.Info("transport: connection broke", kind, id, "remote", c.remote, "err", err)
	}
}

// acceptLoop accepts connections; each handshake runs in its own worker, under a deadline,
// so a silent or slow peer delays nobody else.
func (t *TCP) acceptLoop() {
	for {
		nc, err := t.ln.Accept()
		if err != nil {
			if t.stopped() || errors.Is(err, net.ErrClosed) {
				return
			}
			t.log.Warn("transport: accept", "err", err)
			select { // e.g. out of file descriptors: do not spin
			case <-time.After(50 * time.Millisecond):
			case <-t.stopper.ShouldStop():
				return
			}
			continue
		}
		if !t.track(nc) {
			return
		}
		t.stopper.RunWorker(func() { t.handleIncoming(nc) })
	}
}

func (t *TCP) handleIncoming(nc net.Conn) {
	remote := nc.RemoteAddr().String()
	nc.SetDeadline(time.Now().Add(t.cfg.HandshakeTimeout))
	res, err := acceptHandshake(nc, &acceptParams{
		self: t.cfg.ID, cluster: t.cfg.ClusterID, secret: t.cfg.Secret,
		compress: t.cfg.Compress, clients: t.cfg.OnClient != nil,
		known: func(id protocol.ReplicaID) bool { return t.peers[id] != nil },
	})
	if err != nil {
		if !t.stopped() {
			t.log.Warn("transport: refused connection", "remote", remote, "reason", err)
		}
		t.untrack(nc)
		return
	}
	nc.SetDeadline(time.Time{})
	c := newConn(nc, res.compress)
	if res.peer == 0 {
		t.serveClient(c)
		return
	}
	p := t.peers[res.peer]
	t.log.Info("transport: peer connected", "peer", p.id, "remote", remote, "compress", res.compress)
	// Hand over to the peer's worker, replacing a connection it has not picked up yet.
	for {
		select {
		case p.incoming <- c:
			return
		default:
		}
		select {
		case old := <-p.incoming:
			old.fail(errors.New("replaced by a newer connection"))
			t.untrack(old.nc)
		default:
		}
	}
}

// aliases reports whether any message of frames (complete message frames) carries bytes
// that decoding would point into frames.
func aliases(frames []byte) bool {
	found := false
	forFrames(frames, func(_ wire.FrameType, payload []byte) error {
		if wire.MessageAliases(payload) {
			found = true
			return errStopScan
		}
		return nil
	})
	return found
}

var errStopScan = errors.New("stop")
