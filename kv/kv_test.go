package kv

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/parliament-lab/parliament/protocol"
	"pgregory.net/rapid"
)

func put(c, seq uint64, k, v string) protocol.Command {
	return protocol.Command{ClientID: c, Seq: seq, Op: protocol.OpPut, Key: []byte(k), Value: []byte(v)}
}

func get(c, seq uint64, k string) protocol.Command {
	return protocol.Command{ClientID: c, Seq: seq, Op: protocol.OpGet, Key: []byte(k)}
}

func cas(c, seq uint64, k, old, v string) protocol.Command {
	return protocol.Command{ClientID: c, Seq: seq, Op: protocol.OpCAS, Key: []byte(k), Old: []byte(old), Value: []byte(v)}
}

type step struct {
	cmd    protocol.Command
	result protocol.Result
	value  string
}

func TestApplyTable(t *testing.T) {
	tests := []struct {
		name  string
		steps []step
		final map[string]string
	}{
		{"get absent", []step{{get(1, 1, "a"), protocol.ResultNotFound, ""}}, map[string]string{}},
		{"put then get", []step{
			{put(1, 1, "a", "x"), protocol.ResultOK, ""},
			{get(1, 2, "a"), protocol.ResultOK, "x"},
		}, map[string]string{"a": "x"}},
		{"put empty value is present", []step{
			{put(1, 1, "a", ""), protocol.ResultOK, ""},
			{get(1, 2, "a"), protocol.ResultOK, ""},
		}, map[string]string{"a": ""}},
		{"cas on absent key with empty old succeeds", []step{
			{cas(1, 1, "a", "", "x"), protocol.ResultOK, ""},
		}, map[string]string{"a": "x"}},
		{"cas on absent key with non-empty old fails", []step{
			{cas(1, 1, "a", "y", "x"), protocol.ResultCASFailed, ""},
		}, map[string]string{}},
		{"cas match and mismatch", []step{
			{put(1, 1, "a", "x"), protocol.ResultOK, ""},
			{cas(2, 1, "a", "x", "y"), protocol.ResultOK, ""},
			{cas(3, 1, "a", "x", "z"), protocol.ResultCASFailed, "y"},
		}, map[string]string{"a": "y"}},
		{"duplicate put is not re-applied", []step{
			{put(1, 1, "a", "x"), protocol.ResultOK, ""},
			{put(2, 1, "a", "y"), protocol.ResultOK, ""},
			{put(1, 1, "a", "x"), protocol.ResultOK, ""}, // retry of client 1's first command
		}, map[string]string{"a": "y"}},
		{"duplicate cas answers the cached reply", []step{
			{put(1, 1, "a", "x"), protocol.ResultOK, ""},
			{cas(1, 2, "a", "x", "y"), protocol.ResultOK, ""},
			{put(2, 1, "a", "x"), protocol.ResultOK, ""},
			{cas(1, 2, "a", "x", "y"), protocol.ResultOK, ""}, // not applied again: a stays x
			{cas(3, 1, "a", "q", "r"), protocol.ResultCASFailed, "x"},
			{cas(3, 1, "a", "q", "r"), protocol.ResultCASFailed, "x"},
		}, map[string]string{"a": "x"}},
		{"duplicate get is re-executed", []step{
			{get(1, 1, "a"), protocol.ResultNotFound, ""},
			{put(2, 1, "a", "x"), protocol.ResultOK, ""},
			{get(1, 1, "a"), protocol.ResultOK, "x"},
		}, map[string]string{"a": "x"}},
		{"out-of-order seqs of one client all apply", []step{
			{put(1, 3, "c", "3"), protocol.ResultOK, ""},
			{put(1, 1, "a", "1"), protocol.ResultOK, ""},
			{put(1, 2, "b", "2"), protocol.ResultOK, ""},
			{put(1, 3, "c", "dup"), protocol.ResultOK, ""},
		}, map[string]string{"a": "1", "b": "2", "c": "3"}},
		{"client 0 has no session", []step{
			{put(0, 1, "a", "x"), protocol.ResultOK, ""},
			{put(0, 1, "a", "y"), protocol.ResultOK, ""},
		}, map[string]string{"a": "y"}},
		{"unknown op", []step{
			{protocol.Command{ClientID: 1, Seq: 1, Op: 99, Key: []byte("a")}, protocol.ResultError, "unknown operation"},
		}, map[string]string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New()
			for i, st := range tt.steps {
				r := s.Apply(&st.cmd)
				if r.Result != st.result || string(r.Value) != st.value || r.ClientID != st.cmd.ClientID || r.Seq != st.cmd.Seq {
					t.Fatalf("step %d %v %q: got %v %q (client %d seq %d), want %v %q", i, st.cmd.Op, st.cmd.Key, r.Result, r.Value, r.ClientID, r.Seq, st.result, st.value)
				}
			}
			if diff := cmp.Diff(tt.final, dump(s)); diff != "" {
				t.Errorf("final state (-want +got):\n%s", diff)
			}
		})
	}
}

