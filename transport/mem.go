package transport

import (
	"sync"
	"sync/atomic"

	"github.com/lni/goutils/syncutil"
	"github.com/parliament-lab/parliament/protocol"
)

// MemNetwork connects in-process transports: the test double of TCP with the same
// contract (FIFO per link, never blocking Send, batches on Recv, deep-copied messages).
// Links can be cut to emulate partitions.
type MemNetwork struct {
	mu   sync.Mutex
	eps  map[protocol.ReplicaID]*MemTransport
	down map[[2]protocol.ReplicaID]bool
	// QueueLen bounds each endpoint's inbox in messages (0 = DefaultQueueLen); set it
	// before the first call to Transport.
	QueueLen int
}

// NewMemNetwork returns an empty in-memory network.
func NewMemNetwork() *MemNetwork {
	return &MemNetwork{
		eps:  make(map[protocol.ReplicaID]*MemTransport),
		down: make(map[[2]protocol.ReplicaID]bool),
	}
}

// Transport returns the endpoint of replica id, creating it if it does not exist or was
// closed (a restarted replica gets a fresh endpoint).
func (n *MemNetwork) Transport(id protocol.ReplicaID) Transport {
	return n.Endpoint(id)
}

// Endpoint is Transport with the concrete type (for Dropped).
func (n *MemNetwork) Endpoint(id protocol.ReplicaID) *MemTransport {
	n.mu.Lock()
	defer n.mu.Unlock()
	if ep, ok := n.eps[id]; ok {
		return ep
	}
	ql := n.QueueLen
	if ql <= 0 {
		ql = DefaultQueueLen
	}
	ep := &MemTransport{
		net:      n,
		id:       id,
		queueLen: ql,
		signal:   make(chan struct{}, 1),
		recvC:    make(chan []protocol.Message, recvChanLen),
		stopper:  syncutil.NewStopper(),
	}
	ep.stopper.RunWorker(ep.deliver)
	n.eps[id] = ep
	return ep
}

// SetLink cuts (up = false) or restores the one-way link from -> to. Messages on a cut
// link are dropped at Send.
func (n *MemNetwork) SetLink(from, to protocol.ReplicaID, up bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if up {
		delete(n.down, [2]protocol.ReplicaID{from, to})
	} else {
		n.down[[2]protocol.ReplicaID{from, to}] = true
	}
}

func (n *MemNetwork) lookup(from, to protocol.ReplicaID) *MemTransport {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.down[[2]protocol.ReplicaID{from, to}] {
		return nil
	}
	return n.eps[to]
}

// MemTransport is one replica's endpoint on a MemNetwork.
type MemTransport struct {
	net      *MemNetwork
	id       protocol.ReplicaID
	queueLen int

	mu     sync.Mutex
	inbox  []protocol.Message
	closed bool

	signal    chan struct{}
	recvC     chan []protocol.Message
	stopper   *syncutil.Stopper
	closeOnce sync.Once
	dropped   atomic.Uint64
}

// Send implements Transport. Like TCP it drops a message of an invalid type.
func (t *MemTransport) Send(m protocol.Message) {
	dst := t.net.lookup(t.id, m.To)
	if dst == nil || !m.Type.Valid() || !dst.push(m.Clone()) {
		t.dropped.Add(1)
	}
}

// Recv implements Transport.
func (t *MemTransport) Recv() <-chan []protocol.Message { return t.recvC }

// Dropped returns how many messages this endpoint's Send dropped.
func (t *MemTransport) Dropped() uint64 { return t.dropped.Load() }

// Close implements Transport.
func (t *MemTransport) Close() error {
	t.closeOnce.Do(func() {
		t.net.mu.Lock()
		if t.net.eps[t.id] == t {
			delete(t.net.eps, t.id)
		}
		t.net.mu.Unlock()
		t.mu.Lock()
		t.closed = true
		t.inbox = nil
		t.mu.Unlock()
		t.stopper.Stop()
		close(t.recvC)
	})
	return nil
}

func (t *MemTransport) push(m protocol.Message) bool {
	t.mu.Lock()
	if t.closed || len(t.inbox) >= t.queueLen {
		t.mu.Unlock()
		return false
	}
	t.inbox = append(t.inbox, m)
	t.mu.Unlock()
	select {
	case t.signal <- struct{}{}:
	default:
	}
	return true
}

// deliver moves the inbox to Recv one batch at a time; whatever arrived while the previous
// batch waited for the consumer forms the next batch.
func (t *MemTransport) deliver() {
	stop := t.stopper.ShouldStop()
	for {
		select {
		case <-t.signal:
		case <-stop:
			return
		}
		t.mu.Lock()
		batch := t.inbox
		t.inbox = nil
		t.mu.Unlock()
		if len(batch) == 0 {
			continue
		}
		select {
		case t.recvC <- batch:
		case <-stop:
			return
		}
	}
}
