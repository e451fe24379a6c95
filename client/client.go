// Package client is the Go client of a Parliament cluster: Put, Get and CAS with
// exactly-once retries, and a pipelined asynchronous API (Submit) for benchmarks.
//
// Every command carries (client ID, sequence number). The client ID is random per Client;
// sequence numbers start at 1. A command that times out or whose connection breaks is sent
// again with the same pair — possibly to another replica — and the replicas' key-value
// store executes it once. A replica that will not serve a command answers with a redirect
// (to the leader, or to "any other replica"), which the client follows.
//
// One Client holds one connection at a time; commands are pipelined on it. A single
// goroutine reads replies and calls the completion callbacks, so callbacks must be quick
// and must not block on further replies (they may call Submit).
package client

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parliament-lab/parliament/config"
	"github.com/parliament-lab/parliament/protocol"
	"github.com/parliament-lab/parliament/transport"
)

// Defaults.
const (
	DefaultTimeout        = time.Second
	DefaultDialTimeout    = time.Second
	DefaultMaxOutstanding = 4096
	// redirectBackoff delays the retry of a command that a replica redirected to "any
	// replica" (typically: no leader during a Multi-Paxos election).
	redirectBackoff = 10 * time.Millisecond
	// redirectsBeforeRotate: after this many leaderless redirects in a row, try another
	// replica (the current one may be cut off from the majority).
	redirectsBeforeRotate = 5
)

// Errors.
var (
	// ErrClosed: the Client was closed before the command completed.
	ErrClosed = errors.New("client: closed")
	// ErrUnavailable wraps the reason no replica could be reached.
	ErrUnavailable = errors.New("client: no replica reachable")
	// ErrRefused: the replica refused the command (ResultError); the message follows.
	ErrRefused = errors.New("client: command refused")
)

// Options configures a Client.
type Options struct {
	// Cluster supplies the replica addresses, the cluster ID, the secret and compression.
	// Alternatively set Addresses and ClusterID (and Secret, Compress) directly; non-zero
	// fields here win over the cluster file.
	Cluster   *config.Cluster
	Addresses map[protocol.ReplicaID]string
	ClusterID uint64
	Secret    []byte
	Compress  bool
	// Replica is the replica to talk to first; 0 = any live one. If it fails later the
	// client moves to another one.
	Replica protocol.ReplicaID
	// Timeout is how long one attempt may take before the command is sent again (same
	// client ID and seq). Default 1s.
	Timeout time.Duration
	// DialTimeout bounds each connection attempt (including the handshake). Default 1s.
	DialTimeout time.Duration
	// MaxOutstanding bounds the commands in flight; Submit blocks beyond it. Default 4096.
	MaxOutstanding int
	// ClientID overrides the random client ID (tests that need determinism).
	ClientID uint64
	Logger   *slog.Logger
}

// Callback receives the outcome of a submitted command: the replica's reply (never a
// redirect) or an error (ErrClosed, or the context's error).
type Callback func(rep protocol.Reply, err error)

type op struct {
	cmd       protocol.Command
	done      Callback
	sent      int64     // last (re)transmission, as Client.now
	notBefore time.Time // a redirected command waits until then
}

// Client talks to a cluster. Safe for concurrent use.
type Client struct {
	id       uint64
	addrs    map[protocol.ReplicaID]string
	order    []protocol.ReplicaID // rotation order, preferred replica first
	ccfg     transport.ClientConfig
	timeout  time.Duration
	log      *slog.Logger
	maxOut   int
	epoch    time.Time    // monotonic origin of clock
	clock    atomic.Int64 // coarse time since epoch, refreshed by the manager goroutine
	stopC    chan struct{}
	wg       sync.WaitGroup
	closeErr sync.Once
	// Counters behind Stats, bumped under mu on the rare retry paths only (never per
	// reply), and read without it.
	resends         atomic.Uint64
	redirectAnswers atomic.Uint64

	mu        sync.Mutex
	seq       uint64
	ops       map[uint64]*op
	conn      *transport.ClientConn
	connTo    protocol.ReplicaID
	next      int   // index in order of the next replica to try
	lastReply int64 // Client.now of the last reply
	redirects int   // leaderless redirects in a row
	closed    bool
	switchTo  protocol.ReplicaID      // replica a redirect asked for, 0 = none
	dead      []*transport.ClientConn // abandoned connections for the manager to close
	delayed   []uint64                // redirected commands waiting for their backoff
	doneBuf   []completion
	kick      chan struct{} // wakes the manager (broken connection, redirect)
	free      []*op         // recycled ops
	room      sync.Cond     // signalled when an outstanding command completes (on mu)
	waiters   int           // Submit calls waiting for room
}

