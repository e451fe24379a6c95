// Package replica is Parliament's runtime: the only layer with goroutines and I/O between
// a replication engine (epaxos, multipaxos) and the world. One event loop per replica takes
// peer messages, client requests and ticks, calls the engine, and for each Ready persists
// its records, sends its messages, hands committed instances to the executor, applies
// executed commands to the key-value store and answers the clients waiting at this replica
// (protocol.Ready documents the order). With a data directory the fsync is pipelined
// (sync.go): a Ready's records go to a group committer at once and its outputs are held
// until the fsync that covers them ends, while the loop goes on stepping; one fsync covers
// every Ready appended while the previous one ran.
//
// Batching adapts to load and never waits on a timer: every client request queued while
// the loop handled the previous Ready goes into one Propose call, which the engines turn
// into one instance or slot.
//
// Replies: the replica that received a client's command answers it, after executing it
// (every replica executes every command; the others only apply it). With the cluster's
// reply_on_commit option, blind writes are answered when they commit.
package replica

import (
	"errors"
	"fmt"
	"github.com/parliament-lab/parliament/epaxos"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parliament-lab/parliament/config"
	"github.com/parliament-lab/parliament/executor"
	"github.com/parliament-lab/parliament/kv"
	"github.com/parliament-lab/parliament/protocol"
	"github.com/parliament-lab/parliament/transport"
	"github.com/parliament-lab/parliament/wal"
)

// Replier receives the reply to a client command. transport.ServerConn implements it;
// in-process callers (tests, benchmarks) pass their own. Reply is called from the
// replica's event loop and must not block.
type Replier interface {
	Reply(r protocol.Reply)
}

// Options configures one replica.
type Options struct {
	// Cluster is the validated cluster file; ID names this replica in it.
	Cluster *config.Cluster
	ID      protocol.ReplicaID
	// DataDir makes the replica durable: its write-ahead log (package wal) and its
	// state-machine snapshots live there, and Start recovers from them (docs/durability.md).
	// Log and Records must then be unset. "" = Log (below), nothing on disk.
	DataDir string
	// NoSync, with DataDir, writes the log and snapshots but never fsyncs them (tests and
	// benchmarks of the write path; a crash of the machine may lose acknowledged writes).
	NoSync bool
	// Log persists engine records when DataDir is unset. nil = DiscardLog (nothing
	// survives a restart).
	Log Log
	// Records are what Log recovered from a previous run; the engine is rebuilt from them.
	// They must not start from a snapshot (RecordSnapshot): without DataDir there is no
	// snapshot file to restore the store from.
	Records []protocol.Record
	// SnapshotEvery is the number of executed commands between state-machine snapshots;
	// after each the engine compacts (protocol.Compactor) and the log is truncated, which
	// keeps memory and disk bounded. 0 = DefaultSnapshotEvery; negative = never (memory
	// then grows with the run). Without DataDir the snapshot is kept in memory only (for
	// peers that need it).
	SnapshotEvery int
	// TruncateBytes (with DataDir): a snapshot also truncates the log — and only then is
	// it written to a file — once the log has grown by this many bytes since the last
	// truncation, or by twice what the last truncation kept, whichever is more. Between
	// truncations a snapshot only lets the engine forget (Compact): a restart then starts
	// from the older snapshot file and replays the longer log. 0 = DefaultTruncateBytes;
	// 1 = truncate at every snapshot.
	TruncateBytes int64
	// Transport overrides the TCP transport built from the cluster file (an in-memory or
	// WAN-wrapped one). The replica owns it and closes it on Stop. Clients can reach a
	// replica with an overridden transport only through Submit.
	Transport transport.Transport
	// Listen overrides the address the TCP transport listens on (e.g. "127.0.0.1:0" when
	// the test picks ports late); "" = the replica's address in Cluster.
	Listen string
	// NewEngine overrides engine construction (tests); nil = the engine the cluster's
	// protocol names, configured from the cluster file.
	NewEngine func(cfg protocol.Config) (protocol.Engine, error)
	// Seed feeds the engine's randomness (election jitter); 0 = derived from the cluster
	// ID and the replica ID, so runs are reproducible.
	Seed int64
	// SuspectTicks is how many ticks an uncommitted dependency may block execution before
	// the engine is asked to recover it (protocol.Suspecter); 0 = 2 × recovery_ticks, or
	// 2 × the EPaxos default recovery timeout when that is unset. Shorter than the
	// engine's own recovery timeout it starts spurious Explicit Prepares for instances
	// whose slow path is merely a WAN round trip away.
	SuspectTicks int
	// Logger receives the runtime's logs; nil = discard.
	Logger *slog.Logger
	// StopTimeout bounds how long Stop waits for the event loop; 0 or less =
	// DefaultStopTimeout. A loop that does not stop in time is stuck in the disk (an
	// append or fsync that never returns: a dying disk, a hung NFS mount): Stop then
	// closes the transport, leaves the log to the loop and records ErrStopTimeout for Err.
	StopTimeout time.Duration
}

