package bench

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parliament-lab/parliament/config"
	"github.com/parliament-lab/parliament/protocol"
	"github.com/parliament-lab/parliament/replica"
	"github.com/parliament-lab/parliament/transport"
	"github.com/parliament-lab/parliament/wire"
	"github.com/parliament-lab/parliament/workloads"
)

// cluster is an in-process cluster: one replica.Replica per site, each on its own TCP
// transport on loopback, wrapped in the WAN emulator (transport.NewWAN) so that every
// replica-to-replica message is delayed by the one-way latency of its site pair, and in a
// counting wrapper that measures messages and bytes.
type cluster struct {
	cl       *config.Cluster
	matrix   *workloads.Matrix // nil = no WAN
	sites    []string          // sites[i] is the site of replica i+1
	replicas []*replica.Replica
	counters []*countingTransport
	tcps     []*transport.TCP // for their drop counters
	wans     []*transport.WAN // nil without a WAN
	down     []atomic.Bool
	dataDir  string // durable runs: the WAL directories live here
	stopOnce sync.Once
}

// clusterOptions are the knobs of an in-process cluster.
type clusterOptions struct {
	protocol string
	n        int
	matrix   *workloads.Matrix // already sized for n replicas (ForReplicas); nil = no WAN
	leader   string            // Multi-Paxos preferred leader site ("" = first site)
	durable  bool
	compress bool // s2 on the peer connections
	seed     int64
	tick     time.Duration
	// electionTicks for Multi-Paxos (0 = engine default).
	electionTicks int
	// recoveryTicks for EPaxos (0 = engine default).
	recoveryTicks int
	logger        *slog.Logger
}

// startCluster starts the replicas and waits until they can serve (Multi-Paxos: the
// preferred leader is elected).
func startCluster(o clusterOptions) (*cluster, error) {
	c := &cluster{matrix: o.matrix, sites: workloads.PlaceReplicas(o.matrix, o.n)}
	c.down = make([]atomic.Bool, o.n)
	cl := &config.Cluster{ClusterID: uint64(o.seed)*2654435761 | 1, Protocol: o.protocol, Tick: config.Duration(o.tick),
		ElectionTicks: o.electionTicks, RecoveryTicks: o.recoveryTicks, Durable: &o.durable}
	lns, err := listenLoopback(o.n)
	if err != nil {
		return nil, err
	}
	handed := 0 // lns[:handed] are the transports' now, to serve and close
	defer func() {
		for _, l := range lns[handed:] {
			l.Close()
		}
	}()
	for i, l := range lns {
		cl.Replicas = append(cl.Replicas, config.Replica{ID: protocol.ReplicaID(i + 1), Address: l.Addr().String(), Site: c.sites[i]})
	}
	if o.durable {
		dir, err := os.MkdirTemp("", "parliament-bench-")
		if err != nil {
			return nil, err
		}
		c.dataDir = dir
		cl.DataDir = dir
	}
	cl.SetDefaults()
	if err := cl.Validate(); err != nil {
		return nil, err
	}
	c.cl = cl
	leaderID := protocol.ReplicaID(1)
	if o.leader != "" {
		leaderID = 0
		for i, s := range c.sites {
			if s == o.leader {
				leaderID = protocol.ReplicaID(i + 1)
				break
			}
		}
		if leaderID == 0 {
			return nil, fmt.Errorf("bench: leader site %q is not one of the replicas' sites %v", o.leader, c.sites)
		}
	}
	var tm *transport.Matrix
	if o.matrix != nil {
		tm = &transport.Matrix{Sites: o.matrix.Sites, RTTMillis: o.matrix.RTTMillis}
	}
	siteOf := cl.Sites()
	logger := o.logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	// First every replica's transport (listening at once) and log, then the replicas
	// themselves, the preferred Multi-Paxos leader first: the slow parts (durable logs)
	// are done before any engine ticks, so the replicas start within moments of each
	// other and the leader's first Prepares find every peer listening.
	c.replicas = make([]*replica.Replica, o.n)
	c.counters = make([]*countingTransport, o.n)
	c.tcps = make([]*transport.TCP, o.n)
	c.wans = make([]*transport.WAN, o.n)
	closeUnstarted := func() {
		for i, ct := range c.counters {
			if ct != nil && c.replicas[i] == nil {
				ct.Close()
			}
		}
	}
	for i := range o.n {
		id := protocol.ReplicaID(i + 1)
		handed = i + 1 // NewTCP closes it even when it fails
		tcp, err := transport.NewTCP(transport.Config{ID: id, ClusterID: cl.ClusterID, Listener: lns[i], Peers: cl.Addresses(), Compress: o.compress, Logger: logger})
		if err != nil {
			closeUnstarted()
			c.stop()
			return nil, err
		}
		var tr transport.Transport = tcp
		var wan *transport.WAN
		if tm != nil {
			w, err := transport.NewWANChecked(tcp, transport.WANConfig{Matrix: tm, Sites: siteOf, Self: id, Seed: o.seed + int64(id)})
			if err != nil {
				tcp.Close()
				closeUnstarted()
				c.stop()
				return nil, err
			}
			tr, wan = w, w
		}
		c.counters[i], c.tcps[i], c.wans[i] = &countingTransport{Transport: tr}, tcp, wan
	}
	order := make([]int, 0, o.n)
	order = append(order, int(leaderID-1))
	for i := range o.n {
		if i != int(leaderID-1) {
			order = append(order, i)
		}
	}
	for _, i := range order {
		id := protocol.ReplicaID(i + 1)
		rank := replica.RankByLatency(tm, siteOf, cl.IDs(), id)
		// Durable replicas get a data directory, as `parliament replica` does: the runtime
		// opens the write-ahead log there, snapshots and truncates it (an external Log is
		// never truncated, so a long durable run would grow its log without bound).
		var dataDir string
		if o.durable {
			dataDir = filepath.Join(c.dataDir, strconv.Itoa(int(id)))
		}
		r, err := replica.Start(replica.Options{
			Cluster: cl, ID: id, Transport: c.counters[i], DataDir: dataDir, Seed: o.seed*31 + int64(id), Logger: logger,
			NewEngine: func(pc protocol.Config) (protocol.Engine, error) {
				// Two benchmark choices beyond the cluster file: EPaxos ranks peers by the
				// benchmark's own matrix (not only the built-in one), and Multi-Paxos gets
				// the --leader site's replica as its PreferredLeader, which campaigns one
				// tick after the start while every other replica waits its full election
				// timeout (at least 50 ticks in-process, see electionTicks), so it wins the
				// first election. Later elections (after a crash) are the normal randomized
				// ones.
				return replica.NewEngineWith(cl, pc, replica.EngineChoices{LatencyRank: rank, PreferredLeader: leaderID})
			},
		})
		if err != nil {
			// Start closed this replica's transport.
			c.counters[i] = nil
			closeUnstarted()
			c.stop()
			return nil, err
		}
		c.replicas[i] = r
	}
	return c, nil
}

