package replica

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parliament-lab/parliament/config"
	"github.com/parliament-lab/parliament/protocol"
	"github.com/parliament-lab/parliament/transport"
	"github.com/parliament-lab/parliament/wal"
)

// gatedLog is an asyncLog whose fsyncs the test runs by hand: a worker takes everything
// committed so far as one batch, reports its size on started, and finishes it with the
// next value sent on finish (nil: durable; an error: the fsync failed).
type gatedLog struct {
	mu      sync.Mutex
	cond    *sync.Cond
	queue   []protocol.Record // committed, not yet in an fsync
	waiters []chan error
	recs    []protocol.Record // durable
	syncs   uint64
	closed  bool

	appended chan int   // records of each commitAsync, as it returns
	started  chan int   // records covered by each fsync, as it starts
	finish   chan error // ends the fsync in flight
	open     chan struct{}
	openOnce sync.Once
	done     chan struct{}
}

func newGatedLog() *gatedLog {
	l := &gatedLog{
		appended: make(chan int, 100),
		started:  make(chan int, 100),
		finish:   make(chan error),
		open:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	l.cond = sync.NewCond(&l.mu)
	go l.run()
	return l
}

func (l *gatedLog) commitAsync(recs []protocol.Record) <-chan error {
	c := make(chan error, 1)
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		c <- wal.ErrClosed
		return c
	}
	l.queue = append(l.queue, protocol.CloneRecords(recs)...)
	l.waiters = append(l.waiters, c)
	l.cond.Signal()
	l.mu.Unlock()
	l.appended <- len(recs)
	return c
}

func (l *gatedLog) run() {
	defer close(l.done)
	for {
		l.mu.Lock()
		for !l.closed && len(l.waiters) == 0 {
			l.cond.Wait()
		}
		if len(l.waiters) == 0 {
			l.mu.Unlock()
			return
		}
		batch, waiters := l.queue, l.waiters
		l.queue, l.waiters = nil, nil
		l.mu.Unlock()
		l.started <- len(batch)
		var err error
		select {
		case err = <-l.finish:
		case <-l.open:
		}
		l.mu.Lock()
		if err == nil {
			l.recs = append(l.recs, batch...)
			l.syncs++
		}
		l.mu.Unlock()
		for _, w := range waiters {
			w <- err
		}
	}
}

// openGate makes every later fsync succeed at once (cleanup: Stop waits for them).
func (l *gatedLog) openGate() { l.openOnce.Do(func() { close(l.open) }) }

func (l *gatedLog) syncCount() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.syncs
}

func (l *gatedLog) Append(recs []protocol.Record) error {
	return errors.New("gatedLog: the runtime must use commitAsync")
}

func (l *gatedLog) Sync() error { return errors.New("gatedLog: the runtime must use commitAsync") }

func (l *gatedLog) Close() error {
	l.mu.Lock()
	l.closed = true
	l.cond.Signal()
	l.mu.Unlock()
	l.openGate()
	<-l.done
	return nil
}

// gateEngine commits every proposed command at once as instance (1, n): one record, one
// committed instance, and one ECommit to replica 2 with Deps [(1, n)]; a command on key
// "redirect" is redirected to leader 7 and persists nothing. Like the real engines it
// reuses a Ready's memory after Advance — and scribbles over it, so that a runtime that
// kept the Ready instead of a copy sends garbage.
type gateEngine struct {
	next uint64
	rd   protocol.Ready
}

func (e *gateEngine) Propose(cmds []protocol.Command) {
	for _, c := range cmds {
		if string(c.Key) == "redirect" {
			e.rd.Redirect = append(e.rd.Redirect, c)
			e.rd.Leader = 7
			continue
		}
		e.next++
		id := protocol.InstanceID{Replica: 1, Num: e.next}
		inst := protocol.Instance{ID: id, Status: protocol.StatusCommitted, Cmds: []protocol.Command{c},
			Deps: []protocol.InstanceID{{Replica: 1, Num: e.next - 1}}}
		e.rd.Persist = append(e.rd.Persist, protocol.Record{Type: protocol.RecordInstance, Inst: inst})
		e.rd.Committed = append(e.rd.Committed, inst)
		e.rd.Messages = append(e.rd.Messages, protocol.Message{Type: protocol.MsgECommit, From: 1, To: 2,
			Inst: id, Cmds: inst.Cmds, Deps: []protocol.InstanceID{id}})
	}
}

func (e *gateEngine) Step(protocol.Message) {}
func (e *gateEngine) Tick()                 {}
func (e *gateEngine) Ready() protocol.Ready { return e.rd }

func (e *gateEngine) Advance(rd protocol.Ready) {
	for i := range rd.Messages {
		m := &rd.Messages[i]
		m.To = 99
		for j := range m.Deps {
			m.Deps[j] = protocol.InstanceID{Replica: 9, Num: 0xdead}
		}
	}
	for i := range rd.Committed {
		for j := range rd.Committed[i].Deps {
			rd.Committed[i].Deps[j] = protocol.InstanceID{Replica: 9, Num: 0xdead}
		}
		rd.Committed[i].ID = protocol.InstanceID{Replica: 9, Num: 0xdead}
	}
	for i := range rd.Redirect {
		rd.Redirect[i].ClientID = 0xdead
	}
	e.rd = protocol.Ready{Leader: e.rd.Leader, Persist: rd.Persist[:0], Messages: rd.Messages[:0],
		Committed: rd.Committed[:0], Redirect: rd.Redirect[:0]}
}