// DefaultStopTimeout is how long Stop waits for the event loop unless Options.StopTimeout
// says otherwise: far above the worst fsync of a healthy disk, short enough that a
// supervisor's SIGTERM is answered before it resorts to SIGKILL.
const DefaultStopTimeout = 10 * time.Second

// Stats are the counters of one replica (for benchmarks and metrics).
type Stats struct {
	Proposed      uint64 // client commands received here and handed to the engine
	Committed     uint64 // instances or slots committed (seen in Ready.Committed)
	CommittedCmds uint64 // commands in those instances
	Executed      uint64 // instances executed
	ExecutedCmds  uint64 // commands applied to the store
	Replies       uint64 // replies sent to clients of this replica
	Redirects     uint64 // commands answered with a redirect
	Readys        uint64 // non-empty Readys handled
	Syncs         uint64 // fsyncs of the log in DataDir (its group committer's), else Log.Sync calls
	Records       uint64 // records persisted
	Messages      uint64 // messages sent
	Suspected     uint64 // instances reported to the engine's Suspect
	Snapshots     uint64 // state-machine snapshots taken here (each followed by Compact and a log truncation)
	Installed     uint64 // snapshots received from a peer and installed
	SnapshotBytes uint64 // size of the latest snapshot
	ChunksSent    uint64 // MsgSnapshotChunks sent (snapshots larger than max_frame travel in chunks)
	ChunksRecv    uint64 // MsgSnapshotChunks received
	Engine        protocol.Stats
}

// ErrStopped is returned by operations on a stopped replica.
var ErrStopped = errors.New("replica: stopped")

// ErrStopTimeout is reported by Err (wrapped, with what the loop was waiting for) when Stop
// gave up waiting for the event loop after Options.StopTimeout.
var ErrStopTimeout = errors.New("replica: stop timed out")

// pendingCmd is a command received here whose reply is owed to a client.
type pendingCmd struct {
	to   Replier
	tick uint64 // when it arrived, to forget commands that never commit (lost, client gone)
}

// Replica is one running replica.
type Replica struct {
	id     protocol.ReplicaID
	cl     *config.Cluster
	log    *slog.Logger
	eng    protocol.Engine
	susp   protocol.Suspecter // nil when the engine cannot recover on request
	statsR protocol.StatsReporter
	tr     transport.Transport
	tcp    *transport.TCP // nil when Transport was overridden
	rel    transport.Releaser
	wal    Log
	exec   *executor.Executor
	store  *kv.Store

	// Durability (durable.go).
	disk      *snapDir           // snapshot files; nil without DataDir
	compactor protocol.Compactor // nil when the engine cannot forget instances
	rows      []protocol.ReplicaID
	snap      snapshot            // the latest state-machine snapshot (taken or installed)
	snapEvery uint64              // 0 = never
	snapAt    uint64              // executed commands at the last snapshot
	execLog   []protocol.Instance // executed here, not covered by snap.frontier (installSnapshot)
	wlog      *wal.Log            // the log in DataDir (nil without); written by its group committer, read here only through logBytes
	truncMin  uint64              // TruncateBytes
	truncAt   uint64              // wlog's appended bytes after the last truncation
	liveBytes uint64              // bytes the last truncation kept
	// Snapshots larger than max_frame, in chunks (chunk.go; event loop only).
	chunkOut *chunkSender
	chunkIn  *chunkAssembler

	in inbox // client requests, filled by connection goroutines

	stopC       chan struct{}
	doneC       chan struct{}
	stopOnce    sync.Once
	stopTimeout time.Duration
	// diskSince is when the loop started waiting for the disk (a log append or fsync, a
	// snapshot file, closing the log), in Unix nanoseconds; 0 when it is not waiting. Only
	// for Stop's report of a loop that does not stop.
	diskSince atomic.Int64
	stopMu    sync.Mutex
	stopErr   error // ErrStopTimeout, wrapped; guarded by stopMu

	// Event-loop state (touched only by the loop goroutine).
	pending      pendingTable
	ticks        uint64
	now          time.Time
	waiting      map[protocol.InstanceID]waitInst // committed, not yet executed
	blockedSince map[protocol.InstanceID]uint64
	suspectTicks uint64
	replyCommit  bool
	batches      [][]protocol.Command // request batches taken from the inbox, proposed together
	batchFrom    []Replier
	suspects     []protocol.InstanceID
	err          error // first fatal error (log failure)
	leader       protocol.ReplicaID
	leaderSeen   atomic.Uint32

	stats struct {
		proposed, committed, committedCmds, executed, executedCmds atomic.Uint64
		replies, redirects, readys, syncs, records, messages       atomic.Uint64
		suspected, snapshots, installed, snapBytes                 atomic.Uint64
		chunksSent, chunksRecv                                     atomic.Uint64
		mu                                                         sync.Mutex
		engine                                                     protocol.Stats
	}
}

