package transport

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lni/goutils/syncutil"
	"github.com/parliament-lab/parliament/protocol"
)

// WANConfig configures the WAN emulator.
type WANConfig struct {
	Matrix *Matrix
	// Sites maps every replica (Self included) to its site in Matrix.
	Sites map[protocol.ReplicaID]string
	Self  protocol.ReplicaID
	// JitterFrac adds seeded jitter: each delay is multiplied by 1 + JitterFrac*u with u
	// uniform in [-1, 1). Jitter never reorders a link: a message leaves no earlier than
	// the one sent before it on the same link. 0 = none; must be in [0, 1].
	JitterFrac float64
	Seed       int64
	// Clock drives the delays; nil = RealClock. Tests pass a ManualClock.
	Clock Clock
	// QueueLen bounds the messages in flight on one link (0 = 1<<16); more are dropped.
	QueueLen int
}

// Validate checks that the matrix is valid and that every replica's site is in it.
func (c *WANConfig) Validate() error {
	if c.Matrix == nil {
		return fmt.Errorf("transport: wan: Matrix is nil")
	}
	if err := c.Matrix.Validate(); err != nil {
		return fmt.Errorf("transport: wan: %w", err)
	}
	if _, ok := c.Sites[c.Self]; !ok {
		return fmt.Errorf("transport: wan: Self %d has no site in Sites", c.Self)
	}
	ids := make([]protocol.ReplicaID, 0, len(c.Sites))
	for id := range c.Sites {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids {
		if _, ok := c.Matrix.Index(c.Sites[id]); !ok {
			return fmt.Errorf("transport: wan: replica %d: site %q is not in the matrix (have %v)", id, c.Sites[id], c.Matrix.Sites)
		}
	}
	if c.JitterFrac < 0 || c.JitterFrac > 1 {
		return fmt.Errorf("transport: wan: JitterFrac %v must be in [0, 1]", c.JitterFrac)
	}
	return nil
}

// WAN delays every message sent through it by the one-way latency (RTT/2) of its (sender
// site, receiver site) pair, then hands it to the wrapped transport. Each replica wraps its
// own transport, so every message is delayed once, on the sending side. One goroutine per
// link keeps the link FIFO.
type WAN struct {
	inner   Transport
	clock   Clock
	jitter  float64
	links   map[protocol.ReplicaID]*wanLink
	self    protocol.ReplicaID
	stopper *syncutil.Stopper

	rngMu sync.Mutex
	rng   *rand.Rand

	closeOnce sync.Once
	closeErr  error
	dropped   atomic.Uint64
}

type wanItem struct {
	at time.Time
	m  protocol.Message
}

type wanLink struct {
	w      *WAN
	delay  time.Duration
	maxLen int

	mu     sync.Mutex
	q      []wanItem
	lastAt time.Time
	signal chan struct{}
}

// NewWAN wraps inner. It panics if cfg is invalid: call cfg.Validate first when the
// configuration comes from a user. Closing the WAN closes inner.
func NewWAN(inner Transport, cfg WANConfig) Transport {
	w, err := NewWANChecked(inner, cfg)
	if err != nil {
		panic(err)
	}
	return w
}

// NewWANChecked is NewWAN returning the configuration error instead of panicking.
func NewWANChecked(inner Transport, cfg WANConfig) (*WAN, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	clock := cfg.Clock
	if clock == nil {
		clock = RealClock{}
	}
	ql := cfg.QueueLen
	if ql <= 0 {
		ql = 1 << 16
	}
	w := &WAN{
		inner:   inner,
		clock:   clock,
		jitter:  cfg.JitterFrac,
		links:   make(map[protocol.ReplicaID]*wanLink),
		self:    cfg.Self,
		stopper: syncutil.NewStopper(),
		rng:     rand.New(rand.NewPCG(uint64(cfg.Seed), 0x5741_4e5f_6a69_7474)),
	}
	from := cfg.Sites[cfg.Self]
	for id, site := range cfg.Sites {
		if id == cfg.Self {
			continue
		}
		d, err := cfg.Matrix.OneWay(from, site)
		if err != nil {
			return nil, fmt.Errorf("transport: wan: %w", err)
		}
		w.links[id] = &wanLink{w: w, delay: d, maxLen: ql, signal: make(chan struct{}, 1)}
	}
	for _, l := range w.links {
		w.stopper.RunWorker(l.run)
	}
	return w, nil
}

// Send implements Transport: m is copied and leaves after its link's delay. Messages to
// Self go straight to the inner transport; messages to a replica without a site are
// dropped.
func (w *WAN) Send(m protocol.Message) {
	if m.To == w.self {
		w.inner.Send(m)
		return
	}
	l, ok := w.links[m.To]
	if !ok {
		w.dropped.Add(1)
		return
	}
	d := l.delay
	if w.jitter > 0 {
		w.rngMu.Lock()
		u := 2*w.rng.Float64() - 1
		w.rngMu.Unlock()
		d = time.Duration(float64(d) * (1 + w.jitter*u))
	}
	at := w.clock.Now().Add(d)
	c := m.Clone()
	l.mu.Lock()
	if len(l.q) >= l.maxLen {
		l.mu.Unlock()
		w.dropped.Add(1)
		return
	}
	if at.Before(l.lastAt) {
		at = l.lastAt // FIFO per link: never overtake the previous message
	}
	l.lastAt = at
	l.q = append(l.q, wanItem{at: at, m: c})
	first := len(l.q) == 1
	l.mu.Unlock()
	if first {
		select {
		case l.signal <- struct{}{}:
		default:
		}
	}
}

// Recv implements Transport (receiving is not delayed: the sender's WAN did it).
func (w *WAN) Recv() <-chan []protocol.Message { return w.inner.Recv() }

// Release implements Releaser: the batches are the inner transport's, and so is Release
// (a no-op when the inner transport does not lend its batches).
func (w *WAN) Release(batch []protocol.Message) {
	if r, ok := w.inner.(Releaser); ok {
		r.Release(batch)
	}
}

// Dropped returns how many messages the emulator dropped (full link, unknown replica).
func (w *WAN) Dropped() uint64 { return w.dropped.Load() }

// Close stops the link goroutines (messages still in flight are dropped) and closes the
// inner transport. Safe twice.
func (w *WAN) Close() error {
	w.closeOnce.Do(func() {
		w.stopper.Stop()
		w.closeErr = w.inner.Close()
	})
	return w.closeErr
}

// run delivers one link's messages in order, each when its time has come. A new message
// never needs to interrupt the wait: its deadline is no earlier than the head's.
func (l *wanLink) run() {
	stop := l.w.stopper.ShouldStop()
	var due []protocol.Message
	for {
		l.mu.Lock()
		if len(l.q) == 0 {
			l.mu.Unlock()
			select {
			case <-l.signal:
				continue
			case <-stop:
				return
			}
		}
		now := l.w.clock.Now()
		head := l.q[0].at
		if !head.After(now) {
			n := 0
			for n < len(l.q) && !l.q[n].at.After(now) {
				due = append(due, l.q[n].m)
				n++
			}
			rest := copy(l.q, l.q[n:])
			clear(l.q[rest:])
			l.q = l.q[:rest]
			l.mu.Unlock()
			for i := range due {
				l.w.inner.Send(due[i])
			}
			clear(due)
			due = due[:0]
			continue
		}
		l.mu.Unlock()
		t := l.w.clock.NewTimer(head.Sub(now))
		select {
		case <-t.C():
		case <-stop:
			t.Stop()
			return
		}
	}
}
