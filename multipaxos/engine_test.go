package multipaxos

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/parliament-lab/parliament/protocol"
)

func TestConfigValidate(t *testing.T) {
	good := DefaultConfig()
	good.ID, good.Replicas = 1, ids(3)
	if _, err := New(good); err != nil {
		t.Fatalf("default config refused: %v", err)
	}
	for _, tc := range []struct {
		field string
		mod   func(*Config)
	}{
		{"ID", func(c *Config) { c.ID = 0 }},
		{"Replicas", func(c *Config) { c.ID = 4 }},
		{"HeartbeatTicks", func(c *Config) { c.HeartbeatTicks = 0 }},
		{"ElectionTicks", func(c *Config) { c.ElectionTicks = 2 }},
		{"Window", func(c *Config) { c.Window = 0 }},
		{"MaxBatch", func(c *Config) { c.MaxBatch = -1 }},
		{"RetainCmds", func(c *Config) { c.RetainCmds = -1 }},
		{"PreferredLeader", func(c *Config) { c.PreferredLeader = 4 }},
		{"replicas", func(c *Config) { c.Replicas = ids(65) }},
	} {
		c := good
		tc.mod(&c)
		_, err := New(c)
		if err == nil || !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s: got %v, want an ErrConfig naming %s", tc.field, err, tc.field)
		}
	}
}

// Every command proposed before a Ready goes into one slot (up to MaxBatch); no timer is
// involved. The window bounds slots in flight; the rest waits for commits.
func TestBatchingAndWindow(t *testing.T) {
	nw := newNetwork(t, 3, 1, func(c *Config) { c.MaxBatch = 3; c.Window = 2 })
	l := nw.electLeader(100)
	e := nw.node(l).e
	for i := range 8 {
		e.Propose([]protocol.Command{put(1, uint64(i+1), "k", string(rune('a'+i)))})
	}
	nw.collect(l)
	accepts := nw.take(isType(protocol.MsgAccept))
	if len(accepts) != 2*2 { // two slots (window) to two peers
		t.Fatalf("%d accepts, want 4 (window 2, two peers)", len(accepts))
	}
	if len(accepts[0].Cmds) != 3 || accepts[0].Inst.Num != 1 || accepts[2].Inst.Num != 2 {
		t.Fatalf("first accepts %v %v: want slots 1 and 2 with 3 commands", accepts[0], accepts[2])
	}
	if len(e.pending) != 2 {
		t.Fatalf("%d pending, want 2 waiting for the window", len(e.pending))
	}
	for _, m := range accepts {
		nw.deliver(m)
	}
	nw.deliverAll()
	nw.requireLogs("k=a,k=b,k=c", "k=d,k=e,k=f", "k=g,k=h")
}

// A follower forwards commands to the leader it knows; with no leader known it hands them
// back as redirects with Ready.Leader = 0.
func TestForwardAndRedirect(t *testing.T) {
	nw := newNetwork(t, 3, 1, nil)
	// No leader yet: redirect.
	nw.propose(2, put(1, 1, "a", "1"))
	if got := nw.node(2).redirects; len(got) != 1 || nw.node(2).e.Leader() != 0 {
		t.Fatalf("redirects %v leader %d, want the command redirected with no leader", got, nw.node(2).e.Leader())
	}
	l := nw.electLeader(100)
	f := protocol.ReplicaID(1)
	if l == 1 {
		f = 2
	}
	nw.node(f).e.Propose([]protocol.Command{put(1, 2, "b", "2")})
	nw.node(f).e.Propose([]protocol.Command{put(1, 3, "c", "3")})
	rd := nw.node(f).e.Ready()
	if rd.Leader != l || len(rd.Messages) != 1 || rd.Messages[0].Type != protocol.MsgForward || rd.Messages[0].To != l || len(rd.Messages[0].Cmds) != 2 {
		t.Fatalf("follower Ready %+v, want one Forward of 2 commands to %d", rd, l)
	}
	nw.queue = append(nw.queue, envelope{m: rd.Messages[0]}) // copy before Advance reuses it
	nw.node(f).e.Advance(rd)
	nw.deliverAll()
	nw.requireLogs("b=2,c=3")
}

