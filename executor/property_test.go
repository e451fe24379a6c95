package executor

import (
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"testing"

	"github.com/parliament-lab/parliament/protocol"
	"pgregory.net/rapid"
)

// epaxosGraph builds a committed graph of the shape EPaxos produces (Moraru et al. 4.3):
// rows 1..rows, each instance one command on a small key space (reads and writes), numbered
// per row in proposal order; for every conflicting pair at least one instance sees the other
// (the EPaxos invariant), sometimes both (a cycle); an instance's dependency on a row is the
// highest conflicting instance of that row it saw (prefix semantics cover the rest). Seq is
// drawn from a small range so that ties inside components exercise (Replica, Num).
type graphSpec struct {
	Rows, Total, Keys int
	ReadPct, MissPct  int // percent of reads; percent of conflicting pairs seen only by the earlier one
	BothPct           int // percent of conflicting pairs that see each other (cycles)
	MaxSeq            uint64
}

func epaxosGraph(rng *rand.Rand, g graphSpec) []protocol.Instance {
	type gen struct {
		row  protocol.ReplicaID
		num  uint64
		cmd  protocol.Command
		seen []int // indexes of instances this one saw
	}
	next := map[protocol.ReplicaID]uint64{}
	all := make([]gen, g.Total)
	for i := range all {
		r := protocol.ReplicaID(1 + rng.IntN(g.Rows))
		next[r]++
		op := protocol.OpPut
		if rng.IntN(100) < g.ReadPct {
			op = protocol.OpGet
		}
		all[i] = gen{row: r, num: next[r], cmd: protocol.Command{
			ClientID: uint64(r), Seq: next[r], Op: op, Key: []byte{byte('a' + rng.IntN(g.Keys))},
		}}
	}
	for b := range all {
		for a := 0; a < b; a++ {
			if !all[a].cmd.Conflicts(&all[b].cmd) {
				continue
			}
			switch p := rng.IntN(100); {
			case all[a].row == all[b].row: // a leader sees its own earlier instances
				all[b].seen = append(all[b].seen, a)
			case p < g.BothPct:
				all[b].seen = append(all[b].seen, a)
				all[a].seen = append(all[a].seen, b)
			case p < g.BothPct+g.MissPct:
				all[a].seen = append(all[a].seen, b)
			default:
				all[b].seen = append(all[b].seen, a)
			}
		}
	}
	out := make([]protocol.Instance, len(all))
	for i, x := range all {
		hi := map[protocol.ReplicaID]uint64{}
		for _, j := range x.seen {
			hi[all[j].row] = max(hi[all[j].row], all[j].num)
		}
		var deps []protocol.InstanceID
		for r := protocol.ReplicaID(1); r <= protocol.ReplicaID(g.Rows); r++ {
			if n := hi[r]; n > 0 {
				deps = append(deps, protocol.InstanceID{Replica: r, Num: n})
			}
		}
		out[i] = protocol.Instance{
			ID:     protocol.InstanceID{Replica: x.row, Num: x.num},
			Status: protocol.StatusCommitted,
			Seq:    1 + rng.Uint64N(g.MaxSeq),
			Deps:   deps,
			Cmds:   []protocol.Command{x.cmd},
		}
	}
	return out
}

