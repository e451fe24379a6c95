package executor

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/parliament-lab/parliament/protocol"
)

// id is shorthand for an instance ID in tables.
func id(r protocol.ReplicaID, n uint64) protocol.InstanceID {
	return protocol.InstanceID{Replica: r, Num: n}
}

// inst builds an instance with the given seq and prefix deps.
func inst(i protocol.InstanceID, seq uint64, deps ...protocol.InstanceID) protocol.Instance {
	return protocol.Instance{ID: i, Status: protocol.StatusCommitted, Seq: seq, Deps: deps,
		Cmds: []protocol.Command{{ClientID: 1, Seq: uint64(i.Replica)<<32 | i.Num, Op: protocol.OpPut, Key: []byte("k")}}}
}

// slot builds Multi-Paxos slot s: depends on (0, s-1).
func slot(s uint64) protocol.Instance {
	if s == 1 {
		return inst(id(0, 1), 1)
	}
	return inst(id(0, s), s, id(0, s-1))
}

type recorder struct {
	e     *Executor
	order []protocol.InstanceID
}

func newRecorder() *recorder {
	r := &recorder{}
	r.e = New(Config{Apply: func(in *protocol.Instance) { r.order = append(r.order, in.ID) }})
	return r
}

func TestExecuteTable(t *testing.T) {
	tests := []struct {
		name    string
		add     []protocol.Instance // each Add is followed by Execute
		want    []protocol.InstanceID
		blocked []protocol.InstanceID // Blocked() at the end
		pending int
	}{
		{
			name: "single",
			add:  []protocol.Instance{inst(id(1, 1), 1)},
			want: []protocol.InstanceID{id(1, 1)},
		},
		{
			name: "chain in order",
			add:  []protocol.Instance{inst(id(1, 1), 1), inst(id(2, 1), 2, id(1, 1)), inst(id(3, 1), 3, id(2, 1))},
			want: []protocol.InstanceID{id(1, 1), id(2, 1), id(3, 1)},
		},
		{
			name: "chain backwards waits for its head",
			add:  []protocol.Instance{inst(id(3, 1), 3, id(2, 1)), inst(id(2, 1), 2, id(1, 1)), inst(id(1, 1), 1)},
			want: []protocol.InstanceID{id(1, 1), id(2, 1), id(3, 1)},
		},
		{
			name:    "missing dependency blocks and is reported",
			add:     []protocol.Instance{inst(id(2, 1), 2, id(1, 1))},
			want:    nil,
			blocked: []protocol.InstanceID{id(1, 1)},
			pending: 1,
		},
		{
			name: "two-cycle ordered by seq",
			add:  []protocol.Instance{inst(id(1, 1), 5, id(2, 1)), inst(id(2, 1), 4, id(1, 1))},
			want: []protocol.InstanceID{id(2, 1), id(1, 1)},
		},
		{
			name: "cycle with equal seq ordered by replica then number",
			add: []protocol.Instance{
				inst(id(3, 1), 7, id(1, 2)), inst(id(1, 2), 7, id(2, 1)), inst(id(2, 1), 7, id(3, 1)),
				inst(id(1, 1), 1),
			},
			want: []protocol.InstanceID{id(1, 1), id(1, 2), id(2, 1), id(3, 1)},
		},
		{
			name: "cycle waits for its whole closure",
			// 1.1 <-> 2.1 depend on 3.1 which is missing; then 3.1 arrives.
			add: []protocol.Instance{
				inst(id(1, 1), 2, id(2, 1), id(3, 1)), inst(id(2, 1), 3, id(1, 1)), inst(id(3, 1), 1),
			},
			want: []protocol.InstanceID{id(3, 1), id(1, 1), id(2, 1)},
		},
		{
			name: "prefix dependency covers the lower instances of the row",
			// 2.1 depends on (1, 3): 1.1, 1.2 and 1.3, although only 1.3 conflicts.
			add:     []protocol.Instance{inst(id(1, 3), 3), inst(id(2, 1), 4, id(1, 3)), inst(id(1, 1), 1)},
			want:    []protocol.InstanceID{id(1, 3), id(1, 1)},
			blocked: []protocol.InstanceID{id(1, 2)},
			pending: 1,
		},
		{
			name: "prefix dependency satisfied out of order",
			add: []protocol.Instance{
				inst(id(2, 1), 4, id(1, 3)), inst(id(1, 3), 3), inst(id(1, 2), 2), inst(id(1, 1), 1),
			},
			want: []protocol.InstanceID{id(1, 3), id(1, 2), id(1, 1), id(2, 1)},
		},
		{
			name: "dependency on an executed instance is satisfied",
			add:  []protocol.Instance{inst(id(1, 1), 1), inst(id(1, 2), 2, id(1, 1)), inst(id(2, 1), 3, id(1, 2))},
			want: []protocol.InstanceID{id(1, 1), id(1, 2), id(2, 1)},
		},
		{
			name: "multi-paxos log in order",
			add:  []protocol.Instance{slot(1), slot(2), slot(3), slot(4)},
			want: []protocol.InstanceID{id(0, 1), id(0, 2), id(0, 3), id(0, 4)},
		},
		{
			name:    "multi-paxos log with a gap",
			add:     []protocol.Instance{slot(1), slot(3), slot(5), slot(4)},
			want:    []protocol.InstanceID{id(0, 1)},
			blocked: []protocol.InstanceID{id(0, 2)},
			pending: 3,
		},
		{
			name: "multi-paxos log shuffled",
			add:  []protocol.Instance{slot(4), slot(2), slot(5), slot(1), slot(3)},
			want: []protocol.InstanceID{id(0, 1), id(0, 2), id(0, 3), id(0, 4), id(0, 5)},
		},
		{
			name: "duplicates are ignored",
			add:  []protocol.Instance{inst(id(2, 1), 2, id(1, 1)), inst(id(2, 1), 2, id(1, 1)), inst(id(1, 1), 1), inst(id(1, 1), 1), inst(id(2, 1), 2, id(1, 1))},
			want: []protocol.InstanceID{id(1, 1), id(2, 1)},
		},
		{
			name: "self dependency (own row prefix including itself)",
			add:  []protocol.Instance{inst(id(1, 2), 2, id(1, 2)), inst(id(1, 1), 1)},
			want: []protocol.InstanceID{id(1, 1), id(1, 2)},
		},
		{
			name:    "several missing rows reported sorted",
			add:     []protocol.Instance{inst(id(3, 2), 9, id(2, 2), id(1, 1)), inst(id(2, 1), 1)},
			want:    []protocol.InstanceID{id(2, 1)},
			blocked: []protocol.InstanceID{id(1, 1), id(2, 2)},
			pending: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRecorder()
			for _, in := range tt.add {
				r.e.Add(in)
				r.e.Execute()
			}
			if diff := cmp.Diff(tt.want, r.order); diff != "" {
				t.Errorf("execution order (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.blocked, r.e.Blocked()); diff != "" {
				t.Errorf("Blocked (-want +got):\n%s", diff)
			}
			if got := r.e.Pending(); got != tt.pending {
				t.Errorf("Pending = %d, want %d", got, tt.pending)
			}
			for _, x := range r.order {
				if !r.e.Executed(x) {
					t.Errorf("Executed(%v) = false after it executed", x)
				}
			}
		})
	}
}

