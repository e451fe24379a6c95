package executor

import (
	"testing"

	"github.com/parliament-lab/parliament/protocol"
)

// TestRestoreSkipsCoveredInstances: after Restore(F) the executor treats everything covered
// by F as executed: covered instances are ignored, dependencies on them are satisfied, and
// an instance just above F executes at once.
func TestRestoreSkipsCoveredInstances(t *testing.T) {
	var order []protocol.InstanceID
	e := New(Config{Apply: func(inst *protocol.Instance) { order = append(order, inst.ID) }})
	e.Restore([]protocol.InstanceID{{Replica: 1, Num: 10}, {Replica: 2, Num: 3}, {Replica: 3, Num: 0}})
	if got := e.ExecutedPrefix(1); got != 10 {
		t.Fatalf("ExecutedPrefix(1) = %d, want 10", got)
	}
	if !e.Executed(protocol.InstanceID{Replica: 2, Num: 3}) || e.Executed(protocol.InstanceID{Replica: 2, Num: 4}) {
		t.Fatal("Executed disagrees with the restored frontier")
	}
	// Covered: ignored.
	e.Add(protocol.Instance{ID: protocol.InstanceID{Replica: 1, Num: 7}, Seq: 1})
	// Above, depending on covered prefixes of both rows: executes.
	e.Add(protocol.Instance{ID: protocol.InstanceID{Replica: 1, Num: 11}, Seq: 2,
		Deps: []protocol.InstanceID{{Replica: 1, Num: 10}, {Replica: 2, Num: 3}}})
	// Depends on row 2 beyond the frontier: waits.
	e.Add(protocol.Instance{ID: protocol.InstanceID{Replica: 1, Num: 12}, Seq: 3,
		Deps: []protocol.InstanceID{{Replica: 2, Num: 4}}})
	if n := e.Execute(); n != 1 {
		t.Fatalf("Execute = %d, want 1 (order %v)", n, order)
	}
	if len(order) != 1 || order[0] != (protocol.InstanceID{Replica: 1, Num: 11}) {
		t.Fatalf("executed %v, want [1.11]", order)
	}
	if b := e.Blocked(); len(b) != 1 || b[0] != (protocol.InstanceID{Replica: 2, Num: 4}) {
		t.Fatalf("Blocked = %v, want [2.4]", b)
	}
	if e.Pending() != 1 {
		t.Fatalf("Pending = %d, want 1", e.Pending())
	}
}

// TestRestoreAbsorbsRuns: a restored prefix absorbs executed runs it reaches, including one
// that starts right after it.
func TestRestoreAbsorbsRuns(t *testing.T) {
	e := New(Config{})
	for _, n := range []uint64{3, 4, 8, 9} { // runs [3,4] and [8,9] above prefix 0
		e.Add(protocol.Instance{ID: protocol.InstanceID{Replica: 1, Num: n}, Seq: n})
	}
	e.Execute()
	if e.ExecutedPrefix(1) != 0 {
		t.Fatalf("prefix %d before restore, want 0", e.ExecutedPrefix(1))
	}
	e.Restore([]protocol.InstanceID{{Replica: 1, Num: 7}})
	if got := e.ExecutedPrefix(1); got != 9 {
		t.Fatalf("ExecutedPrefix = %d, want 9 (7 restored, run 8..9 absorbed)", got)
	}
	if b := e.Blocked(); len(b) != 0 {
		t.Fatalf("Blocked = %v, want none", b)
	}
	e.Restore([]protocol.InstanceID{{Replica: 1, Num: 5}}) // behind: no effect
	if got := e.ExecutedPrefix(1); got != 9 {
		t.Fatalf("ExecutedPrefix = %d after a stale restore, want 9", got)
	}
}

func TestRestoreRefusesPending(t *testing.T) {
	e := New(Config{})
	e.Add(protocol.Instance{ID: protocol.InstanceID{Replica: 1, Num: 2}, Deps: []protocol.InstanceID{{Replica: 1, Num: 1}}})
	e.Execute()
	defer func() {
		if recover() == nil {
			t.Fatal("Restore with a pending instance did not panic")
		}
	}()
	e.Restore([]protocol.InstanceID{{Replica: 1, Num: 5}})
}