// runAgainstReference delivers insts in the given order (with duplicates and irregular
// Execute calls) and checks the executor against the reference after every Execute.
// It returns the execution order.
func runAgainstReference(t interface {
	Fatalf(string, ...any)
	Helper()
}, ref *reference, insts []protocol.Instance, order []int, dupPct, execPct int, rng *rand.Rand) []protocol.InstanceID {
	t.Helper()
	var got []protocol.InstanceID
	applied := map[protocol.InstanceID]int{}
	e := New(Config{Apply: func(in *protocol.Instance) {
		got = append(got, in.ID)
		applied[in.ID]++
	}})
	committed := make([]bool, len(ref.ids))
	nCommitted := 0
	check := func(step int) {
		want := ref.mustHaveExecuted(committed)
		for id := range applied {
			if applied[id] != 1 {
				t.Fatalf("step %d: %v applied %d times", step, id, applied[id])
			}
			if !want[id] {
				t.Fatalf("step %d: %v executed although its closure is not committed", step, id)
			}
		}
		if len(applied) != len(want) {
			var missing []protocol.InstanceID
			for id := range want {
				if applied[id] == 0 {
					missing = append(missing, id)
				}
			}
			slices.SortFunc(missing, cmpID)
			t.Fatalf("step %d: executable but not executed: %v (blocked %v)", step, missing, e.Blocked())
		}
		executed := make([]bool, len(ref.ids))
		for id := range applied {
			executed[ref.idx[id]] = true
			if !e.Executed(id) {
				t.Fatalf("step %d: Executed(%v) = false", step, id)
			}
		}
		if b, w := e.Blocked(), ref.blocked(committed, executed); !slices.Equal(b, w) {
			t.Fatalf("step %d: Blocked = %v, want %v", step, b, w)
		}
		if p := e.Pending(); p != nCommitted-len(applied) {
			t.Fatalf("step %d: Pending = %d, want %d", step, p, nCommitted-len(applied))
		}
	}
	for step, i := range order {
		e.Add(insts[i])
		if j := ref.idx[insts[i].ID]; !committed[j] {
			committed[j] = true
			nCommitted++
		}
		if rng.IntN(100) < dupPct {
			e.Add(insts[order[rng.IntN(step+1)]])
		}
		if rng.IntN(100) < execPct {
			e.Execute()
			check(step)
		}
	}
	e.Execute()
	check(len(order))
	if len(got) != len(insts) {
		t.Fatalf("executed %d of %d instances", len(got), len(insts))
	}
	if err := ref.checkOrder(got); err != nil {
		t.Fatalf("order %v: %v", got, err)
	}
	return got
}

// conflictOrder checks that every pair of conflicting commands executed in the same
// relative order in a and b.
func conflictOrder(insts []protocol.Instance, a, b []protocol.InstanceID) error {
	pa, pb := map[protocol.InstanceID]int{}, map[protocol.InstanceID]int{}
	for i, id := range a {
		pa[id] = i
	}
	for i, id := range b {
		pb[id] = i
	}
	for i := range insts {
		for j := i + 1; j < len(insts); j++ {
			x, y := &insts[i], &insts[j]
			if !x.Cmds[0].Conflicts(&y.Cmds[0]) {
				continue
			}
			if (pa[x.ID] < pa[y.ID]) != (pb[x.ID] < pb[y.ID]) {
				return fmt.Errorf("conflicting %v and %v executed in different orders", x.ID, y.ID)
			}
		}
	}
	return nil
}

// TestPropertyRandomGraphs: random EPaxos-shaped graphs delivered in random orders to
// several executors: each instance executes exactly once, eagerly (exactly when its
// closure is committed), every conflicting pair in the same order at every executor, and
// every order satisfies the reference's constraints; Blocked matches the reference.
func TestPropertyRandomGraphs(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		g := graphSpec{
			Rows:    rapid.IntRange(1, 5).Draw(rt, "rows"),
			Total:   rapid.IntRange(1, 40).Draw(rt, "total"),
			Keys:    rapid.IntRange(1, 4).Draw(rt, "keys"),
			ReadPct: rapid.IntRange(0, 50).Draw(rt, "readPct"),
			MissPct: rapid.IntRange(0, 40).Draw(rt, "missPct"),
			BothPct: rapid.IntRange(0, 40).Draw(rt, "bothPct"),
			MaxSeq:  rapid.Uint64Range(1, 8).Draw(rt, "maxSeq"),
		}
		seed := rapid.Uint64().Draw(rt, "seed")
		rng := rand.New(rand.NewPCG(seed, 1))
		insts := epaxosGraph(rng, g)
		ref := newReference(insts)
		execPct := rapid.IntRange(10, 100).Draw(rt, "execPct")
		var first []protocol.InstanceID
		for k := 0; k < 3; k++ {
			order := rng.Perm(len(insts))
			got := runAgainstReference(rt, ref, insts, order, 15, execPct, rng)
			if k == 0 {
				first = got
			} else if err := conflictOrder(insts, first, got); err != nil {
				rt.Fatalf("%v\nexecutor 0: %v\nexecutor %d: %v", err, first, k, got)
			}
		}
	})
}

