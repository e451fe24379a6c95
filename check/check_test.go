package check

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/parliament-lab/parliament/protocol"
)

func put(client int, key, val string, call, ret int64) Op {
	return Op{Client: client, ClientID: uint64(client + 1), Kind: protocol.OpPut, Key: key, Value: val,
		Call: call, Return: ret, Known: true, Result: protocol.ResultOK}
}

func get(client int, key, out string, call, ret int64) Op {
	r := protocol.ResultOK
	if out == "" {
		r = protocol.ResultNotFound
	}
	return Op{Client: client, ClientID: uint64(client + 1), Kind: protocol.OpGet, Key: key,
		Call: call, Return: ret, Known: true, Result: r, Out: out}
}

func cas(client int, key, old, val string, call, ret int64, ok bool, cur string) Op {
	o := Op{Client: client, ClientID: uint64(client + 1), Kind: protocol.OpCAS, Key: key, Old: old, Value: val,
		Call: call, Return: ret, Known: true, Result: protocol.ResultOK}
	if !ok {
		o.Result, o.Out = protocol.ResultCASFailed, cur
	}
	return o
}

func unknown(o Op) Op {
	o.Known, o.Return, o.Result, o.Out = false, 0, 0, ""
	return o
}

func TestLinearizable(t *testing.T) {
	tests := []struct {
		name string
		h    []Op
		ok   bool
	}{
		{"sequential put get", []Op{put(0, "x", "a", 0, 10), get(1, "x", "a", 20, 30)}, true},
		{"stale read after completed put", []Op{put(0, "x", "a", 0, 10), put(0, "x", "b", 20, 30), get(1, "x", "a", 40, 50)}, false},
		{"read of a value never written", []Op{put(0, "x", "a", 0, 10), get(1, "x", "z", 20, 30)}, false},
		{"read absent after put", []Op{put(0, "x", "a", 0, 10), get(1, "x", "", 20, 30)}, false},
		{"concurrent read may see either", []Op{put(0, "x", "a", 0, 10), put(0, "x", "b", 20, 40), get(1, "x", "a", 25, 30)}, true},
		{"keys are independent", []Op{put(0, "x", "a", 0, 10), get(1, "y", "", 20, 30), get(1, "x", "a", 40, 50)}, true},
		// Two readers disagree on the order of two completed writes: the classic
		// non-linearizable (but sequentially consistent per reader) history.
		{"readers see writes in different orders", []Op{
			put(0, "x", "a", 0, 100), put(1, "x", "b", 0, 100),
			get(2, "x", "a", 10, 20), get(2, "x", "b", 30, 40),
			get(3, "x", "b", 10, 20), get(3, "x", "a", 30, 40),
		}, false},
		{"cas on absent key with empty old", []Op{cas(0, "x", "", "a", 0, 10, true, ""), get(1, "x", "a", 20, 30)}, true},
		{"cas must fail on mismatch", []Op{put(0, "x", "a", 0, 10), cas(1, "x", "z", "b", 20, 30, true, "")}, false},
		{"failed cas reports current value", []Op{put(0, "x", "a", 0, 10), cas(1, "x", "z", "b", 20, 30, false, "a")}, true},
		{"failed cas with wrong current value", []Op{put(0, "x", "a", 0, 10), cas(1, "x", "z", "b", 20, 30, false, "q")}, false},
		{"unknown put may take effect late", []Op{unknown(put(0, "x", "a", 0, 0)), get(1, "x", "", 10, 20), get(1, "x", "a", 30, 40)}, true},
		{"unknown put may never take effect", []Op{unknown(put(0, "x", "a", 0, 0)), get(1, "x", "", 10, 20)}, true},
		{"unknown put cannot act before its call", []Op{get(1, "x", "a", 0, 5), unknown(put(0, "x", "a", 10, 0))}, false},
		{"unknown put cannot be undone", []Op{unknown(put(0, "x", "a", 0, 0)), get(1, "x", "a", 10, 20), get(1, "x", "", 30, 40)}, false},
		{"unknown get is ignored", []Op{put(0, "x", "a", 0, 10), unknown(get(1, "x", "", 20, 0))}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := CheckLinearizable(tt.h, 10*time.Second)
			if r.Ok() != tt.ok || r.Illegal() == tt.ok {
				t.Fatalf("CheckLinearizable = %v, want ok=%v", r.Result, tt.ok)
			}
			if v := r.Violation(); (v == nil) != tt.ok {
				t.Fatalf("Violation() = %v, want ok=%v", v, tt.ok)
			}
		})
	}
}