func dump(s *Store) map[string]string {
	m := map[string]string{}
	for k, e := range s.data {
		m[k] = string(e.v)
	}
	return m
}

func TestNoopReturnsZeroReply(t *testing.T) {
	s := New()
	n := protocol.Noop()
	if r := s.Apply(&n); !cmp.Equal(r, protocol.Reply{}) {
		t.Fatalf("noop reply %+v", r)
	}
	if len(s.sessions) != 0 || len(s.data) != 0 {
		t.Fatal("noop changed the state")
	}
}

// TestInputsAreCopied: command bytes may alias network buffers that are reused.
func TestInputsAreCopied(t *testing.T) {
	s := New()
	key, val := []byte("key"), []byte("val")
	c := protocol.Command{ClientID: 1, Seq: 1, Op: protocol.OpPut, Key: key, Value: val}
	s.Apply(&c)
	copy(key, "XXX")
	copy(val, "YYY")
	if v, ok := s.Get([]byte("key")); !ok || string(v) != "val" {
		t.Fatalf("Get(key) = %q %v after the caller reused its buffers", v, ok)
	}
	// A reply value handed out earlier is not changed by a later write.
	g := get(1, 2, "key")
	r := s.Apply(&g)
	p := put(1, 3, "key", "new")
	s.Apply(&p)
	if string(r.Value) != "val" {
		t.Fatalf("earlier reply changed to %q", r.Value)
	}
}

func TestCASReplyCacheExpires(t *testing.T) {
	s := New()
	first := cas(1, 1, "a", "", "v1")
	if r := s.Apply(&first); r.Result != protocol.ResultOK {
		t.Fatal(r)
	}
	for seq := uint64(2); seq <= MaxCachedReplies+1; seq++ {
		c := cas(1, seq, "a", "nope", "x")
		s.Apply(&c)
	}
	r := s.Apply(&first) // its reply fell out of the cache (64 newer CAS replies)
	if r.Result != protocol.ResultError || !bytes.Contains(r.Value, []byte("expired")) {
		t.Fatalf("expired duplicate CAS: %v %q", r.Result, r.Value)
	}
	if v, _ := s.Get([]byte("a")); string(v) != "v1" {
		t.Fatalf("a = %q", v)
	}
	recent := cas(1, MaxCachedReplies+1, "a", "nope", "x")
	if r := s.Apply(&recent); r.Result != protocol.ResultCASFailed || string(r.Value) != "v1" {
		t.Fatalf("recent duplicate CAS: %v %q", r.Result, r.Value)
	}
	if got := len(s.sessions[1].live()); got != MaxCachedReplies {
		t.Fatalf("cache holds %d replies", got)
	}
}