// replyRecorder keeps every reply in arrival order.
type replyRecorder struct {
	mu   sync.Mutex
	reps []protocol.Reply
	c    chan struct{}
}

func newReplyRecorder() *replyRecorder { return &replyRecorder{c: make(chan struct{}, 1)} }

func (w *replyRecorder) Reply(r protocol.Reply) {
	w.mu.Lock()
	w.reps = append(w.reps, r)
	w.mu.Unlock()
	select {
	case w.c <- struct{}{}:
	default:
	}
}

func (w *replyRecorder) got() []protocol.Reply {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]protocol.Reply(nil), w.reps...)
}

// waitFor waits until n replies arrived and returns them.
func (w *replyRecorder) waitFor(t *testing.T, n int) []protocol.Reply {
	t.Helper()
	timer := time.NewTimer(5 * time.Second)
	defer timer.Stop()
	for {
		if got := w.got(); len(got) >= n {
			return got
		}
		select {
		case <-w.c:
		case <-timer.C:
			t.Fatalf("%d replies after 5s, want %d: %+v", len(w.got()), n, w.got())
		}
	}
}

type gatedReplica struct {
	r    *Replica
	log  *gatedLog
	peer transport.Transport // replica 2, where the messages go
	w    *replyRecorder
}

func startGated(t *testing.T) *gatedReplica {
	t.Helper()
	cl := testCluster(t, config.MultiPaxos, 1)
	cl.Tick = config.Duration(10 * time.Second) // (the engine ignores ticks anyway)
	net := transport.NewMemNetwork()
	g := &gatedReplica{log: newGatedLog(), peer: net.Transport(2), w: newReplyRecorder()}
	r, err := Start(Options{
		Cluster: cl, ID: 1, Log: g.log, Transport: net.Transport(1),
		NewEngine: func(protocol.Config) (protocol.Engine, error) { return &gateEngine{}, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	g.r = r
	t.Cleanup(func() { g.peer.Close() })
	t.Cleanup(r.Stop)
	t.Cleanup(g.log.openGate) // runs first: Stop waits for the fsync in flight
	return g
}

// submit proposes one command and, when it persists a record, waits until the loop has
// handed it to the log (so later checks see the loop past that Ready).
func (g *gatedReplica) submit(t *testing.T, cmd protocol.Command) {
	t.Helper()
	g.r.Submit([]protocol.Command{cmd}, g.w)
	if string(cmd.Key) == "redirect" {
		return
	}
	select {
	case n := <-g.log.appended:
		if n != 1 {
			t.Fatalf("commit of %d records, want 1", n)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("seq %d never reached the log", cmd.Seq)
	}
}

// waitReadys waits until the loop has taken n Readys.
func (g *gatedReplica) waitReadys(t *testing.T, n uint64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for g.r.Stats().Readys < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d Readys after 5s, want %d", g.r.Stats().Readys, n)
		}
		time.Sleep(time.Millisecond)
	}
}

func (g *gatedReplica) fsyncStarts(t *testing.T) int {
	t.Helper()
	select {
	case n := <-g.log.started:
		return n
	case <-time.After(5 * time.Second):
		t.Fatal("no fsync started")
		return 0
	}
}

// sent returns the messages replica 2 has received so far (without waiting).
func (g *gatedReplica) sent() []protocol.Message {
	var out []protocol.Message
	for {
		select {
		case b := <-g.peer.Recv():
			out = append(out, b...)
		default:
			return out
		}
	}
}

// waitSent waits for n messages at replica 2.
func (g *gatedReplica) waitSent(t *testing.T, n int) []protocol.Message {
	t.Helper()
	var out []protocol.Message
	timer := time.NewTimer(5 * time.Second)
	defer timer.Stop()
	for len(out) < n {
		select {
		case b := <-g.peer.Recv():
			out = append(out, b...)
		case <-timer.C:
			t.Fatalf("%d messages at replica 2 after 5s, want %d", len(out), n)
		}
	}
	return out
}

func checkCommit(t *testing.T, m protocol.Message, num uint64) {
	t.Helper()
	id := protocol.InstanceID{Replica: 1, Num: num}
	if m.Type != protocol.MsgECommit || m.To != 2 || m.Inst != id || len(m.Deps) != 1 || m.Deps[0] != id || len(m.Cmds) != 1 {
		t.Fatalf("message = %+v, want the ECommit of %v with Deps [%v] (a copy the engine did not scribble on)", m, id, id)
	}
}

// TestPipelinedFsyncHoldsOutputs: with an asynchronous log, the loop goes on while an
// fsync is in flight, and nothing of a Ready — its message, the reply of the command it
// commits, a redirect — leaves before an fsync that started after its records were
// appended has ended; the Readys that arrive during one fsync share the next, and their
// outputs leave in order, copies unaffected by the engine's reuse of its memory.
func TestPipelinedFsyncHoldsOutputs(t *testing.T) {
	g := startGated(t)
	g.submit(t, put(1, 1, "a", "1"))
	if n := g.fsyncStarts(t); n != 1 {
		t.Fatalf("first fsync covers %d records, want 1", n)
	}
	// While it is in flight the loop takes three more Readys: B and C persist a record
	// each, R only redirects, D fences (its commit shows the loop is past R).
	g.submit(t, put(1, 2, "b", "2"))
	g.submit(t, put(1, 3, "c", "3"))
	g.submit(t, put(1, 4, "redirect", "r"))
	g.waitReadys(t, 4) // R in a Ready of its own, not with D
	g.submit(t, put(1, 5, "d", "5"))
	if got := g.w.got(); len(got) != 0 {
		t.Fatalf("replies before any fsync ended: %+v", got)
	}
	if got := g.sent(); len(got) != 0 {
		t.Fatalf("messages sent before any fsync ended: %+v", got)
	}

	// The first fsync ends: A leaves; B, C, D were appended after it started.
	g.log.finish <- nil
	if n := g.fsyncStarts(t); n != 3 {
		t.Fatalf("second fsync covers %d records, want 3 (B, C and D: group commit)", n)
	}
	reps := g.w.waitFor(t, 1)
	if reps[0].Seq != 1 || reps[0].Result != protocol.ResultOK {
		t.Fatalf("first reply = %+v, want seq 1 ok", reps[0])
	}
	msgs := g.waitSent(t, 1)
	checkCommit(t, msgs[0], 1)
	g.submit(t, put(1, 6, "e", "6")) // fence: the loop is past A's release
	if got := g.w.got(); len(got) != 1 {
		t.Fatalf("replies released by an fsync that started before their records: %+v", got)
	}
	if got := g.sent(); len(got) != 0 {
		t.Fatalf("messages released by an fsync that started before their records: %+v", got)
	}

	// The second fsync ends: B, C, the redirect (no records, but behind them) and D leave,
	// in order.
	g.log.finish <- nil
	if n := g.fsyncStarts(t); n != 1 {
		t.Fatalf("third fsync covers %d records, want 1 (E)", n)
	}
	g.log.finish <- nil
	reps = g.w.waitFor(t, 6)
	for i, rep := range reps {
		if rep.Seq != uint64(i+1) || rep.ClientID != 1 {
			t.Fatalf("replies out of order: %+v", reps)
		}
		want := protocol.ResultOK
		if rep.Seq == 4 {
			want = protocol.ResultRedirect
			if rep.Leader != 7 {
				t.Errorf("redirect to %d, want 7", rep.Leader)
			}
		}
		if rep.Result != want {
			t.Errorf("reply %d = %v, want %v", rep.Seq, rep.Result, want)
		}
	}
	msgs = g.waitSent(t, 4)
	for i, m := range msgs {
		checkCommit(t, m, uint64(i+2))
	}
	st := g.r.Stats()
	if st.Syncs != 3 || st.Records != 5 {
		t.Errorf("stats: %d fsyncs, %d records; want 3, 5", st.Syncs, st.Records)
	}
}

// TestPipelinedFsyncFailure: a failed fsync stops the replica as before (Err, Done), and
// nothing that waited for it leaves: the commands are answered with a redirect by the
// stop, never with their result.
func TestPipelinedFsyncFailure(t *testing.T) {
	g := startGated(t)
	g.submit(t, put(1, 1, "a", "1"))
	g.fsyncStarts(t)
	g.submit(t, put(1, 2, "b", "2"))
	g.log.finish <- errors.New("disk on fire")
	select {
	case <-g.r.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("replica still running after a failed fsync")
	}
	if err := g.r.Err(); err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Fatalf("Err() = %v, want the fsync's error", err)
	}
	for _, rep := range g.w.waitFor(t, 2) {
		if rep.Result != protocol.ResultRedirect {
			t.Errorf("reply %+v after a failed fsync, want a redirect", rep)
		}
	}
	if got := g.sent(); len(got) != 0 {
		t.Fatalf("messages sent after a failed fsync: %+v", got)
	}
}

// TestPipelinedFsyncStopDrains: Stop waits for the fsync in flight and releases what it
// covers, as the synchronous loop would have done before looking at Stop.
func TestPipelinedFsyncStopDrains(t *testing.T) {
	g := startGated(t)
	g.submit(t, put(1, 1, "a", "1"))
	g.fsyncStarts(t)
	stopped := make(chan struct{})
	go func() {
		g.r.Stop()
		close(stopped)
	}()
	g.log.finish <- nil
	<-stopped
	reps := g.w.got()
	if len(reps) != 1 || reps[0].Result != protocol.ResultOK {
		t.Fatalf("replies = %+v, want seq 1 ok", reps)
	}
	checkCommit(t, g.waitSent(t, 1)[0], 1)
}
