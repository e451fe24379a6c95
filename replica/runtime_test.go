package replica

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/parliament-lab/parliament/config"
	"github.com/parliament-lab/parliament/protocol"
	"github.com/parliament-lab/parliament/transport"
)

// scriptEngine is a one-replica engine whose behaviour is chosen by the key of each
// proposed command, so that the runtime's handling of every part of a Ready can be
// checked without a real protocol:
//
//	"redirect" -> Ready.Redirect with Leader 7
//	"blocked"  -> committed as instance (1, n) depending on (2, 1), which is not committed
//	"unblock"  -> commits (2, 1) with this command
//	other      -> committed as instance (1, n) with no dependency
//
// Every proposal is also persisted as one record.
type scriptEngine struct {
	next     uint64
	rd       protocol.Ready
	mu       sync.Mutex
	suspects []protocol.InstanceID
	advances int
}

func (e *scriptEngine) Propose(cmds []protocol.Command) {
	for _, c := range cmds {
		switch string(c.Key) {
		case "redirect":
			e.rd.Redirect = append(e.rd.Redirect, c)
			e.rd.Leader = 7
			continue
		case "unblock":
			e.rd.Committed = append(e.rd.Committed, protocol.Instance{ID: protocol.InstanceID{Replica: 2, Num: 1}, Status: protocol.StatusCommitted, Cmds: []protocol.Command{c}})
			continue
		}
		e.next++
		inst := protocol.Instance{ID: protocol.InstanceID{Replica: 1, Num: e.next}, Status: protocol.StatusCommitted, Cmds: []protocol.Command{c}}
		if string(c.Key) == "blocked" {
			inst.Deps = []protocol.InstanceID{{Replica: 2, Num: 1}}
		}
		e.rd.Committed = append(e.rd.Committed, inst)
		e.rd.Persist = append(e.rd.Persist, protocol.Record{Type: protocol.RecordInstance, Inst: inst})
	}
}

func (e *scriptEngine) Step(protocol.Message) {}
func (e *scriptEngine) Tick()                 {}
func (e *scriptEngine) Ready() protocol.Ready { return e.rd }
func (e *scriptEngine) Advance(protocol.Ready) {
	e.rd = protocol.Ready{Leader: e.rd.Leader}
	e.mu.Lock()
	e.advances++
	e.mu.Unlock()
}

func (e *scriptEngine) Suspect(ids []protocol.InstanceID) {
	e.mu.Lock()
	e.suspects = append(e.suspects, ids...)
	e.mu.Unlock()
}

func (e *scriptEngine) suspected() []protocol.InstanceID {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]protocol.InstanceID(nil), e.suspects...)
}

func startScript(t *testing.T, mutate func(*config.Cluster)) (*Replica, *scriptEngine, *MemLog) {
	t.Helper()
	cl := testCluster(t, config.MultiPaxos, 1)
	cl.Tick = config.Duration(time.Millisecond)
	if mutate != nil {
		mutate(cl)
	}
	eng := &scriptEngine{}
	log := NewMemLog()
	r, err := Start(Options{
		Cluster: cl, ID: 1, Log: log, Transport: transport.NewMemNetwork().Transport(1),
		NewEngine:    func(protocol.Config) (protocol.Engine, error) { return eng, nil },
		SuspectTicks: 3,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Stop)
	return r, eng, log
}

// submit sends one command and returns the channel its reply arrives on.
func submit(r *Replica, cmd protocol.Command) *waiter {
	w := newWaiter()
	r.Submit([]protocol.Command{cmd}, w)
	return w
}

func (w *waiter) wait(t *testing.T, seq uint64, d time.Duration) (protocol.Reply, bool) {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		if rep, ok := w.take(seq); ok {
			return rep, true
		}
		select {
		case <-w.cond:
		case <-timer.C:
			return protocol.Reply{}, false
		}
	}
}