// TestBlockedExactlyTheMissing walks a recovery: each Blocked answer names exactly what is
// missing, and committing it unblocks (or reveals the next missing instance).
func TestBlockedExactlyTheMissing(t *testing.T) {
	r := newRecorder()
	e := r.e
	if b := e.Blocked(); len(b) != 0 {
		t.Fatalf("empty executor: Blocked = %v", b)
	}
	// 3.1 depends on (1, 2) and (2, 1); only 1.1 is committed.
	e.Add(inst(id(1, 1), 1))
	e.Add(inst(id(3, 1), 5, id(1, 2), id(2, 1)))
	e.Execute()
	if diff := cmp.Diff([]protocol.InstanceID{id(1, 2), id(2, 1)}, e.Blocked()); diff != "" {
		t.Fatalf("Blocked (-want +got):\n%s", diff)
	}
	// 2.1 arrives and itself depends on 4.3 (prefix: 4.1..4.3).
	e.Add(inst(id(2, 1), 4, id(4, 3)))
	e.Execute()
	if diff := cmp.Diff([]protocol.InstanceID{id(1, 2), id(4, 1), id(4, 2), id(4, 3)}, e.Blocked()); diff != "" {
		t.Fatalf("Blocked (-want +got):\n%s", diff)
	}
	e.Add(inst(id(4, 2), 1))
	e.Add(inst(id(4, 1), 1))
	e.Add(inst(id(4, 3), 1))
	e.Add(inst(id(1, 2), 2))
	if n := e.Execute(); n != 6 {
		t.Fatalf("Execute = %d, want 6", n)
	}
	if b := e.Blocked(); len(b) != 0 {
		t.Fatalf("Blocked = %v after everything committed", b)
	}
	if e.Pending() != 0 {
		t.Fatalf("Pending = %d", e.Pending())
	}
	if got := e.ExecutedPrefix(4); got != 3 {
		t.Fatalf("ExecutedPrefix(4) = %d, want 3", got)
	}
	all := []protocol.Instance{
		inst(id(1, 1), 1), inst(id(3, 1), 5, id(1, 2), id(2, 1)), inst(id(2, 1), 4, id(4, 3)),
		inst(id(4, 2), 1), inst(id(4, 1), 1), inst(id(4, 3), 1), inst(id(1, 2), 2),
	}
	if err := newReference(all).checkOrder(r.order); err != nil {
		t.Fatalf("order %v: %v", r.order, err)
	}
	if len(r.order) != len(all) {
		t.Fatalf("executed %d of %d", len(r.order), len(all))
	}
}