// Start builds the engine, the executor, the store and the transport, and starts the event
// loop.
func Start(opts Options) (*Replica, error) {
	r, err := start(opts)
	if err != nil && opts.Transport != nil {
		opts.Transport.Close() // the replica owns it, also when it does not start
	}
	return r, err
}

func start(opts Options) (*Replica, error) {
	if opts.Cluster == nil {
		return nil, errors.New("replica: Options.Cluster is nil")
	}
	cl := opts.Cluster
	if err := cl.Validate(); err != nil {
		return nil, err
	}
	self, ok := cl.Lookup(opts.ID)
	if !ok {
		return nil, fmt.Errorf("replica: id %d is not in the cluster file (ids 1..%d)", opts.ID, len(cl.Replicas))
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	base := logger // the transport adds the replica ID itself
	logger = logger.With("replica", opts.ID)
	r := &Replica{
		id:           opts.ID,
		cl:           cl,
		log:          logger,
		wal:          opts.Log,
		store:        kv.New(),
		stopC:        make(chan struct{}),
		doneC:        make(chan struct{}),
		pending:      newPendingTable(),
		waiting:      make(map[protocol.InstanceID]waitInst),
		blockedSince: make(map[protocol.InstanceID]uint64),
		replyCommit:  cl.ReplyOnCommit,
		stopTimeout:  opts.StopTimeout,
	}
	if r.stopTimeout <= 0 {
		r.stopTimeout = DefaultStopTimeout
	}
	r.in.signal = make(chan struct{}, 1)
	if r.wal == nil {
		r.wal = DiscardLog{}
	}
	r.suspectTicks = uint64(opts.SuspectTicks)
	if r.suspectTicks == 0 {
		r.suspectTicks = 2 * uint64(epaxos.DefaultConfig().RecoveryTicks)
		if cl.RecoveryTicks > 0 {
			r.suspectTicks = 2 * uint64(cl.RecoveryTicks)
		}
	}
	r.exec = executor.New(executor.Config{Apply: r.apply})
	records, err := r.openStorage(&opts)
	if err != nil {
		return nil, fmt.Errorf("replica %d: %w", opts.ID, err)
	}

	seed := opts.Seed
	if seed == 0 {
		seed = int64(cl.ClusterID ^ uint64(opts.ID)*0x9E3779B97F4A7C15)
	}
	pcfg := protocol.Config{ID: opts.ID, Replicas: cl.IDs(), Seed: seed, Records: records, Logger: logger}
	newEngine := opts.NewEngine
	if newEngine == nil {
		newEngine = func(pc protocol.Config) (protocol.Engine, error) { return NewEngine(cl, pc) }
	}
	eng, err := newEngine(pcfg)
	if err != nil {
		r.closeLog()
		return nil, fmt.Errorf("replica %d: %w", opts.ID, err)
	}
	r.eng = eng
	r.susp, _ = eng.(protocol.Suspecter)
	r.statsR, _ = eng.(protocol.StatsReporter)
	r.compactor, _ = eng.(protocol.Compactor)
	r.rows = append([]protocol.ReplicaID{0}, cl.IDs()...)
	r.truncMin = DefaultTruncateBytes
	if opts.TruncateBytes > 0 {
		r.truncMin = uint64(opts.TruncateBytes)
	}
	switch {
	case opts.SnapshotEvery == 0:
		r.snapEvery = DefaultSnapshotEvery
	case opts.SnapshotEvery > 0:
		r.snapEvery = uint64(opts.SnapshotEvery)
	}

	if opts.Transport != nil {
		r.tr = opts.Transport
	} else {
		listen := opts.Listen
		if listen == "" {
			listen = self.Address
		}
		tcp, err := transport.NewTCP(transport.Config{
			ID:        opts.ID,
			ClusterID: cl.ClusterID,
			Listen:    listen,
			Peers:     cl.Addresses(),
			Secret:    secretBytes(cl.Secret),
			Compress:  cl.Compress,
			MaxFrame:  int(cl.MaxFrame),
			Logger:    base,
			OnClient:  r.onClient,
		})
		if err != nil {
			r.closeLog()
			return nil, fmt.Errorf("replica %d: %w", opts.ID, err)
		}
		r.tcp = tcp
		r.tr = tcp
	}
	r.rel, _ = r.tr.(transport.Releaser)
	sendRuntime := func(m protocol.Message) {
		if m.Type == protocol.MsgSnapshotChunk {
			r.stats.chunksSent.Add(1)
		}
		r.tr.Send(m)
	}
	r.chunkOut = newChunkSender(r.id, r.maxFrame(), cl.Tick.D(), sendRuntime, r.log)
	r.chunkIn = newChunkAssembler(r.id, cl.Tick.D(), sendRuntime, r.log)
	r.chunkIn.ahead = r.snapshotAhead
	go r.run()
	return r, nil
}

func secretBytes(s string) []byte {
	if s == "" {
		return nil
	}
	return []byte(s)
}

// ID returns the replica's ID.
func (r *Replica) ID() protocol.ReplicaID { return r.id }

// Addr returns the address the TCP transport listens on, or "" when the transport was
// overridden.
func (r *Replica) Addr() string {
	if r.tcp == nil {
		return ""
	}
	return r.tcp.Addr().String()
}

// Stop stops the event loop, which answers the commands still waiting here with an error
// and closes the log, then closes the transport. Safe to call twice. When it returns in
// time, every goroutine has ended.
//
// Stop waits for the loop at most Options.StopTimeout. A loop still running by then is
// stuck in a call that no timeout can interrupt: a log append or fsync that has not
// returned (a dying disk, a hung NFS mount). Stop then logs why at ERROR, closes the
// transport anyway (peers and clients see the replica gone), records ErrStopTimeout for
// Err and returns, leaving the log open: the stuck call is using it. Should that call
// return later, the loop finishes on its own (what it sends is dropped by the closed
// transport), closes the log, and then closes Done.
func (r *Replica) Stop() {
	r.stopOnce.Do(func() {
		close(r.stopC)
		timer := time.NewTimer(r.stopTimeout)
		defer timer.Stop()
		select {
		case <-r.doneC:
		case <-timer.C:
			r.stopTimedOut()
		}
		r.tr.Close()
	})
}

// stopTimedOut records and logs that the loop did not stop within the timeout.
func (r *Replica) stopTimedOut() {
	cause := "its event loop is busy outside the disk (a Replier whose Reply blocks?)"
	var wait time.Duration
	if since := r.diskSince.Load(); since != 0 {
		wait = time.Since(time.Unix(0, since)).Round(time.Millisecond)
		cause = fmt.Sprintf("a log append or fsync has not returned for %v; the disk may be hung", wait)
	}
	err := fmt.Errorf("%w after %v (replica %d): %s", ErrStopTimeout, r.stopTimeout, r.id, cause)
	r.stopMu.Lock()
	r.stopErr = err
	r.stopMu.Unlock()
	r.log.Error(fmt.Sprintf("replica did not stop within %v: %s; closing the transport, leaving the log open", r.stopTimeout, cause),
		"timeout", r.stopTimeout, "disk_wait", wait)
}

// diskBegin notes, for Stop's report, that the loop starts waiting for the disk, unless it
// already is (an outer call keeps its start); it returns whether it did, for diskEnd:
// defer r.diskEnd(r.diskBegin()).
func (r *Replica) diskBegin() bool { return r.diskSince.CompareAndSwap(0, time.Now().UnixNano()) }

// diskEnd notes that the wait diskBegin started (began) is over.
func (r *Replica) diskEnd(began bool) {
	if began {
		r.diskSince.Store(0)
	}
}

// Done is closed when the event loop has stopped (by Stop or by a fatal error) and has
// closed the log.
func (r *Replica) Done() <-chan struct{} { return r.doneC }

// Err returns the fatal error that stopped the loop, if any (valid after Done is closed),
// and ErrStopTimeout, wrapped, once Stop gave up waiting for the loop (both, in one
// error that wraps each, when the loop then failed).
func (r *Replica) Err() error {
	r.stopMu.Lock()
	stopErr := r.stopErr
	r.stopMu.Unlock()
	select {
	case <-r.doneC:
		if r.err != nil {
			if stopErr != nil {
				return fmt.Errorf("%w; then the loop stopped: %w", stopErr, r.err)
			}
			return r.err
		}
	default:
	}
	return stopErr
}

// Submit hands client commands to the replica as if they had arrived on a connection;
// to receives each command's reply. The replica takes ownership of cmds: neither the
// slice nor the commands may be modified afterwards. Safe for concurrent use.
func (r *Replica) Submit(cmds []protocol.Command, to Replier) {
	r.in.push(cmds, to)
}

// Leader returns the leader this replica last heard of (Multi-Paxos; 0 when unknown or
// leaderless). Safe for concurrent use.
func (r *Replica) Leader() protocol.ReplicaID { return protocol.ReplicaID(r.leaderSeen.Load()) }

// Stats returns the replica's counters. Safe for concurrent use.
func (r *Replica) Stats() Stats {
	s := &r.stats
	out := Stats{
		Proposed: s.proposed.Load(), Committed: s.committed.Load(), CommittedCmds: s.committedCmds.Load(),
		Executed: s.executed.Load(), ExecutedCmds: s.executedCmds.Load(), Replies: s.replies.Load(),
		Redirects: s.redirects.Load(), Readys: s.readys.Load(), Syncs: s.syncs.Load(),
		Records: s.records.Load(), Messages: s.messages.Load(), Suspected: s.suspected.Load(),
		Snapshots: s.snapshots.Load(), Installed: s.installed.Load(), SnapshotBytes: s.snapBytes.Load(),
		ChunksSent: s.chunksSent.Load(), ChunksRecv: s.chunksRecv.Load(),
	}
	s.mu.Lock()
	out.Engine = s.engine
	s.mu.Unlock()
	return out
}

// Store returns the replica's key-value store. Read it only after Stop (the event loop
// owns it while running).
func (r *Replica) Store() *kv.Store { return r.store }

// onClient is called by the TCP transport for every authenticated client connection.
func (r *Replica) onClient(c *transport.ServerConn) {
	c.SetHandler(func(cmds []protocol.Command) { r.in.push(cmds, c) })
}

// inbox is the queue between connection goroutines and the event loop: a mutex-guarded
// list of request batches plus a one-slot signal channel, so that producers never block on
// the loop and the loop takes everything queued in one swap. Batches are queued as they
// came (the transport hands their ownership over), not copied.
type inbox struct {
	mu      sync.Mutex
	batches [][]protocol.Command
	from    []Replier // from[i] sent batches[i]
	signal  chan struct{}
}

func (q *inbox) push(cmds []protocol.Command, to Replier) {
	if len(cmds) == 0 {
		return
	}
	q.mu.Lock()
	wake := len(q.batches) == 0
	q.batches = append(q.batches, cmds)
	q.from = append(q.from, to)
	q.mu.Unlock()
	if wake {
		select {
		case q.signal <- struct{}{}:
		default:
		}
	}
}

// take appends everything queued to batches and from and empties the queue.
func (q *inbox) take(batches [][]protocol.Command, from []Replier) ([][]protocol.Command, []Replier) {
	q.mu.Lock()
	if len(batches) == 0 {
		// Swap the backing arrays instead of copying (the common case).
		batches, q.batches = q.batches, batches[:0]
		from, q.from = q.from, from[:0]
	} else {
		batches = append(batches, q.batches...)
		from = append(from, q.from...)
		clear(q.batches)
		clear(q.from)
		q.batches, q.from = q.batches[:0], q.from[:0]
	}
	q.mu.Unlock()
	return batches, from
}