// TestSessionCompact: once a client's seqs are contiguous, nothing per seq is kept.
func TestSessionCompact(t *testing.T) {
	s := New()
	for _, seq := range []uint64{5, 3, 4, 2} {
		c := put(7, seq, "k", "v")
		s.Apply(&c)
	}
	if sess := s.sessions[7]; sess.executed.Prefix != 0 || len(sess.executed.Above) != 4 {
		t.Fatalf("prefix %d above %v", sess.executed.Prefix, sess.executed.Above)
	}
	c := put(7, 1, "k", "v")
	s.Apply(&c)
	if sess := s.sessions[7]; sess.executed.Prefix != 5 || len(sess.executed.Above) != 0 {
		t.Fatalf("prefix %d above %v, want 5 and none", sess.executed.Prefix, sess.executed.Above)
	}
}

// genHistory draws pipelined clients' commands (with retries committed twice) in one
// valid execution order.
func genHistory(t *rapid.T) []protocol.Command {
	nClients := rapid.IntRange(1, 4).Draw(t, "clients")
	nKeys := rapid.IntRange(1, 4).Draw(t, "keys")
	total := rapid.IntRange(1, 60).Draw(t, "total")
	next := make([]uint64, nClients+1)
	var hist []protocol.Command
	for i := 0; i < total; i++ {
		if len(hist) > 0 && rapid.IntRange(0, 9).Draw(t, "dup?") == 0 {
			hist = append(hist, hist[rapid.IntRange(0, len(hist)-1).Draw(t, "dupOf")])
			continue
		}
		c := uint64(rapid.IntRange(1, nClients).Draw(t, "client"))
		next[c]++
		key := fmt.Sprintf("k%d", rapid.IntRange(1, nKeys).Draw(t, "key"))
		val := fmt.Sprintf("v%d", rapid.IntRange(0, 3).Draw(t, "val"))
		switch rapid.IntRange(0, 2).Draw(t, "op") {
		case 0:
			hist = append(hist, get(c, next[c], key))
		case 1:
			hist = append(hist, put(c, next[c], key, val))
		default:
			old := fmt.Sprintf("v%d", rapid.IntRange(0, 3).Draw(t, "old"))
			if rapid.Bool().Draw(t, "emptyOld") {
				old = ""
			}
			hist = append(hist, cas(c, next[c], key, old, val))
		}
	}
	return hist
}

// reorder returns a random order of hist that keeps every conflicting pair (same key, at
// least one write) in its original relative order: what EPaxos may execute at another replica.
func reorder(hist []protocol.Command, rng *rand.Rand) []int {
	placed := make([]bool, len(hist))
	var out []int
	for len(out) < len(hist) {
		var ready []int
		for i := range hist {
			if placed[i] {
				continue
			}
			ok := true
			for j := 0; j < i; j++ {
				if !placed[j] && hist[j].Conflicts(&hist[i]) {
					ok = false
					break
				}
			}
			if ok {
				ready = append(ready, i)
			}
		}
		i := ready[rng.IntN(len(ready))]
		placed[i] = true
		out = append(out, i)
	}
	return out
}

// model is the obviously correct specification: a map and the set of executed writes.
func model(hist []protocol.Command) map[string]string {
	m := map[string]string{}
	done := map[[2]uint64]bool{}
	for _, c := range hist {
		id := [2]uint64{c.ClientID, c.Seq}
		if done[id] {
			continue
		}
		done[id] = true
		switch c.Op {
		case protocol.OpPut:
			m[string(c.Key)] = string(c.Value)
		case protocol.OpCAS:
			cur, ok := m[string(c.Key)]
			if (ok && cur == string(c.Old)) || (!ok && len(c.Old) == 0) {
				m[string(c.Key)] = string(c.Value)
			}
		}
	}
	return m
}