// listenLoopback binds n listeners on loopback ports the kernel picks. The replicas'
// transports serve them, so that no other process can take a port between its choice and
// the replica's bind.
func listenLoopback(n int) ([]net.Listener, error) {
	lns := make([]net.Listener, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return nil, fmt.Errorf("bench: listen on loopback: %w", err)
		}
		lns = append(lns, l)
	}
	return lns, nil
}

// crash stops replica id (0-based index i) for good: its goroutines end, its connections
// close, and its peers see it as unreachable.
func (c *cluster) crash(i int) {
	c.down[i].Store(true)
	c.replicas[i].Stop()
}

// stop stops every replica and removes the durable data.
func (c *cluster) stop() {
	c.stopOnce.Do(func() {
		var wg sync.WaitGroup
		for _, r := range c.replicas {
			if r == nil {
				continue // startCluster failed before starting it
			}
			wg.Add(1)
			go func() { defer wg.Done(); r.Stop() }()
		}
		wg.Wait()
		if c.dataDir != "" {
			os.RemoveAll(c.dataDir)
		}
	})
}

// totals sums the replicas' counters.
type totals struct {
	msgs, bytes      uint64
	fast, slow       uint64
	elections        uint64
	recoveries       uint64 // campaigns (Multi-Paxos) or explicit prepares (EPaxos) started
	dropped          uint64 // messages dropped by the TCP transports and the WAN emulators
	leaderCommits    uint64
	proposed, synced uint64
}

func (c *cluster) totals() totals {
	var t totals
	for i, r := range c.replicas {
		s := r.Stats()
		t.msgs += c.counters[i].msgs.Load()
		t.bytes += c.counters[i].bytes.Load()
		t.fast += s.Engine.FastPath
		t.slow += s.Engine.SlowPath
		t.elections += s.Engine.Elections
		t.recoveries += s.Engine.Recoveries
		t.dropped += c.tcps[i].Stats().Dropped
		if c.wans[i] != nil {
			t.dropped += c.wans[i].Dropped()
		}
		t.leaderCommits += s.Engine.Committed
		t.proposed += s.Proposed
		t.synced += s.Syncs
	}
	return t
}

// agreedLeader returns the Multi-Paxos leader every live replica believes in, or 0 while
// they disagree or do not know.
func (c *cluster) agreedLeader() protocol.ReplicaID {
	var l protocol.ReplicaID
	for i, r := range c.replicas {
		if c.down[i].Load() {
			continue
		}
		v := r.Leader()
		if v == 0 || (l != 0 && v != l) {
			return 0
		}
		l = v
	}
	return l
}

// countingTransport counts the messages a replica sends and their size on the wire
// (frame header + payload as the wire codec encodes them).
type countingTransport struct {
	transport.Transport
	mu          sync.Mutex
	buf         []byte
	msgs, bytes atomic.Uint64
}

func (t *countingTransport) Send(m protocol.Message) {
	t.mu.Lock()
	t.buf = wire.AppendMessageFrame(t.buf[:0], &m)
	n := len(t.buf)
	t.mu.Unlock()
	t.msgs.Add(1)
	t.bytes.Add(uint64(n))
	t.Transport.Send(m)
}
