package executor

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/parliament-lab/parliament/protocol"
)

// growingCycleCost delivers the EPaxos 100%-conflict stream with a window of 8 unseen
// concurrent proposals (one strongly connected component that keeps growing while its
// newest members are missing, until the stream ends) to a fresh executor, with Execute
// after every Add, and returns the work per instance and the largest component.
func growingCycleCost(t *testing.T, n int) (visits, edges float64, maxComp int) {
	t.Helper()
	insts := epaxosStream(n, 8, 1)
	e := New(Config{})
	for i := range insts {
		e.Add(insts[i])
		e.Execute()
	}
	st := e.Stats()
	if int(st.Executed) != n || e.Pending() != 0 {
		t.Fatalf("n=%d: executed %d, pending %d", n, st.Executed, e.Pending())
	}
	return float64(st.Visits) / float64(n), float64(st.Edges) / float64(n), st.MaxComp
}

// TestGrowingCycleIsLinear: the work per instance (vertices entered and edges followed)
// must not grow with the length of a component that grows while its newest members are
// missing. Before blocked components were condensed into super-vertices, each commit of
// the instance the component waited on re-walked it: visits/inst grew with n (57 at n=1000,
// 438 at n=8000).
func TestGrowingCycleIsLinear(t *testing.T) {
	const small, large = 1000, 8000
	vs, es, cs := growingCycleCost(t, small)
	vl, el, cl := growingCycleCost(t, large)
	t.Logf("n=%d: %.2f visits/inst, %.2f edges/inst, max component %d", small, vs, es, cs)
	t.Logf("n=%d: %.2f visits/inst, %.2f edges/inst, max component %d", large, vl, el, cl)
	// The shape under test: (nearly) the whole stream is one component.
	if cs < small/2 || cl < large/2 {
		t.Fatalf("largest components %d and %d: the stream is not one growing cycle", cs, cl)
	}
	if vl > 1.2*vs+0.5 || el > 1.2*es+1 {
		t.Fatalf("work per instance grows with the stream: visits/inst %.2f -> %.2f, edges/inst %.2f -> %.2f", vs, vl, es, el)
	}
	if vl > 6 || el > 20 {
		t.Fatalf("work per instance too high: %.2f visits, %.2f edges", vl, el)
	}
}

// TestGrowingCycleSameOrderEveryDelivery: at 100% conflict every pair of commands conflicts,
// so every replica must execute the whole stream in one order, however the commits arrive
// and however often Execute runs (components condensed and merged in different ways).
func TestGrowingCycleSameOrderEveryDelivery(t *testing.T) {
	const n = 3000
	insts := epaxosStream(n, 8, 4)
	run := func(order []int, execEvery int) []protocol.InstanceID {
		var got []protocol.InstanceID
		e := New(Config{Apply: func(in *protocol.Instance) { got = append(got, in.ID) }})
		for k, i := range order {
			e.Add(insts[i])
			if k%execEvery == 0 {
				e.Execute()
			}
		}
		e.Execute()
		if len(got) != n {
			t.Fatalf("executed %d of %d", len(got), n)
		}
		return got
	}
	rng := rand.New(rand.NewPCG(9, 9))
	asGenerated := make([]int, n)
	for i := range asGenerated {
		asGenerated[i] = i
	}
	backwards := make([]int, n)
	for i := range backwards {
		backwards[i] = n - 1 - i
	}
	want := run(asGenerated, 1)
	for _, c := range []struct {
		name      string
		order     []int
		execEvery int
	}{
		{"backwards", backwards, 1},
		{"shuffled", rng.Perm(n), 1},
		{"shuffled/execute every 7", rng.Perm(n), 7},
		{"nearly sorted 64", nearlySorted(rng, n, 64), 1},
		{"as generated/execute every 100", asGenerated, 100},
	} {
		if got := run(c.order, c.execEvery); !slices.Equal(got, want) {
			i := 0
			for i < n && got[i] == want[i] {
				i++
			}
			t.Fatalf("%s: order differs from the first delivery at position %d: %v, want %v", c.name, i, got[i], want[i])
		}
	}
}

// TestEPaxosStreamsAgainstReference: streams with growing cycles (several windows and
// seeds), delivered nearly in order and shuffled, checked after every few steps against the
// reference (eager execution, order constraints, Blocked, Pending).
func TestEPaxosStreamsAgainstReference(t *testing.T) {
	for _, window := range []int{2, 8, 32} {
		for seed := uint64(1); seed <= 3; seed++ {
			t.Run(fmt.Sprintf("window=%d/seed=%d", window, seed), func(t *testing.T) {
				insts := epaxosStream(160, window, seed)
				ref := newReference(insts)
				rng := rand.New(rand.NewPCG(seed, uint64(window)))
				runAgainstReference(t, ref, insts, nearlySorted(rng, len(insts), 4), 5, 60, rng)
				runAgainstReference(t, ref, insts, rng.Perm(len(insts)), 5, 60, rng)
			})
		}
	}
}

// TestPrefixVertexDiesInsideBlockedComponent: a blocked component can contain the prefix
// vertex P(1,2) (everything of row 1 up to 1.2) without instance 1.2, which then executes
// first and its memory is reused for a newer instance. The component's recorded out edges
// must keep meaning what they meant (a regression: they named the dead vertex, and the
// newcomer, 5.1, looked like part of the component and ran before it).
func TestPrefixVertexDiesInsideBlockedComponent(t *testing.T) {
	r := newRecorder()
	e := r.e
	// 2.1 -> P(1,2) -> 1.1 -> 2.1 is a cycle, blocked on 3.1; P(1,2) -> 1.2, which waits on
	// 4.1 only and is not in the cycle.
	e.Add(inst(id(1, 2), 5, id(4, 1)))
	e.Add(inst(id(2, 1), 5, id(1, 2)))
	e.Add(inst(id(1, 1), 5, id(2, 1), id(3, 1)))
	e.Execute()
	e.Add(inst(id(4, 1), 1))
	e.Execute() // 4.1, 1.2
	e.Add(inst(id(5, 1), 0, id(2, 1)))
	e.Execute()
	e.Add(inst(id(3, 1), 1))
	e.Execute()
	want := []protocol.InstanceID{id(4, 1), id(1, 2), id(3, 1), id(1, 1), id(2, 1), id(5, 1)}
	if !slices.Equal(r.order, want) {
		t.Fatalf("order %v, want %v", r.order, want)
	}
}
