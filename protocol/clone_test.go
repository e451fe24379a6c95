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
