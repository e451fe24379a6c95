package protocol

import (
	"reflect"
	"testing"
)

// TestCloneSharesNothing fills every slice of a message, clones it, scribbles over the
// original and checks the clone still holds the original contents.
func TestCloneSharesNothing(t *testing.T) {
	cmd := func(s string) Command {
		return Command{ClientID: 1, Seq: 2, Op: OpCAS, Key: []byte("k" + s), Value: []byte("v" + s), Old: []byte("o" + s)}
	}
	inst := Instance{ID: InstanceID{1, 2}, Deps: []InstanceID{{2, 3}}, Cmds: []Command{cmd("i")}}
	m := Message{Type: MsgPreAccept, Deps: []InstanceID{{1, 1}}, Cmds: []Command{cmd("a"), cmd("b")},
		Insts: []Instance{inst}, Data: []byte("data")}
	want := m.Clone() // a reference copy, itself checked below
	got := m.Clone()
	if !reflect.DeepEqual(got, m) {
		t.Fatalf("clone differs: %+v vs %+v", got, m)
	}
	scribble := func(b []byte) {
		for i := range b {
			b[i] = '#'
		}
	}
	for i := range m.Cmds {
		scribble(m.Cmds[i].Key)
		scribble(m.Cmds[i].Value)
		scribble(m.Cmds[i].Old)
	}
	scribble(m.Insts[0].Cmds[0].Key)
	scribble(m.Data)
	m.Deps[0] = InstanceID{9, 9}
	m.Insts[0].Deps[0] = InstanceID{9, 9}
	m.Cmds[0].Seq = 99
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("clone changed with the original: %+v", got)
	}
	if string(got.Cmds[1].Old) != "ob" || string(got.Insts[0].Cmds[0].Key) != "ki" || string(got.Data) != "data" {
		t.Fatalf("clone lost contents: %+v", got)
	}

	r := Record{Type: RecordInstance, Inst: inst}
	rc := CloneRecords([]Record{r})
	scribble(r.Inst.Cmds[0].Value)
	if string(rc[0].Inst.Cmds[0].Value) != "vi" {
		t.Fatalf("record clone shares memory: %q", rc[0].Inst.Cmds[0].Value)
	}
	if CloneCommands(nil) != nil || CloneRecords(nil) != nil || CloneBytes(nil) != nil {
		t.Fatal("nil must stay nil")
	}
	if b := CloneBytes([]byte{}); b == nil || len(b) != 0 {
		t.Fatal("empty must stay empty, not nil")
	}
}

// Detach leaves a batch equal to what it was but sharing no byte with its source: after
// the source is overwritten, every key, value, old value and datum still reads the same.
// It keeps nil slices nil, clips capacities (appending to one copy cannot reach the next),
// and allocates nothing for a batch without bytes.
func TestDetach(t *testing.T) {
	src := []byte("key1val1old1key2val2datakey3val3")
	cmd := func(k, v, o []byte) Command { return Command{ClientID: 1, Seq: 1, Op: OpCAS, Key: k, Value: v, Old: o} }
	batch := []Message{
		{Type: MsgAccept, Cmds: []Command{cmd(src[0:4], src[4:8], src[8:12]), cmd(src[12:16], src[16:20], nil)}},
		{Type: MsgCommit, Data: src[20:24], Insts: []Instance{{Cmds: []Command{cmd(src[24:28], src[28:32], nil)}}}},
		{Type: MsgPreAcceptOK, Deps: []InstanceID{{Replica: 1, Num: 2}}},
	}
	want := make([]Message, len(batch))
	for i := range batch {
		want[i] = batch[i].Clone()
	}
	Detach(batch)
	for i := range src {
		src[i] = 'X'
	}
	if !reflect.DeepEqual(batch, want) {
		t.Fatalf("after Detach and overwriting the source:\n got %+v\nwant %+v", batch, want)
	}
	if batch[0].Cmds[1].Old != nil {
		t.Errorf("a nil Old became %q", batch[0].Cmds[1].Old)
	}
	k := batch[0].Cmds[0].Key
	if cap(k) != len(k) {
		t.Errorf("cap(Key) = %d, want %d", cap(k), len(k))
	}
	_ = append(k, 'Z')
	if string(batch[0].Cmds[0].Value) != "val1" {
		t.Errorf("appending to a detached Key overwrote the Value: %q", batch[0].Cmds[0].Value)
	}
	acks := []Message{{Type: MsgPreAcceptOK, Deps: []InstanceID{{Replica: 1, Num: 2}}}}
	if n := testing.AllocsPerRun(100, func() { Detach(acks) }); n != 0 {
		t.Errorf("Detach of a batch without bytes allocates %v times", n)
	}
}