// A leader that loses leadership before putting proposals in a slot hands them back as
// redirects: it never drops a command it accepted responsibility for.
func TestDeposedLeaderRedirectsPending(t *testing.T) {
	nw := newNetwork(t, 3, 1, func(c *Config) { c.Window = 1 })
	l := nw.electLeader(100)
	e := nw.node(l).e
	e.Propose([]protocol.Command{put(1, 1, "a", "1")})
	nw.collect(l) // slot 1 in flight: the window is full
	e.Propose([]protocol.Command{put(1, 2, "b", "2")})
	nw.collect(l) // waits for the window
	nw.queue = nil
	e.Step(protocol.Message{Type: protocol.MsgNack, From: l%3 + 1, To: l, Ballot: e.ballot.Next(l%3 + 1)})
	rd := e.Ready()
	if e.Role() != RoleFollower || len(rd.Redirect) != 1 || value(rd.Redirect) != "b=2" || rd.Leader != 0 {
		t.Fatalf("deposed leader %v redirect %v leader %d, want follower redirecting b=2 with leader 0", e.Role(), rd.Redirect, rd.Leader)
	}
	e.Advance(rd)
}

// Accepts lost on the way are retransmitted after a few ticks until the slot is chosen.
func TestAcceptRetransmission(t *testing.T) {
	nw := newNetwork(t, 3, 1, nil)
	l := nw.electLeader(100)
	nw.propose(l, put(1, 1, "a", "1"))
	if n := nw.dropWhere(isType(protocol.MsgAccept)); n != 2 {
		t.Fatalf("dropped %d accepts, want 2", n)
	}
	nw.tickAll(2 * nw.node(l).cfg.HeartbeatTicks)
	nw.requireLogs("a=1")
}

// Calling Ready twice before Advance returns the same work plus anything new; Advance
// consumes only what it was given.
func TestReadyAdvanceContract(t *testing.T) {
	nw := newNetwork(t, 3, 1, nil)
	l := nw.electLeader(100)
	e := nw.node(l).e
	e.Propose([]protocol.Command{put(1, 1, "a", "1")})
	rd1 := e.Ready()
	e.Propose([]protocol.Command{put(1, 2, "b", "2")})
	rd2 := e.Ready()
	if len(rd2.Messages) != 2*len(rd1.Messages) || len(rd2.Persist) != 2*len(rd1.Persist) {
		t.Fatalf("second Ready %d msgs %d records, want twice the first (%d, %d)", len(rd2.Messages), len(rd2.Persist), len(rd1.Messages), len(rd1.Persist))
	}
	e.Advance(rd1)
	rd3 := e.Ready()
	if len(rd3.Messages) != len(rd2.Messages)-len(rd1.Messages) || rd3.Messages[0].Inst.Num != 2 {
		t.Fatalf("after Advance(first) got %v, want only slot 2's accepts", rd3.Messages)
	}
	e.Advance(rd3)
	if rd := e.Ready(); !rd.IsEmpty() {
		t.Fatalf("Ready after full Advance not empty: %+v", rd)
	}
}

// A single-replica cluster elects itself and commits alone.
func TestSingleReplica(t *testing.T) {
	nw := newNetwork(t, 1, 1, nil)
	l := nw.electLeader(100)
	nw.propose(l, put(1, 1, "a", "1"))
	nw.requireLogs("a=1")
	nw.crash(1)
	nw.restart(1)
	nw.requireLogs("a=1")
}