func TestConflictingDuplicatePanics(t *testing.T) {
	e := New(Config{})
	e.Add(inst(id(2, 7), 3, id(1, 1)))
	defer func() {
		r := recover()
		if r == nil {
			t.Fatal("no panic on a second Add with different deps")
		}
		if !strings.Contains(fmt.Sprint(r), "2.7") {
			t.Fatalf("panic does not name the instance: %v", r)
		}
	}()
	e.Add(inst(id(2, 7), 3, id(1, 2)))
}

func TestDuplicateWithReorderedDepsIsSame(t *testing.T) {
	e := New(Config{})
	e.Add(inst(id(2, 7), 3, id(1, 1), id(3, 4)))
	e.Add(inst(id(2, 7), 3, id(3, 4), id(1, 1))) // must not panic
	if e.Stats().Duplicates != 1 {
		t.Fatalf("Duplicates = %d", e.Stats().Duplicates)
	}
}

func TestApplyGetsInstanceWithoutCopyingCommands(t *testing.T) {
	cmds := []protocol.Command{{ClientID: 9, Seq: 1, Op: protocol.OpPut, Key: []byte("a"), Value: []byte("v")}}
	var got *protocol.Command
	e := New(Config{Apply: func(in *protocol.Instance) { got = &in.Cmds[0] }})
	e.Add(protocol.Instance{ID: id(1, 1), Seq: 1, Cmds: cmds})
	e.Execute()
	if got != &cmds[0] {
		t.Fatal("Apply received a copy of the commands")
	}
}

func TestAddFromApplyPanics(t *testing.T) {
	var e *Executor
	e = New(Config{Apply: func(in *protocol.Instance) { e.Add(inst(id(1, 9), 1)) }})
	e.Add(inst(id(1, 1), 1))
	defer func() {
		if recover() == nil {
			t.Fatal("no panic")
		}
	}()
	e.Execute()
}

// TestExecutedMemoryIsCompact: executed instances leave no per-instance state behind once
// the prefix covers them.
func TestExecutedMemoryIsCompact(t *testing.T) {
	e := New(Config{})
	// Row 1 executes out of order: evens first (they do not depend on the odds), then odds.
	const n = 1000
	for k := uint64(2); k <= n; k += 2 {
		e.Add(inst(id(1, k), k))
	}
	e.Execute()
	r := e.row(1)
	if r.prefix != 0 || len(r.above) != n/2 {
		t.Fatalf("prefix %d, %d runs; want 0 and %d", r.prefix, len(r.above), n/2)
	}
	for k := uint64(1); k <= n; k += 2 {
		e.Add(inst(id(1, k), k))
	}
	e.Execute()
	if r.prefix != n || len(r.above) != 0 || len(r.pending) != 0 || len(e.sets) != 0 {
		t.Fatalf("prefix %d, runs %d, pending %d, sets %d; want %d, 0, 0, 0", r.prefix, len(r.above), len(r.pending), len(e.sets), n)
	}
	for k := uint64(1); k <= n; k++ {
		if !e.Executed(id(1, k)) {
			t.Fatalf("Executed(1.%d) = false", k)
		}
	}
	if e.Executed(id(1, n+1)) || e.Executed(id(2, 1)) {
		t.Fatal("Executed reports an instance that never ran")
	}
}

