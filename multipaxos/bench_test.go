package multipaxos

import (
	"fmt"
	"testing"
	"time"

	"github.com/parliament-lab/parliament/protocol"
)

// benchCluster passes messages between three engines directly: no I/O, no codec, no
// goroutines. It measures the engine alone.
type benchCluster struct {
	engines   []*Engine
	inbox     []protocol.Message
	next      []protocol.Message
	committed int // commands committed at the leader
	leader    int
}

func newBenchCluster(b *testing.B) *benchCluster {
	c := &benchCluster{}
	for _, id := range ids(3) {
		cfg := DefaultConfig()
		cfg.ID, cfg.Replicas, cfg.Seed = id, ids(3), 1
		e, err := New(cfg)
		if err != nil {
			b.Fatal(err)
		}
		c.engines = append(c.engines, e)
	}
	c.engines[0].campaign()
	for range 10 {
		c.round()
	}
	if c.engines[0].Role() != RoleLeader {
		b.Fatal("no leader")
	}
	return c
}

// compactEvery is how many slots an engine commits between two compactions, as a runtime
// that snapshots periodically would (the engine keeps every slot no Compact covers).
const compactEvery = 4096

// round collects every engine's Ready (persisting is free here), then delivers the
// messages they produced.
func (c *benchCluster) round() bool {
	work := false
	for i, e := range c.engines {
		if ci := e.CommitIndex(); ci-e.snapIndex >= compactEvery {
			e.Compact([]protocol.InstanceID{{Num: ci}})
		}
		rd := e.Ready()
		if rd.IsEmpty() {
			continue
		}
		work = true
		c.next = append(c.next, rd.Messages...)
		if i == c.leader {
			for j := range rd.Committed {
				c.committed += len(rd.Committed[j].Cmds)
			}
		}
		e.Advance(rd)
	}
	c.inbox, c.next = c.next, c.inbox[:0]
	for j := range c.inbox {
		m := &c.inbox[j]
		c.engines[m.To-1].Step(*m)
	}
	clear(c.inbox)
	return work || len(c.inbox) > 0
}

// benchEngine proposes batches of `batch` commands at the leader. With fresh, every Propose
// gets a newly built slice, as the runtime's decoder produces one per client read (that copy
// is then part of the measurement); without, the same slice is proposed again and again,
// which ProposeTakesOwnership lets the engine keep without copying: the engine's own cost.
func benchEngine(b *testing.B, batch int, fresh bool) {
	c := newBenchCluster(b)
	cmds := make([]protocol.Command, batch)
	for i := range cmds {
		cmds[i] = protocol.Command{ClientID: 1, Seq: uint64(i + 1), Op: protocol.OpPut,
			Key: []byte(fmt.Sprintf("key%08d", i)), Value: []byte("0123456789abcdef")}
	}
	leader := c.engines[c.leader]
	start := c.committed
	b.ReportAllocs()
	b.ResetTimer()
	t0 := time.Now()
	for range b.N {
		if fresh {
			leader.Propose(append([]protocol.Command(nil), cmds...))
		} else {
			leader.Propose(cmds)
		}
		c.round() // one exchange per batch: up to Window slots stay in flight
	}
	for c.round() {
	}
	elapsed := time.Since(t0)
	b.StopTimer()
	n := c.committed - start
	if n != b.N*batch {
		b.Fatalf("committed %d commands, want %d", n, b.N*batch)
	}
	b.ReportMetric(float64(n)/elapsed.Seconds(), "cmds/s")
}

// BenchmarkEngine: the Multi-Paxos engine alone, three replicas in memory, one batch of
// client commands per slot. Profile with -cpuprofile.
func BenchmarkEngine(b *testing.B) {
	for _, batch := range []int{1, 64, 1024} {
		for _, fresh := range []bool{false, true} {
			b.Run(fmt.Sprintf("n=3/batch=%d/fresh=%v", batch, fresh), func(b *testing.B) { benchEngine(b, batch, fresh) })
		}
	}
}