func TestRedirect(t *testing.T) {
	r, _, _ := startScript(t, nil)
	rep, ok := submit(r, put(1, 1, "redirect", "v")).wait(t, 1, 5*time.Second)
	if !ok || rep.Result != protocol.ResultRedirect || rep.Leader != 7 {
		t.Fatalf("reply = %+v (ok %v), want a redirect to 7", rep, ok)
	}
	if r.Stats().Redirects != 1 {
		t.Errorf("Redirects = %d, want 1", r.Stats().Redirects)
	}
}

// TestPersistBeforeReply: the records of a Ready reach the log, with one Sync per Ready,
// and the reply comes after.
func TestPersistBeforeReply(t *testing.T) {
	r, _, log := startScript(t, nil)
	w := newWaiter()
	r.Submit([]protocol.Command{put(1, 1, "a", "1"), put(1, 2, "b", "2")}, w)
	for _, seq := range []uint64{1, 2} {
		if rep, ok := w.wait(t, seq, 5*time.Second); !ok || rep.Result != protocol.ResultOK {
			t.Fatalf("seq %d: %+v %v", seq, rep, ok)
		}
	}
	if got := len(log.Records()); got != 2 {
		t.Fatalf("%d records persisted, want 2", got)
	}
	st := r.Stats()
	if st.Syncs != log.Syncs() || st.Syncs == 0 || st.Syncs > st.Readys {
		t.Errorf("syncs %d (log %d) for %d Readys: want one per Ready with records", st.Syncs, log.Syncs(), st.Readys)
	}
	if st.Proposed != 2 || st.ExecutedCmds != 2 || st.Replies != 2 {
		t.Errorf("stats %+v", st)
	}
	// The log got deep copies: the engine may reuse its memory.
	if recs := log.Records(); string(recs[0].Inst.Cmds[0].Key) != "a" {
		t.Errorf("record 0 = %+v", recs[0])
	}
}

// TestReplyAfterExecution: a write whose instance waits for an uncommitted dependency is
// answered only once the dependency commits and it executes; the reply reports how long
// it waited between commit and execution. Meanwhile the runtime asks the engine to recover
// the missing dependency.
func TestReplyAfterExecution(t *testing.T) {
	r, eng, _ := startScript(t, nil)
	w := submit(r, put(1, 1, "blocked", "v"))
	if _, ok := w.wait(t, 1, 100*time.Millisecond); ok {
		t.Fatal("answered before execution")
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(eng.suspected()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("blocked dependency never suspected")
		}
		time.Sleep(time.Millisecond)
	}
	if s := eng.suspected(); s[0] != (protocol.InstanceID{Replica: 2, Num: 1}) {
		t.Fatalf("suspected %v, want [2.1]", s)
	}
	if rep, ok := submit(r, put(1, 2, "unblock", "u")).wait(t, 2, 5*time.Second); !ok || rep.Result != protocol.ResultOK {
		t.Fatalf("unblock: %+v %v", rep, ok)
	}
	rep, ok := w.wait(t, 1, 5*time.Second)
	if !ok || rep.Result != protocol.ResultOK {
		t.Fatalf("blocked write never answered: %+v", rep)
	}
	if rep.ExecDelayMicros < 50_000 {
		t.Errorf("ExecDelayMicros = %d, want at least the 100ms it waited", rep.ExecDelayMicros)
	}
}

// TestReplyOnCommit: with reply_on_commit a blind write is answered at commit even though
// it cannot execute yet; a read still waits for execution.
func TestReplyOnCommit(t *testing.T) {
	r, _, _ := startScript(t, func(c *config.Cluster) { c.ReplyOnCommit = true })
	w0 := newWaiter()
	r.Submit([]protocol.Command{put(1, 1, "blocked", "v")}, w0)
	if rep, ok := w0.wait(t, 1, 5*time.Second); !ok || rep.Result != protocol.ResultOK {
		t.Fatalf("blind write not answered at commit: %+v %v", rep, ok)
	}
	// A read in a blocked instance waits for execution (then it would see the write).
	r.Submit([]protocol.Command{{ClientID: 1, Seq: 2, Op: protocol.OpGet, Key: []byte("blocked")}}, w0)
	if _, ok := w0.wait(t, 2, 100*time.Millisecond); ok {
		t.Fatal("read answered at commit")
	}
	if rep, ok := submit(r, put(1, 3, "unblock", "u")).wait(t, 3, 5*time.Second); !ok || rep.Result != protocol.ResultOK {
		t.Fatalf("unblock: %+v %v", rep, ok)
	}
	if rep, ok := w0.wait(t, 2, 5*time.Second); !ok || rep.Result != protocol.ResultOK || string(rep.Value) != "v" {
		t.Fatalf("read after execution = %+v %v, want v", rep, ok)
	}
}

