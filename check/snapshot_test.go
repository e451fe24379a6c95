package check

import (
	"slices"
	"strings"
	"testing"

	"github.com/parliament-lab/parliament/protocol"
)

func TestNumSet(t *testing.T) {
	var s numSet
	for _, n := range []uint64{3, 1, 5, 2, 3, 4} {
		s.Add(n)
	}
	if s.Prefix != 5 || len(s.Above) != 0 || s.Len() != 5 {
		t.Fatalf("after 1..5 in any order: %+v", s)
	}
	if s.Add(2) {
		t.Fatal("add of a member reported new")
	}
	s.Add(9)
	s.Add(7)
	c := s.Clone()
	s.Add(8)
	if !s.Has(8) || c.Has(8) || !c.Has(9) || c.Has(6) || c.Len() != 7 {
		t.Fatalf("clone shares memory or loses members: s=%+v c=%+v", s, *c)
	}
	s.Add(6)
	if s.Prefix != 9 || len(s.Above) != 0 {
		t.Fatalf("filling the gap should absorb the runs: %+v", s)
	}
}

func id(r protocol.ReplicaID, n uint64) protocol.InstanceID {
	return protocol.InstanceID{Replica: r, Num: n}
}

// TestSnapshotRestored follows a snapshot from replica 1 to replica 2: what it covers is
// executed at 2 without executing there, an instance 1 executed above the frontier may
// execute once more at 2 (a duplicate), one the frontier covers may not, and the per-key
// order continues from the snapshot's position.
func TestSnapshotRestored(t *testing.T) {
	a := NewReplicaChecker()
	i1 := inst(1, 1, 1, nil, w(1, 1, "x", "a"))
	i2 := inst(1, 2, 2, nil, w(1, 2, "x", "b"))
	j1 := inst(2, 1, 3, nil, w(2, 1, "x", "c")) // executes after i2 everywhere
	k3 := inst(3, 3, 1, nil, w(3, 3, "y", "d")) // row 3 above a gap: not in any prefix
	for _, in := range []*protocol.Instance{i1, i2, j1, k3} {
		if v := a.Committed(1, in); v != nil {
			t.Fatal(v)
		}
	}
	for _, in := range []*protocol.Instance{i1, i2, k3} {
		if v := a.Executed(1, in); v != nil {
			t.Fatal(v)
		}
	}
	if _, v := a.Snapshot(1, []protocol.InstanceID{id(1, 3)}); v == nil {
		t.Fatal("a snapshot claiming 1.3, which replica 1 never executed, was accepted")
	}
	front := []protocol.InstanceID{id(1, 2)}
	st, v := a.Snapshot(1, front)
	if v != nil {
		t.Fatal(v)
	}
	if st.Instances() != 3 {
		t.Fatalf("snapshot holds %d instances, want 3 (1.1 1.2 3.3)", st.Instances())
	}
	// Replica 1 goes on; the frozen state must not change.
	if v := a.Executed(1, j1); v != nil {
		t.Fatal(v)
	}
	if st.Instances() != 3 {
		t.Fatal("executing after the snapshot changed it")
	}

	if v := a.Restored(2, st, nil); v != nil {
		t.Fatal(v)
	}
	if !a.HasExecuted(2, CmdID{1, 2}) || a.ExecutedInstances(2) != 3 {
		t.Fatal("replica 2 should hold what the snapshot holds")
	}
	if got := a.Missing(2); !slices.Equal(got, []protocol.InstanceID{id(2, 1)}) {
		t.Fatalf("Missing(2) = %v, want [2.1]", got)
	}
	// 3.3 is above the frontier: the restored executor may run it once more.
	if v := a.Executed(2, k3); v != nil {
		t.Fatalf("re-executing an instance the snapshot holds above its frontier: %v", v)
	}
	if v := a.Executed(2, k3); v == nil || v.Property != Agreement {
		t.Fatalf("a third execution of 3.3: violation = %v", v)
	}
	// 1.2 is covered: it must never execute again.
	if v := a.Executed(2, i2); v == nil || !strings.Contains(v.Detail, "covers") {
		t.Fatalf("re-executing a covered instance: violation = %v", v)
	}
	// The order continues after the snapshot's two writes on x: j1 is write #3.
	if v := a.Executed(2, j1); v != nil {
		t.Fatalf("j1 after the snapshot: %v", v)
	}
	if len(a.Missing(2)) != 0 {
		t.Fatal("replica 2 executed everything")
	}
}