// TestNonLinearizableVisualization feeds a hand-made stale-read history and checks that the
// verdict names the key and that the HTML visualization is written.
func TestNonLinearizableVisualization(t *testing.T) {
	h := []Op{
		put(0, "k1", "v1", 0, 1e6), get(1, "k0", "", 0, 1e6),
		put(0, "k1", "v2", 2e6, 3e6),
		get(1, "k1", "v1", 4e6, 5e6), // stale: v2 completed before this read began
	}
	r := CheckLinearizable(h, 10*time.Second)
	if !r.Illegal() {
		t.Fatalf("stale read judged %v", r.Result)
	}
	v := r.Violation()
	if v == nil || v.Property != Linearizability || !strings.Contains(v.Detail, "key k1") {
		t.Fatalf("violation = %v, want linearizability on key k1", v)
	}
	path := filepath.Join(t.TempDir(), "viz.html")
	if err := r.Visualize(path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "<html") || !strings.Contains(string(b), `c2#0 get(k1)`) {
		t.Fatalf("visualization lacks the history (%d bytes)", len(b))
	}
	ok := CheckLinearizable(h[:3], 10*time.Second)
	if err := ok.Visualize(path); err == nil {
		t.Fatal("Visualize of a legal history should fail: there is nothing to show")
	}
}

func inst(r protocol.ReplicaID, n uint64, seq uint64, deps []protocol.InstanceID, cmds ...protocol.Command) *protocol.Instance {
	return &protocol.Instance{ID: protocol.InstanceID{Replica: r, Num: n}, Seq: seq, Deps: deps, Cmds: cmds,
		Status: protocol.StatusCommitted}
}

func w(client, seq uint64, key, val string) protocol.Command {
	return protocol.Command{ClientID: client, Seq: seq, Op: protocol.OpPut, Key: []byte(key), Value: []byte(val)}
}

func rd(client, seq uint64, key string) protocol.Command {
	return protocol.Command{ClientID: client, Seq: seq, Op: protocol.OpGet, Key: []byte(key)}
}

func TestAgreementCommitted(t *testing.T) {
	a := NewReplicaChecker()
	d := []protocol.InstanceID{{Replica: 1, Num: 2}, {Replica: 2, Num: 0}, {Replica: 3, Num: 1}}
	if v := a.Committed(1, inst(1, 3, 4, d, w(1, 1, "x", "a"))); v != nil {
		t.Fatal(v)
	}
	// Same decision, deps listed in another order and without the empty row: agreement.
	same := []protocol.InstanceID{{Replica: 3, Num: 1}, {Replica: 1, Num: 2}}
	if v := a.Committed(2, inst(1, 3, 4, same, w(1, 1, "x", "a"))); v != nil {
		t.Fatal(v)
	}
	for name, other := range map[string]*protocol.Instance{
		"cmds": inst(1, 3, 4, d, w(1, 1, "x", "b")),
		"deps": inst(1, 3, 4, d[:1], w(1, 1, "x", "a")),
		"seq":  inst(1, 3, 5, d, w(1, 1, "x", "a")),
		"noop": inst(1, 3, 4, d, protocol.Noop()),
	} {
		v := a.Committed(3, other)
		if v == nil || v.Property != Agreement || !strings.Contains(v.Detail, "1.3") {
			t.Errorf("%s differs: violation = %v", name, v)
		}
	}
	if v := a.Executed(2, inst(2, 9, 1, nil, w(1, 2, "x", "c"))); v == nil || v.Property != Agreement {
		t.Errorf("executing an uncommitted instance: violation = %v", v)
	}
}