// TestStopAnswersPending: commands waiting at a stopping replica are answered with a
// redirect so that clients retry elsewhere at once.
func TestStopAnswersPending(t *testing.T) {
	r, _, _ := startScript(t, nil)
	w := submit(r, put(1, 1, "blocked", "v"))
	if _, ok := w.wait(t, 1, 50*time.Millisecond); ok {
		t.Fatal("answered before execution")
	}
	r.Stop()
	rep, ok := w.wait(t, 1, time.Second)
	if !ok || rep.Result != protocol.ResultRedirect || rep.Leader != 0 {
		t.Fatalf("pending command at stop: %+v %v, want a redirect to any replica", rep, ok)
	}
}

func TestStartErrors(t *testing.T) {
	cl := testCluster(t, config.MultiPaxos, 3)
	if _, err := Start(Options{Cluster: cl, ID: 4}); err == nil {
		t.Error("unknown ID accepted")
	}
	if _, err := Start(Options{ID: 1}); err == nil {
		t.Error("nil cluster accepted")
	}
	// The port is taken: a clear error, nothing left running.
	c := startTCP(t, testCluster(t, config.MultiPaxos, 1))
	if _, err := Start(Options{Cluster: c.cl, ID: 1}); err == nil {
		t.Error("second replica on the same address started")
	}
}

func TestLatencyRank(t *testing.T) {
	cl := config.Generate(config.EPaxos, 5, 7000, "") // CA VA OR IE JP
	got := LatencyRank(cl, 1)                         // from CA: OR 21, VA 60, JP 112, IE 141
	want := []protocol.ReplicaID{3, 2, 5, 4}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("LatencyRank(CA) = %v, want %v", got, want)
		}
	}
	for i := range cl.Replicas {
		cl.Replicas[i].Site = "lab"
	}
	if got := LatencyRank(cl, 3); got[0] != 2 || got[1] != 4 || got[2] != 1 || got[3] != 5 {
		t.Fatalf("unknown sites: LatencyRank(3) = %v, want by ID distance [2 4 1 5]", got)
	}
}

// TestRankByLatency: equal round trips and no matrix at all rank by ID distance, as
// LatencyRank does for sites the built-in matrix lacks.
func TestRankByLatency(t *testing.T) {
	ids := []protocol.ReplicaID{1, 2, 3, 4, 5}
	sites := map[protocol.ReplicaID]string{1: "a", 2: "b", 3: "a", 4: "b", 5: "a"}
	m := &transport.Matrix{Sites: []string{"a", "b"}, RTTMillis: [][]float64{{1, 50}, {50, 1}}}
	for _, tc := range []struct {
		m    *transport.Matrix
		id   protocol.ReplicaID
		want []protocol.ReplicaID
	}{
		{nil, 3, []protocol.ReplicaID{2, 4, 1, 5}},
		{m, 3, []protocol.ReplicaID{1, 5, 2, 4}}, // site a first, each pair by ID distance
		{m, 4, []protocol.ReplicaID{2, 3, 5, 1}},
	} {
		got := RankByLatency(tc.m, sites, ids, tc.id)
		if !slices.Equal(got, tc.want) {
			t.Errorf("RankByLatency(matrix %v, %d) = %v, want %v", tc.m != nil, tc.id, got, tc.want)
		}
	}
}
