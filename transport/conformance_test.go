package transport

import (
	"fmt"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/parliament-lab/parliament/protocol"
)

// One conformance suite for every Transport (as hashicorp/raft runs one suite against its
// in-memory and TCP transports): whatever the runtime relies on must hold for all.

type factory func(t *testing.T, n int) []Transport

func factories() map[string]factory {
	tcp := func(mutate func(*Config)) factory {
		return func(t *testing.T, n int) []Transport {
			trs := tcpCluster(t, n, func(c *Config) {
				c.QueueLen = 1 << 17
				if mutate != nil {
					mutate(c)
				}
			})
			out := make([]Transport, n)
			for i, tr := range trs {
				out[i] = tr
			}
			return out
		}
	}
	return map[string]factory{
		"mem": func(t *testing.T, n int) []Transport {
			net := NewMemNetwork()
			net.QueueLen = 1 << 17
			out := make([]Transport, n)
			for i := range out {
				out[i] = net.Transport(protocol.ReplicaID(i + 1))
				t.Cleanup(func() { out[i].Close() })
			}
			return out
		},
		"tcp":        tcp(nil),
		"tcp-s2":     tcp(func(c *Config) { c.Compress = true }),
		"tcp-secret": tcp(func(c *Config) { c.Secret = []byte("s3cret") }),
	}
}

func TestConformance(t *testing.T) {
	for name, f := range factories() {
		t.Run(name, func(t *testing.T) {
			t.Run("SendRecv", func(t *testing.T) { testSendRecv(t, f) })
			t.Run("Self", func(t *testing.T) { testSelf(t, f) })
			t.Run("OrderPerLink", func(t *testing.T) { testOrderPerLink(t, f) })
			t.Run("ManyMessages", func(t *testing.T) { testManyMessages(t, f) })
			t.Run("SenderMayReuseMemory", func(t *testing.T) { testSenderReuse(t, f) })
			t.Run("UnknownDestination", func(t *testing.T) { testUnknownDestination(t, f) })
			t.Run("Close", func(t *testing.T) { testClose(t, f) })
		})
	}
}

// sample is a message using every field, so the codec and the copies are exercised.
func sample(from, to protocol.ReplicaID, seq uint64) protocol.Message {
	return protocol.Message{
		Type: protocol.MsgPreAccept, From: from, To: to,
		Ballot: protocol.Ballot{Round: 3, Replica: from}, VBallot: protocol.Ballot{Round: 2, Replica: to},
		Inst: protocol.InstanceID{Replica: from, Num: seq}, OK: true, Status: protocol.StatusAccepted,
		Seq: seq, Index: 42,
		Deps: []protocol.InstanceID{{Replica: 1, Num: 5}, {Replica: 2, Num: 9}},
		Cmds: []protocol.Command{{ClientID: 11, Seq: seq, Op: protocol.OpPut, Key: []byte("k"), Value: []byte(fmt.Sprint("v", seq))}},
		Insts: []protocol.Instance{{
			ID: protocol.InstanceID{Replica: 2, Num: 1}, Status: protocol.StatusCommitted, Seq: 4,
			Deps: []protocol.InstanceID{{Replica: 3, Num: 2}},
			Cmds: []protocol.Command{{ClientID: 1, Seq: 1, Op: protocol.OpCAS, Key: []byte("x"), Value: []byte("new"), Old: []byte("old")}},
		}},
		Data: []byte("snapshot bytes"),
	}
}

func testSendRecv(t *testing.T, f factory) {
	trs := f(t, 2)
	m := sample(1, 2, 1)
	trs[0].Send(m)
	got := recvN(t, trs[1], 1)
	if d := cmp.Diff(m, got[0]); d != "" {
		t.Fatalf("1->2 message differs (-sent +got):\n%s", d)
	}
	// The other direction (on TCP: the same connection, dialed by 1).
	back := sample(2, 1, 2)
	trs[1].Send(back)
	got = recvN(t, trs[0], 1)
	if d := cmp.Diff(back, got[0]); d != "" {
		t.Fatalf("2->1 message differs (-sent +got):\n%s", d)
	}
}

func testSelf(t *testing.T, f factory) {
	trs := f(t, 2)
	m := sample(1, 1, 1)
	trs[0].Send(m)
	got := recvN(t, trs[0], 1)
	if d := cmp.Diff(m, got[0]); d != "" {
		t.Fatalf("self message differs (-sent +got):\n%s", d)
	}
}