func TestOrder(t *testing.T) {
	i1 := inst(1, 1, 1, nil, w(1, 1, "x", "a"))
	i2 := inst(2, 1, 1, nil, w(2, 1, "x", "b"))
	r1 := inst(3, 1, 2, nil, rd(3, 1, "x"))
	r2 := inst(3, 2, 2, nil, rd(3, 2, "x"))
	y := inst(3, 3, 1, nil, w(3, 3, "y", "c"))
	commit := func(a *ReplicaChecker) {
		for _, in := range []*protocol.Instance{i1, i2, r1, r2, y} {
			if v := a.Committed(1, in); v != nil {
				t.Fatal(v)
			}
		}
	}
	exec := func(a *ReplicaChecker, r protocol.ReplicaID, seq ...*protocol.Instance) *Violation {
		for _, in := range seq {
			if v := a.Executed(r, in); v != nil {
				return v
			}
		}
		return nil
	}
	tests := []struct {
		name   string
		r1, r2 []*protocol.Instance
		ok     bool
	}{
		{"same order", []*protocol.Instance{i1, i2, r1}, []*protocol.Instance{i1, i2, r1}, true},
		{"lagging replica", []*protocol.Instance{i1, i2, r1}, []*protocol.Instance{i1}, true},
		{"writes swapped", []*protocol.Instance{i1, i2}, []*protocol.Instance{i2, i1}, false},
		{"read moved across a write", []*protocol.Instance{i1, r1, i2}, []*protocol.Instance{i1, i2, r1}, false},
		{"reads commute", []*protocol.Instance{i1, r1, r2, i2}, []*protocol.Instance{i1, r2, r1, i2}, true},
		{"other keys commute", []*protocol.Instance{y, i1, i2}, []*protocol.Instance{i1, i2, y}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := NewReplicaChecker()
			commit(a)
			if v := exec(a, 1, tt.r1...); v != nil {
				t.Fatal(v)
			}
			v := exec(a, 2, tt.r2...)
			if (v == nil) != tt.ok || (v != nil && v.Property != Order) {
				t.Fatalf("violation = %v, want ok=%v", v, tt.ok)
			}
		})
	}
}

func TestRestartAndDurability(t *testing.T) {
	a := NewReplicaChecker()
	i1 := inst(1, 1, 1, nil, w(1, 1, "x", "a"))
	i2 := inst(1, 2, 2, nil, w(1, 2, "x", "b"))
	for _, in := range []*protocol.Instance{i1, i2} {
		a.Committed(1, in)
		if v := a.Executed(1, in); v != nil {
			t.Fatal(v)
		}
	}
	acked := []CmdID{{1, 1}, {1, 2}}
	if v := a.Durable(1, acked); v != nil {
		t.Fatal(v)
	}
	a.Restarted(1)
	if a.HasExecuted(1, CmdID{1, 1}) {
		t.Fatal("a restarted replica has executed nothing yet")
	}
	// Re-execution from scratch must follow the same order...
	if v := a.Executed(1, i1); v != nil {
		t.Fatal(v)
	}
	// ...and a replica that lost i2 in the crash is caught.
	v := a.Durable(1, acked)
	if v == nil || v.Property != Durability || !strings.Contains(v.Detail, "c1#2") {
		t.Fatalf("violation = %v, want durability naming c1#2", v)
	}
	a.Restarted(1)
	if v := a.Executed(1, i2); v == nil || v.Property != Order {
		t.Fatalf("re-executing in another order: violation = %v", v)
	}
}

func TestLiveness(t *testing.T) {
	const heal, bound = 100, 50
	h := []Op{put(0, "x", "a", 10, 140), put(1, "x", "b", 120, 160)}
	if v := CheckLiveness(h, heal, bound, 1000); v != nil {
		t.Fatal(v)
	}
	late := append(h, put(2, "x", "c", 10, 151))
	if v := CheckLiveness(late, heal, bound, 1000); v == nil || v.Property != Liveness {
		t.Fatalf("late op: violation = %v", v)
	}
	pending := append(h, unknown(put(2, "x", "c", 130, 0)))
	if v := CheckLiveness(pending, heal, bound, 170); v != nil {
		t.Fatalf("run ended before the deadline: violation = %v", v)
	}
	if v := CheckLiveness(pending, heal, bound, 180); v == nil || !strings.Contains(v.Detail, "never completed") {
		t.Fatalf("pending op past its deadline: violation = %v", v)
	}
}