// TestPropertyOrderIndependent: the same commands (with duplicates) from pipelined clients,
// applied in different orders that respect the order of conflicting commands, give
// byte-identical snapshots (data and sessions), the same reply for every command, and the
// state of the simple model.
func TestPropertyOrderIndependent(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		hist := genHistory(t)
		rng := rand.New(rand.NewPCG(rapid.Uint64().Draw(t, "seed"), 3))
		want := model(hist)
		var firstSnap []byte
		var firstReplies []protocol.Reply
		for k := 0; k < 4; k++ {
			order := reorder(hist, rng)
			if k == 0 {
				order = order[:0]
				for i := range hist {
					order = append(order, i)
				}
			}
			s := New()
			replies := make([]protocol.Reply, len(hist))
			for _, i := range order {
				replies[i] = s.Apply(&hist[i])
			}
			if diff := cmp.Diff(want, dump(s)); diff != "" {
				t.Fatalf("order %v: state differs from the model (-want +got):\n%s", order, diff)
			}
			snap := s.Snapshot()
			if k == 0 {
				firstSnap, firstReplies = snap, replies
				continue
			}
			if !bytes.Equal(snap, firstSnap) {
				t.Fatalf("order %v: snapshot differs from the in-order one", order)
			}
			for i := range replies {
				a, b := firstReplies[i], replies[i]
				if a.Result != b.Result || !bytes.Equal(a.Value, b.Value) {
					t.Fatalf("order %v: command %d (%v %d.%d) replied %v %q, in order %v %q", order, i, hist[i].Op, hist[i].ClientID, hist[i].Seq, b.Result, b.Value, a.Result, a.Value)
				}
			}
		}
	})
}

func TestSnapshotRoundTrip(t *testing.T) {
	s := New()
	cmds := []protocol.Command{
		put(1, 1, "b", "2"), put(1, 3, "a", "1"), cas(2, 1, "b", "2", "3"), cas(2, 2, "b", "2", "4"),
		put(3, 1, "empty", ""), get(4, 1, "zz"), put(0, 1, "anon", "x"),
	}
	for i := range cmds {
		s.Apply(&cmds[i])
	}
	snap := s.Snapshot()
	r := New()
	if err := r.Restore(snap); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(dump(s), dump(r)); diff != "" {
		t.Fatalf("restored data (-want +got):\n%s", diff)
	}
	if !bytes.Equal(r.Snapshot(), snap) {
		t.Fatal("snapshot of the restored store differs")
	}
	// Sessions survive: duplicates are still recognised after a restore.
	dupPut := put(1, 1, "b", "overwritten?")
	r.Apply(&dupPut)
	if v, _ := r.Get([]byte("b")); string(v) != "3" {
		t.Fatalf("duplicate applied after restore: b = %q", v)
	}
	dupCAS := cas(2, 2, "b", "2", "4")
	if rep := r.Apply(&dupCAS); rep.Result != protocol.ResultCASFailed || string(rep.Value) != "3" {
		t.Fatalf("cached CAS reply after restore: %v %q", rep.Result, rep.Value)
	}
	// Restore does not alias its input.
	for i := range snap {
		snap[i] = 0
	}
	if v, _ := r.Get([]byte("a")); string(v) != "1" {
		t.Fatalf("restored value aliases the input: %q", v)
	}
}

func TestSnapshotDeterministic(t *testing.T) {
	a, b := New(), New()
	cmds := []protocol.Command{put(1, 1, "x", "1"), put(2, 1, "y", "2"), put(3, 1, "z", "3")}
	for i := range cmds {
		a.Apply(&cmds[i])
	}
	for i := len(cmds) - 1; i >= 0; i-- {
		b.Apply(&cmds[i])
	}
	if !bytes.Equal(a.Snapshot(), b.Snapshot()) {
		t.Fatal("same state, different snapshot bytes")
	}
	if !bytes.Equal(New().Snapshot(), New().Snapshot()) {
		t.Fatal("empty snapshots differ")
	}
}