// TestBackwardsChainIsLinear: a long chain delivered backwards (each Add followed by
// Execute) must not re-traverse the pending chain on every call.
func TestBackwardsChainIsLinear(t *testing.T) {
	const n = 5000
	for _, shape := range []string{"log", "rows"} {
		t.Run(shape, func(t *testing.T) {
			count := 0
			e := New(Config{Apply: func(*protocol.Instance) { count++ }})
			mk := func(k uint64) protocol.Instance {
				if shape == "log" {
					return slot(k)
				}
				// Alternate rows 1 and 2: k depends on k-1 in the other row.
				r := protocol.ReplicaID(1 + k%2)
				if k == 1 {
					return inst(id(r, 1), 1)
				}
				return inst(id(r, (k+1)/2), k, id(protocol.ReplicaID(1+(k-1)%2), k/2))
			}
			for k := uint64(n); k >= 1; k-- {
				e.Add(mk(k))
				e.Execute()
				if k > 1 && count != 0 {
					t.Fatalf("executed %d before the head of the chain arrived", count)
				}
			}
			if count != n {
				t.Fatalf("executed %d, want %d", count, n)
			}
			if v := e.Stats().Visits; v > 6*n {
				t.Fatalf("Visits = %d for a chain of %d: traversal is not linear", v, n)
			}
		})
	}
}

// TestBlockedChainStaysMemoizedWhileItGrowsBackwards: a log arrives backwards and after
// every slot another instance depending on the top of the log arrives. When a missing slot
// arrives and is itself blocked, what waited on it must be known to wait on the next
// missing slot (the sets merge) instead of being walked again by every newcomer.
func TestBlockedChainStaysMemoizedWhileItGrowsBackwards(t *testing.T) {
	const n = 3000
	e := New(Config{})
	for k := uint64(n); k >= 2; k-- {
		e.Add(slot(k))
		e.Add(inst(id(5, n-k+1), 1, id(0, n)))
		e.Execute()
	}
	if v := e.Stats().Visits; v > 8*n {
		t.Fatalf("Visits = %d for %d slots and %d readers: the pending log is re-walked", v, n, n)
	}
	e.Add(slot(1))
	if got := e.Execute(); got != 2*n-1 {
		t.Fatalf("Execute = %d, want %d", got, 2*n-1)
	}
}

// TestLongPendingChainNotRetraversed: with a chain blocked on one missing instance, adding
// unrelated instances must not walk the chain again.
func TestLongPendingChainNotRetraversed(t *testing.T) {
	const n = 5000
	e := New(Config{})
	for k := uint64(2); k <= n; k++ {
		e.Add(slot(k))
		e.Execute()
	}
	before := e.Stats().Visits
	for k := uint64(1); k <= n; k++ {
		e.Add(inst(id(1, k), k)) // independent row
		e.Execute()
	}
	if d := e.Stats().Visits - before; d > 2*n {
		t.Fatalf("%d visits for %d independent instances with a pending chain of %d", d, n, n)
	}
	if diff := cmp.Diff([]protocol.InstanceID{id(0, 1)}, e.Blocked()); diff != "" {
		t.Fatalf("Blocked (-want +got):\n%s", diff)
	}
	e.Add(slot(1))
	if got := e.Execute(); got != n {
		t.Fatalf("Execute = %d, want %d", got, n)
	}
}

// TestDeepGraphNoRecursionLimit: a component and a chain far deeper than any goroutine
// stack would allow for a recursive traversal.
func TestDeepGraphNoRecursionLimit(t *testing.T) {
	const n = 50000
	count := 0
	e := New(Config{Apply: func(*protocol.Instance) { count++ }})
	// One big cycle: 1.k depends on 1.(k+1) (prefix: everything below too), 1.n on 1.1.
	for k := uint64(1); k < n; k++ {
		e.Add(inst(id(1, k), k, id(1, k+1)))
	}
	e.Add(inst(id(1, n), n, id(1, 1)))
	e.Execute()
	if count != n {
		t.Fatalf("executed %d of a %d-instance cycle", count, n)
	}
	if e.Stats().MaxComp != n {
		t.Fatalf("MaxComp = %d, want %d", e.Stats().MaxComp, n)
	}
}