// TestRandomGraphsLarger runs bigger graphs than the rapid property (seeded, so a failure
// replays with the printed seed). EXECUTOR_LONG=1 runs more seeds.
func TestRandomGraphsLarger(t *testing.T) {
	runs := 3
	if os.Getenv("EXECUTOR_LONG") != "" {
		runs = 40
	}
	for seed := uint64(1); seed <= uint64(runs); seed++ {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 2))
			g := graphSpec{Rows: 1 + rng.IntN(5), Total: 150 + rng.IntN(100), Keys: 1 + rng.IntN(6),
				ReadPct: rng.IntN(40), MissPct: rng.IntN(30), BothPct: rng.IntN(30), MaxSeq: 1 + rng.Uint64N(50)}
			insts := epaxosGraph(rng, g)
			ref := newReference(insts)
			var first []protocol.InstanceID
			for k := 0; k < 3; k++ {
				// Mostly in order with local shuffles (what a replica sees), or fully shuffled.
				order := rng.Perm(len(insts))
				if k == 0 {
					order = nearlySorted(rng, len(insts), 8)
				}
				got := runAgainstReference(t, ref, insts, order, 5, 30, rng)
				if k == 0 {
					first = got
				} else if err := conflictOrder(insts, first, got); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// nearlySorted returns 0..n-1 with each element displaced by at most about window.
func nearlySorted(rng *rand.Rand, n, window int) []int {
	p := make([]int, n)
	for i := range p {
		p[i] = i
	}
	for i := range p {
		j := min(n-1, i+rng.IntN(window+1))
		p[i], p[j] = p[j], p[i]
	}
	return p
}

// TestSmallGraphsSweep: many small seeded graphs (the rapid property draws 100 per run and
// a different sample each time; this sample is fixed, so a regression shows every run).
func TestSmallGraphsSweep(t *testing.T) {
	runs := 400
	if os.Getenv("EXECUTOR_LONG") != "" {
		runs = 10000
	}
	for seed := uint64(1); seed <= uint64(runs); seed++ {
		rng := rand.New(rand.NewPCG(seed, 3))
		// Like rapid, favour the ends of each range: few cycles, equal seqs, rare Execute.
		pick := func(hi int) int {
			switch rng.IntN(3) {
			case 0:
				return rng.IntN(3)
			case 1:
				return hi
			}
			return rng.IntN(hi + 1)
		}
		g := graphSpec{Rows: 1 + pick(4), Total: 1 + rng.IntN(40), Keys: 1 + pick(3),
			ReadPct: pick(50), MissPct: pick(40), BothPct: pick(40), MaxSeq: 1 + uint64(pick(7))}
		insts := epaxosGraph(rng, g)
		ref := newReference(insts)
		execPct := 10 + pick(90)
		var first []protocol.InstanceID
		for k := 0; k < 3; k++ {
			got := runAgainstReference(&seeded{t, seed}, ref, insts, rng.Perm(len(insts)), 15, execPct, rng)
			if k == 0 {
				first = got
			} else if err := conflictOrder(insts, first, got); err != nil {
				t.Fatalf("seed %d: %v", seed, err)
			}
		}
	}
}

// seeded prefixes failures with the seed that replays them.
type seeded struct {
	t    *testing.T
	seed uint64
}

func (s *seeded) Helper() { s.t.Helper() }
func (s *seeded) Fatalf(format string, args ...any) {
	s.t.Helper()
	s.t.Fatalf("seed %d: "+format, append([]any{s.seed}, args...)...)
}