func TestRestoreRefusesCorruptInput(t *testing.T) {
	s := New()
	for i := range 20 {
		c := put(uint64(i%3+1), uint64(i/3+1), fmt.Sprintf("key%d", i), "value")
		s.Apply(&c)
	}
	good := s.Snapshot()
	resealed := func(b []byte) []byte { // fix the checksum so the structure checks are reached
		b = append([]byte(nil), b[:len(b)-4]...)
		return appendCRC(b)
	}
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "shorter"},
		{"bad magic", append([]byte("XKVS"), good[4:]...), "magic"},
		{"future version", resealed(append(append([]byte("PKVS"), 2), good[5:]...)), "version"},
		{"flipped bit", func() []byte { b := bytes.Clone(good); b[10] ^= 1; return b }(), "checksum"},
		{"truncated", good[:len(good)-5], "checksum"},
		{"trailing bytes", resealed(append(bytes.Clone(good[:len(good)-4]), 0, 0, 0, 0, 7)), "trailing"},
		{"huge key count", resealed(append([]byte("PKVS\x01"), 0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0, 0, 0)), "key count"},
		{"unsorted keys", resealed([]byte("PKVS\x01\x02\x01b\x00\x01a\x00\x00....")), "not after"},
		{"non-minimal varint", resealed([]byte("PKVS\x01\x80\x00\x00....")), "shortest"},
		{"client 0", resealed([]byte("PKVS\x01\x00\x01\x00\x00\x00\x00....")), "client ID"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := New()
			c := put(9, 1, "keep", "me")
			r.Apply(&c)
			err := r.Restore(tt.in)
			if err == nil || !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Restore = %v, want an ErrCorrupt", err)
			}
			if !bytes.Contains([]byte(err.Error()), []byte(tt.want)) {
				t.Fatalf("error %q does not mention %q", err, tt.want)
			}
			if v, ok := r.Get([]byte("keep")); !ok || string(v) != "me" {
				t.Fatal("a refused Restore changed the store")
			}
		})
	}
}

func appendCRC(b []byte) []byte {
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// FuzzRestore: no input panics; an accepted input is canonical (its snapshot is the input).
func FuzzRestore(f *testing.F) {
	s := New()
	f.Add(s.Snapshot())
	cmds := []protocol.Command{put(1, 1, "a", "x"), put(1, 3, "b", "y"), cas(2, 1, "a", "x", "z"), cas(2, 5, "a", "q", "z"), get(3, 1, "a")}
	for i := range cmds {
		s.Apply(&cmds[i])
		f.Add(s.Snapshot())
	}
	f.Add([]byte("PKVS\x01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s := New()
		if err := s.Restore(b); err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error does not wrap ErrCorrupt: %v", err)
			}
			return
		}
		if got := s.Snapshot(); !bytes.Equal(got, b) {
			t.Fatalf("accepted a non-canonical snapshot:\n in  %x\n out %x", b, got)
		}
		// The restored store works.
		c := put(1<<40, 1, "fuzz", "v")
		s.Apply(&c)
	})
}

func BenchmarkApply(b *testing.B) {
	val := bytes.Repeat([]byte("v"), 16)
	keys := make([][]byte, 1024)
	for i := range keys {
		keys[i] = []byte(fmt.Sprintf("key-%08d", i))
	}
	b.Run("op=put/value=16", func(b *testing.B) {
		s := New()
		b.ReportAllocs()
		b.SetBytes(16)
		for i := 0; b.Loop(); i++ {
			c := protocol.Command{ClientID: 1, Seq: uint64(i + 1), Op: protocol.OpPut, Key: keys[i&1023], Value: val}
			s.Apply(&c)
		}
	})
	b.Run("op=get/value=16", func(b *testing.B) {
		s := New()
		for i, k := range keys {
			c := protocol.Command{ClientID: 2, Seq: uint64(i + 1), Op: protocol.OpPut, Key: k, Value: val}
			s.Apply(&c)
		}
		b.ReportAllocs()
		b.SetBytes(16)
		for i := 0; b.Loop(); i++ {
			c := protocol.Command{ClientID: 1, Seq: uint64(i + 1), Op: protocol.OpGet, Key: keys[i&1023]}
			if r := s.Apply(&c); r.Result != protocol.ResultOK {
				b.Fatal(r.Result)
			}
		}
	})
	b.Run("op=cas/value=16", func(b *testing.B) {
		s := New()
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			c := protocol.Command{ClientID: 1, Seq: uint64(i + 1), Op: protocol.OpCAS, Key: keys[i&1023], Old: val, Value: val}
			s.Apply(&c)
		}
	})
}