func testOrderPerLink(t *testing.T, f factory) {
	trs := f(t, 3)
	const n = 2000
	// 1 and 3 both send to 2 (on TCP: a dialed and an accepted connection).
	for i := uint64(1); i <= n; i++ {
		trs[0].Send(protocol.Message{Type: protocol.MsgAccept, From: 1, To: 2, Seq: i})
		trs[2].Send(protocol.Message{Type: protocol.MsgAccept, From: 3, To: 2, Seq: i})
	}
	got := recvN(t, trs[1], 2*n)
	next := map[protocol.ReplicaID]uint64{1: 1, 3: 1}
	for _, m := range got {
		if m.Seq != next[m.From] {
			t.Fatalf("from %d: got Seq %d, want %d (reordered or lost)", m.From, m.Seq, next[m.From])
		}
		next[m.From]++
	}
}

func testManyMessages(t *testing.T, f factory) {
	trs := f(t, 3)
	const n = 5000
	var wg sync.WaitGroup
	// Every replica sends to every replica (itself included), concurrently.
	for i, tr := range trs {
		from := protocol.ReplicaID(i + 1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for s := uint64(1); s <= n; s++ {
				for to := protocol.ReplicaID(1); to <= 3; to++ {
					tr.Send(protocol.Message{Type: protocol.MsgAccept, From: from, To: to, Seq: s, Data: []byte("payload")})
				}
			}
		}()
	}
	var rwg sync.WaitGroup
	errs := make(chan error, 3)
	for i, tr := range trs {
		rwg.Add(1)
		go func() {
			defer rwg.Done()
			next := map[protocol.ReplicaID]uint64{1: 1, 2: 1, 3: 1}
			total := 0
			for total < 3*n {
				b, ok := <-tr.Recv()
				if !ok {
					errs <- fmt.Errorf("replica %d: Recv closed after %d", i+1, total)
					return
				}
				for _, m := range b {
					if m.Seq != next[m.From] || m.To != protocol.ReplicaID(i+1) || string(m.Data) != "payload" {
						errs <- fmt.Errorf("replica %d: from %d got Seq %d to %d, want Seq %d", i+1, m.From, m.Seq, m.To, next[m.From])
						return
					}
					next[m.From]++
				}
				total += len(b)
			}
		}()
	}
	wg.Wait()
	done := make(chan struct{})
	go func() { rwg.Wait(); close(done) }()
	select {
	case <-done:
	case err := <-errs:
		t.Fatal(err)
	case <-ctxTimeout(t).Done():
		t.Fatal("timed out waiting for 3x3x5000 messages")
	}
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
}

func testSenderReuse(t *testing.T, f factory) {
	trs := f(t, 2)
	m := sample(1, 2, 1)
	want := sample(1, 2, 1)
	trs[0].Send(m)
	// The engine contract lets the sender reuse its memory after Advance: scribble on it.
	m.Cmds[0].Value[0] = 'X'
	m.Deps[0].Num = 999
	m.Data[0] = 'X'
	m.Insts[0].Cmds[0].Key[0] = 'X'
	got := recvN(t, trs[1], 1)
	if d := cmp.Diff(want, got[0]); d != "" {
		t.Fatalf("receiver saw the sender's later writes (-want +got):\n%s", d)
	}
}

func testUnknownDestination(t *testing.T, f factory) {
	trs := f(t, 2)
	trs[0].Send(sample(1, 9, 1)) // nobody: dropped, no panic, nothing else disturbed
	trs[0].Send(sample(1, 2, 2))
	got := recvN(t, trs[1], 1)
	if got[0].Seq != 2 {
		t.Fatalf("got Seq %d, want 2", got[0].Seq)
	}
}

func testClose(t *testing.T, f factory) {
	trs := f(t, 2)
	trs[0].Send(sample(1, 2, 1))
	recvN(t, trs[1], 1)
	if err := trs[1].Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := trs[1].Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	for range trs[1].Recv() { // closed: the range ends
	}
	trs[1].Send(sample(2, 1, 1)) // after Close: no panic, no block
	for i := uint64(0); i < 100; i++ {
		trs[0].Send(sample(1, 2, i)) // to a closed peer: never blocks
	}
	trs[0].Close()
}