// The same seed and the same calls give the same Readys (no hidden randomness, clocks or
// map order); another seed changes election timing.
func TestDeterminism(t *testing.T) {
	transcript := func(seed uint64) string {
		nw := chaos(t, seed, 3000, chaosOpts{})
		var b strings.Builder
		for _, nd := range nw.nodes {
			b.WriteString(strings.Join(nd.readys, "\n"))
			b.WriteString(strings.Join(nd.committedValues(), ","))
		}
		return b.String()
	}
	a, b := transcript(42), transcript(42)
	if a != b {
		t.Fatal("same seed, different transcripts")
	}
	if a == transcript(43) {
		t.Fatal("different seeds, same transcript")
	}
}

// Committed slots that fell out of memory (compacted, nothing retained) are not lost to a
// candidate that needs them: it refuses to lead rather than fill them with no-ops, and asks
// the promiser that reported them; it gets a snapshot, and its next campaign succeeds with
// the chosen values intact.
func TestCandidateRefusesToLeadWithoutChosenValues(t *testing.T) {
	nw := newNetwork(t, 3, 1, func(c *Config) { c.RetainCmds = 0 })
	l := nw.electLeader(100)
	lag := protocol.ReplicaID(1)
	if l == 1 {
		lag = 2
	}
	nw.isolate(lag)
	var want []string
	for i := range 5 {
		c := put(1, uint64(i+1), "k", strconv.Itoa(i))
		want = append(want, value([]protocol.Command{c}))
		nw.propose(l, c)
		nw.deliverAll()
	}
	for _, nd := range nw.nodes {
		if nd.id != lag {
			nw.compact(nd.id, true) // every chosen slot is now only in snapshots
		}
	}
	nw.heal()
	nw.queue = nil
	nw.node(lag).e.campaign()
	nw.collect(lag)
	// Phase 1 only: Prepares out, Promises back.
	for _, m := range nw.take(isType(protocol.MsgPrepare)) {
		nw.deliver(m)
	}
	for _, m := range nw.take(isType(protocol.MsgPromise)) {
		nw.deliver(m)
	}
	if r := nw.node(lag).e.Role(); r == RoleLeader {
		t.Fatal("a replica that cannot learn chosen slots became leader")
	}
	if got := nw.node(lag).committedValues(); len(got) != 0 {
		t.Fatalf("lagging replica committed %v", got)
	}
	asks := nw.take(isType(protocol.MsgCatchUp))
	if len(asks) != 1 || asks[0].Index != 1 {
		t.Fatalf("refusing candidate sent %v, want one catch-up from slot 1", asks)
	}
	nw.deliver(asks[0])
	snaps := nw.take(isType(protocol.MsgSnapshot))
	if len(snaps) != 1 || snaps[0].Index != 5 {
		t.Fatalf("catch-up below the compacted frontier answered with %v, want one snapshot of slot 5", snaps)
	}
	nw.deliver(snaps[0])
	nw.deliverAll()
	nw.requireLogs(want...)
	// Now it knows every chosen value: it may lead, and the log continues after slot 5.
	nw.node(lag).e.campaign()
	nw.collect(lag)
	nw.deliverAll()
	if nw.leader() != lag {
		t.Fatalf("leader %d after the caught-up replica campaigned, want %d", nw.leader(), lag)
	}
	nw.propose(lag, put(2, 1, "z", "after"))
	nw.deliverAll()
	nw.requireLogs(append(want, "z=after")...)
}