func TestRestoredOrderContinues(t *testing.T) {
	a := NewReplicaChecker()
	i1 := inst(1, 1, 1, nil, w(1, 1, "x", "a"))
	i2 := inst(1, 2, 2, nil, w(1, 2, "x", "b"))
	i3 := inst(2, 1, 3, nil, w(2, 1, "x", "c"))
	for _, in := range []*protocol.Instance{i1, i2, i3} {
		a.Committed(1, in)
	}
	a.Executed(1, i1)
	small, _ := a.Snapshot(1, []protocol.InstanceID{id(1, 1)})
	for _, in := range []*protocol.Instance{i2, i3} {
		if v := a.Executed(1, in); v != nil {
			t.Fatal(v)
		}
	}
	// Replica 2 restarts from the snapshot holding one write on x: its next write there
	// must be i2 (write #2), not i3.
	a.Restarted(2)
	if v := a.Restored(2, small, nil); v != nil {
		t.Fatal(v)
	}
	if v := a.Executed(2, i3); v == nil || v.Property != Order {
		t.Fatalf("after a snapshot holding one write, executing the third: violation = %v", v)
	}
	a.Restarted(3)
	a.Restored(3, small, nil)
	for _, in := range []*protocol.Instance{i2, i3} {
		if v := a.Executed(3, in); v != nil {
			t.Fatalf("the right order after the snapshot: %v", v)
		}
	}
}

// TestRestoredLoses: installing a snapshot that lacks instances this replica executed
// loses them, unless the runtime executes them again.
func TestRestoredLoses(t *testing.T) {
	a := NewReplicaChecker()
	i1 := inst(1, 1, 1, nil, w(1, 1, "x", "a"))
	j1 := inst(2, 1, 1, nil, w(2, 1, "y", "b"))
	j2 := inst(2, 2, 2, nil, w(2, 2, "y", "c"))
	for _, in := range []*protocol.Instance{i1, j1, j2} {
		a.Committed(1, in)
	}
	a.Executed(1, i1)
	a.Executed(1, j1)
	st, _ := a.Snapshot(1, []protocol.InstanceID{id(1, 1), id(2, 1)})
	for _, in := range []*protocol.Instance{j1, j2} {
		if v := a.Executed(2, in); v != nil {
			t.Fatal(v)
		}
	}
	// Replica 2 executed 2.2, which the snapshot (ahead in row 1) lacks.
	if v := a.Restored(2, st, func(x protocol.InstanceID) bool { return x == id(2, 2) }); v != nil {
		t.Fatalf("2.2 is executed again: no loss, got %v", v)
	}
	for _, in := range []*protocol.Instance{j1, j2} {
		a.Executed(3, in)
	}
	v := a.Restored(3, st, nil)
	if v == nil || v.Property != Durability || !strings.Contains(v.Detail, "2.2") {
		t.Fatalf("violation = %v, want durability naming 2.2", v)
	}
}

func TestSameState(t *testing.T) {
	ids := []protocol.ReplicaID{1, 2, 3}
	if v := SameState(ids, [][]byte{[]byte("s"), []byte("s"), []byte("s")}, nil); v != nil {
		t.Fatal(v)
	}
	v := SameState(ids, [][]byte{[]byte("s"), []byte("s"), []byte("t")}, func(a, b []byte) string { return string(a) + "/" + string(b) })
	if v == nil || v.Property != Convergence || !strings.Contains(v.Detail, "replicas 1 and 3") || !strings.Contains(v.Detail, "s/t") {
		t.Fatalf("violation = %v", v)
	}
}

func TestExecStateKey(t *testing.T) {
	a := NewReplicaChecker()
	i1 := inst(1, 1, 1, nil, w(1, 1, "x", "a"))
	i3 := inst(1, 3, 2, nil, w(1, 2, "y", "b"))
	j1 := inst(2, 1, 1, nil, w(2, 1, "z", "c"))
	for _, in := range []*protocol.Instance{i1, i3, j1} {
		a.Committed(1, in)
	}
	// The same set executed in different orders gives the same key; another set not.
	for _, in := range []*protocol.Instance{i1, i3, j1} {
		a.Executed(1, in)
	}
	for _, in := range []*protocol.Instance{j1, i3, i1} {
		a.Executed(2, in)
	}
	a.Executed(3, i1)
	a.Executed(3, j1)
	s1, _ := a.Snapshot(1, []protocol.InstanceID{id(1, 1), id(2, 1)})
	s2, _ := a.Snapshot(2, []protocol.InstanceID{id(1, 1), id(2, 1)})
	s3, _ := a.Snapshot(3, []protocol.InstanceID{id(1, 1), id(2, 1)})
	if s1.Key() != s2.Key() || s1.Key() == s3.Key() {
		t.Fatalf("keys: %q %q %q", s1.Key(), s2.Key(), s3.Key())
	}
}