// New connects to a replica (Options.Replica, or the first live one) and returns the
// client. It fails with one clear error when no replica is reachable or when the
// handshake is refused (wrong cluster ID or secret).
func New(opts Options) (*Client, error) {
	c := &Client{
		addrs:   opts.Addresses,
		timeout: opts.Timeout,
		log:     opts.Logger,
		stopC:   make(chan struct{}),
		ops:     make(map[uint64]*op),
		kick:    make(chan struct{}, 1),
		ccfg: transport.ClientConfig{
			ClusterID:   opts.ClusterID,
			Secret:      opts.Secret,
			Compress:    opts.Compress,
			DialTimeout: opts.DialTimeout,
		},
	}
	if cl := opts.Cluster; cl != nil {
		if c.addrs == nil {
			c.addrs = cl.Addresses()
		}
		if c.ccfg.ClusterID == 0 {
			c.ccfg.ClusterID = cl.ClusterID
		}
		if c.ccfg.Secret == nil && cl.Secret != "" {
			c.ccfg.Secret = []byte(cl.Secret)
		}
		c.ccfg.Compress = c.ccfg.Compress || cl.Compress
	}
	if len(c.addrs) == 0 {
		return nil, errors.New("client: no replica addresses (set Options.Cluster or Options.Addresses)")
	}
	if c.ccfg.ClusterID == 0 {
		return nil, errors.New("client: cluster ID is 0 (set Options.Cluster or Options.ClusterID)")
	}
	if opts.Replica != 0 {
		if _, ok := c.addrs[opts.Replica]; !ok {
			return nil, fmt.Errorf("client: replica %d is not in the cluster (ids %v)", opts.Replica, sortedIDs(c.addrs))
		}
	}
	if c.timeout <= 0 {
		c.timeout = DefaultTimeout
	}
	if c.ccfg.DialTimeout <= 0 {
		c.ccfg.DialTimeout = DefaultDialTimeout
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	maxOut := opts.MaxOutstanding
	if maxOut <= 0 {
		maxOut = DefaultMaxOutstanding
	}
	c.maxOut = maxOut
	c.room.L = &c.mu
	c.epoch = time.Now()
	// Room for every outstanding command twice over (a resend while the first copy is
	// still queued), so that Send never finds the queue full in normal operation.
	c.ccfg.QueueLen = max(2*maxOut, transport.DefaultQueueLen)
	c.id = opts.ClientID
	if c.id == 0 {
		c.id = randomID()
	}
	c.order = rotation(c.addrs, opts.Replica, c.id)
	c.log = c.log.With("client", c.id)

	// Connect now so that an unreachable cluster or a refused handshake is reported by New.
	var firstErr error
	tries := len(c.order)
	if opts.Replica != 0 {
		tries = 1
	}
	for i := 0; i < tries; i++ {
		id := c.order[i]
		conn, err := c.dial(context.Background(), id)
		if err == nil {
			c.next = (i + 1) % len(c.order)
			c.setConn(conn, id)
			c.wg.Add(1)
			go c.manage()
			return c, nil
		}
		if isRefusal(err) {
			return nil, fmt.Errorf("replica %d at %s refused the connection: %w", id, c.addrs[id], err)
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	if opts.Replica != 0 {
		return nil, fmt.Errorf("%w: replica %d at %s: %v", ErrUnavailable, opts.Replica, c.addrs[opts.Replica], firstErr)
	}
	return nil, fmt.Errorf("%w (tried %d): %v", ErrUnavailable, tries, firstErr)
}

// ID returns the client ID.
func (c *Client) ID() uint64 { return c.id }

// Stats counts, since New, the commands a Client sent again because of what it saw (or did
// not see) from a replica. Both are 0 while every command is answered within the timeout
// by a replica that serves it. A resend keeps the command's (client ID, seq), so the
// store still executes it once.
type Stats struct {
	// Resends: commands sent again because no reply came within Options.Timeout of their
	// last transmission, one per command per timeout. Not counted: the outstanding
	// commands the client sends again on a new connection (after a broken connection, a
	// redirect to the leader, or a move to another replica): they would count each
	// command once per reconnection, not once per lost reply.
	Resends uint64
	// Redirects: redirect answers (protocol.ResultRedirect: no leader known, e.g. during a
	// Multi-Paxos election, or the replica is stopping) to outstanding commands of this
	// client. After each one the client sends that command again: to the leader the
	// answer names, or after a short backoff.
	Redirects uint64
}

// Stats returns the client's counters. Safe for concurrent use; the counters only grow,
// so the difference of two calls counts what happened between them.
func (c *Client) Stats() Stats {
	return Stats{Resends: c.resends.Load(), Redirects: c.redirectAnswers.Load()}
}

// Replica returns the replica the client is connected to (0 while reconnecting).
func (c *Client) Replica() protocol.ReplicaID {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.connTo
}

// Close fails every outstanding command with ErrClosed, closes the connection and waits
// for the client's goroutines. Safe to call twice.
func (c *Client) Close() error {
	c.closeErr.Do(func() {
		c.mu.Lock()
		c.closed = true
		conn := c.conn
		c.conn = nil
		ops := c.ops
		c.ops = map[uint64]*op{}
		c.room.Broadcast()
		c.mu.Unlock()
		close(c.stopC)
		if conn != nil {
			conn.Close()
		}
		c.wg.Wait()
		for _, o := range ops {
			o.done(protocol.Reply{}, ErrClosed)
		}
	})
	return nil
}

// Submit sends cmd (its ClientID and Seq are assigned here) and calls done once with the
// reply. It blocks while MaxOutstanding commands are in flight, and returns the command's
// sequence number (0 with done already called with ErrClosed on a closed client). done is
// called from the client's reader goroutine.
func (c *Client) Submit(cmd protocol.Command, done Callback) uint64 {
	c.mu.Lock()
	for !c.closed && len(c.ops) >= c.maxOut {
		c.waiters++
		c.room.Wait()
		c.waiters--
	}
	if c.closed {
		c.mu.Unlock()
		done(protocol.Reply{}, ErrClosed)
		return 0
	}
	c.seq++
	cmd.ClientID, cmd.Seq = c.id, c.seq
	var o *op
	if n := len(c.free); n > 0 {
		o = c.free[n-1]
		c.free = c.free[:n-1]
	} else {
		o = new(op)
	}
	*o = op{cmd: cmd, done: done}
	c.ops[cmd.Seq] = o
	if c.conn != nil {
		c.sendLocked(c.conn, o, c.clock.Load())
	}
	c.mu.Unlock()
	return cmd.Seq
}

// now returns the time since epoch and refreshes the coarse clock Submit reads (one
// clock read per reply batch instead of one per command).
func (c *Client) now() int64 {
	t := int64(time.Since(c.epoch))
	c.clock.Store(t)
	return t
}

// Do runs one command synchronously: it returns the reply (never a redirect), retrying
// until ctx is done.
func (c *Client) Do(ctx context.Context, cmd protocol.Command) (protocol.Reply, error) {
	type result struct {
		rep protocol.Reply
		err error
	}
	ch := make(chan result, 1)
	c.Submit(cmd, func(rep protocol.Reply, err error) { ch <- result{rep, err} })
	select {
	case res := <-ch:
		if res.err == nil && res.rep.Result == protocol.ResultError {
			return res.rep, fmt.Errorf("%w: %s", ErrRefused, res.rep.Value)
		}
		return res.rep, res.err
	case <-ctx.Done():
		// The command stays outstanding and is retried until it completes (its callback
		// then fills ch, which nobody reads): the store's sessions expect gap-free
		// sequence numbers per client.
		select {
		case res := <-ch: // completed meanwhile
			return res.rep, res.err
		default:
		}
		return protocol.Reply{}, fmt.Errorf("client: %s: no reply: %w", cmd.Op, ctx.Err())
	}
}

// Put writes value to key.
func (c *Client) Put(ctx context.Context, key, value []byte) error {
	_, err := c.Do(ctx, protocol.Command{Op: protocol.OpPut, Key: key, Value: value})
	return err
}

// Get reads key: its value and whether it exists.
func (c *Client) Get(ctx context.Context, key []byte) ([]byte, bool, error) {
	rep, err := c.Do(ctx, protocol.Command{Op: protocol.OpGet, Key: key})
	if err != nil {
		return nil, false, err
	}
	switch rep.Result {
	case protocol.ResultOK:
		return rep.Value, true, nil
	case protocol.ResultNotFound:
		return nil, false, nil
	}
	return nil, false, fmt.Errorf("client: get: unexpected result %v", rep.Result)
}

// CAS writes newValue to key if its current value equals old (an absent key equals an
// empty old). It reports whether it wrote, and the current value when it did not.
func (c *Client) CAS(ctx context.Context, key, old, newValue []byte) (bool, []byte, error) {
	rep, err := c.Do(ctx, protocol.Command{Op: protocol.OpCAS, Key: key, Old: old, Value: newValue})
	if err != nil {
		return false, nil, err
	}
	switch rep.Result {
	case protocol.ResultOK:
		return true, nil, nil
	case protocol.ResultCASFailed:
		return false, rep.Value, nil
	}
	return false, nil, fmt.Errorf("client: cas: unexpected result %v", rep.Result)
}

func randomID() uint64 {
	var b [8]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			panic("client: crypto/rand: " + err.Error())
		}
		if id := binary.LittleEndian.Uint64(b[:]); id != 0 {
			return id
		}
	}
}

func sortedIDs(m map[protocol.ReplicaID]string) []protocol.ReplicaID {
	ids := make([]protocol.ReplicaID, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids
}

// rotation orders the replicas to try: the preferred one first, otherwise starting at a
// replica chosen by the client ID (spreading clients over replicas), then ascending.
func rotation(m map[protocol.ReplicaID]string, preferred protocol.ReplicaID, id uint64) []protocol.ReplicaID {
	ids := sortedIDs(m)
	start := int(id % uint64(len(ids)))
	if preferred != 0 {
		for i, r := range ids {
			if r == preferred {
				start = i
			}
		}
	}
	return append(ids[start:len(ids):len(ids)], ids[:start]...)
}