// With PreferredLeader set, a fresh cluster's first leader is that replica, whatever the seed,
// the cluster size or the message latency; without it the first leader varies with the seed.
// After the preferred leader fails, a normal election picks another replica, and the
// preferred one, restarted, follows it rather than taking leadership back.
func TestPreferredLeader(t *testing.T) {
	firsts := map[protocol.ReplicaID]bool{}
	for seed := int64(1); seed <= 20; seed++ {
		nw := newNetwork(t, 3, seed, nil)
		firsts[nw.electLeader(100)] = true
	}
	if len(firsts) < 2 {
		t.Fatalf("without a preferred leader every seed elected %v first: the test below proves nothing", firsts)
	}
	for _, n := range []int{3, 5} {
		for want := protocol.ReplicaID(1); want <= protocol.ReplicaID(n); want++ {
			for seed := int64(1); seed <= 10; seed++ {
				nw := newNetwork(t, n, seed, func(c *Config) { c.PreferredLeader = want })
				nw.latency = uint64(seed % 3) // 0..2 ticks each way
				for tick := 0; tick < 40 && nw.leader() == 0; tick++ {
					nw.run(1)
				}
				if l := nw.leader(); l != want {
					t.Fatalf("n=%d seed=%d latency=%d: first leader %d, want the preferred %d", n, seed, nw.latency, l, want)
				}
				if st := nw.node(want).e.Stats(); st.Recoveries != 1 {
					t.Fatalf("n=%d seed=%d: preferred leader campaigned %d times, want once", n, seed, st.Recoveries)
				}
			}
		}
	}
	nw := newNetwork(t, 3, 3, func(c *Config) { c.PreferredLeader = 2 })
	if l := nw.electLeader(10); l != 2 {
		t.Fatalf("first leader %d, want 2", l)
	}
	nw.propose(2, put(1, 1, "a", "1"))
	nw.deliverAll()
	nw.crash(2)
	next := nw.electLeader(100)
	if next == 2 {
		t.Fatal("crashed replica still leads")
	}
	nw.restart(2)
	nw.tickAll(5 * nw.node(2).cfg.ElectionTicks)
	if l := nw.leader(); l != next || !nw.allFollow(next) {
		t.Fatalf("after the preferred leader restarted: leader %d, want %d kept", l, next)
	}
	nw.propose(next, put(1, 2, "b", "2"))
	nw.deliverAll()
	nw.requireLogs("a=1", "b=2")
}

// Propose ownership: with ProposeTakesOwnership the leader's slot holds the caller's slice
// itself (no copy); without it, a copy. Either way the engine never writes into an array the
// caller handed over — not its elements and not its spare capacity — whether the batch is
// split at MaxBatch, waits for the window, is forwarded by a follower or redirected.
func TestProposeOwnership(t *testing.T) {
	for _, own := range []bool{true, false} {
		t.Run(fmt.Sprintf("owned=%v", own), func(t *testing.T) {
			nw := newNetwork(t, 3, 1, func(c *Config) { c.ProposeTakesOwnership, c.MaxBatch, c.Window = own, 2, 1 })
			var handed [][]protocol.Command // full capacity of every slice handed over
			var originals [][]protocol.Command
			batch := func(vals ...string) []protocol.Command {
				b := make([]protocol.Command, len(vals), len(vals)+2) // spare capacity a careless append would use
				for i, v := range vals {
					b[i] = put(1, uint64(len(handed)*10+i+1), "k", v)
				}
				handed = append(handed, b[:cap(b)])
				originals = append(originals, slices.Clone(b[:cap(b)]))
				return b
			}
			nw.propose(2, batch("r")...) // no leader yet: redirected
			l := nw.electLeader(100)
			e := nw.node(l).e
			first := batch("a", "b", "c")
			e.Propose(first)
			nw.collect(l) // slot 1 = a,b; c waits for the window
			if shared := &e.log.get(1).cmds[0] == &first[0]; shared != own {
				t.Fatalf("slot 1 shares the caller's array: %v, want %v", shared, own)
			}
			e.Propose(batch("d")) // appended after c: must not land in first's spare capacity
			nw.collect(l)
			f := l%3 + 1
			nw.node(f).e.Propose(batch("x"))
			nw.node(f).e.Propose(batch("y"))
			nw.collect(f) // one MsgForward of x,y
			nw.deliverAll()
			nw.tickAll(5)
			nw.requireLogs("k=a,k=b", "k=c,k=d", "k=x,k=y")
			for i := range handed {
				for j := range handed[i] {
					if value(handed[i][j:j+1]) != value(originals[i][j:j+1]) || handed[i][j].Seq != originals[i][j].Seq {
						t.Fatalf("batch %d element %d changed from %+v to %+v", i, j, originals[i][j], handed[i][j])
					}
				}
			}
		})
	}
}
