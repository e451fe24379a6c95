package epaxos

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/parliament-lab/parliament/protocol"
)

// memNet drives N engines in memory with no loss: one step = every replica proposes,
// runs its Ready cycle, and every message sent so far is delivered (one network hop per
// step, so several instances are in flight per replica, as in a pipelined deployment).
type memNet struct {
	engs     []*Engine
	inbox    [][]protocol.Message
	spare    [][]protocol.Message
	keys     [][][]byte // per replica: unique keys, cycled
	hot      []byte
	next     []int
	rng      *rand.Rand
	commits  int
	cmdBuf   []protocol.Command
	client   uint64
	cut      protocol.ReplicaID                // a replica cut off from the others (0: none)
	onCommit func(i int, in protocol.Instance) // optional: every instance emitted at replica index i
}

// benchKeys is the number of distinct keys each replica writes (cycled).
const benchKeys = 1 << 12

func newMemNet(tb testing.TB, n int, thrifty bool) *memNet {
	return newMemNetCfg(tb, n, func(c *Config) { c.Thrifty = thrifty })
}

func newMemNetCfg(tb testing.TB, n int, mutate func(*Config)) *memNet {
	ids := make([]protocol.ReplicaID, n)
	for i := range ids {
		ids[i] = protocol.ReplicaID(i + 1)
	}
	net := &memNet{inbox: make([][]protocol.Message, n), spare: make([][]protocol.Message, n),
		keys: make([][][]byte, n), next: make([]int, n), hot: []byte("hot"), rng: rand.New(rand.NewPCG(1, 2))}
	for i := range ids {
		cfg := DefaultConfig()
		cfg.ID, cfg.Replicas = ids[i], ids
		mutate(&cfg)
		e, err := New(cfg)
		if err != nil {
			tb.Fatal(err)
		}
		net.engs = append(net.engs, e)
		for k := 0; k < benchKeys; k++ {
			net.keys[i] = append(net.keys[i], []byte(fmt.Sprintf("r%d-key-%d", i, k)))
		}
	}
	return net
}

// propose submits perReplica commands at every replica; conflictPct of them write the
// one hot key, the others write a key of their own.
func (net *memNet) propose(perReplica, conflictPct int) {
	for i, e := range net.engs {
		net.cmdBuf = net.cmdBuf[:0]
		for k := 0; k < perReplica; k++ {
			net.client++
			key := net.hot
			if conflictPct < 100 && (conflictPct == 0 || net.rng.IntN(100) >= conflictPct) {
				key = net.keys[i][net.next[i]%len(net.keys[i])]
				net.next[i]++
			}
			net.cmdBuf = append(net.cmdBuf, protocol.Command{ClientID: net.client, Seq: 1, Op: protocol.OpPut, Key: key, Value: key})
		}
		e.Propose(net.cmdBuf)
	}
}

// step runs every replica's Ready cycle and delivers what was sent.
func (net *memNet) step() (sent int) {
	for i, e := range net.engs {
		rd := e.Ready()
		for _, m := range rd.Messages {
			if net.cut != 0 && (m.To == net.cut || m.From == net.cut) {
				continue
			}
			net.inbox[m.To-1] = append(net.inbox[m.To-1], m)
			sent++
		}
		for _, in := range rd.Committed {
			net.commits += len(in.Cmds)
			if net.onCommit != nil {
				net.onCommit(i, in)
			}
		}
		e.Advance(rd)
	}
	net.inbox, net.spare = net.spare, net.inbox
	for i, e := range net.engs {
		for _, m := range net.spare[i] {
			e.Step(m)
		}
		clear(net.spare[i])
		net.spare[i] = net.spare[i][:0]
	}
	return sent
}

// compact has every replica compact what it could execute and tick; it returns the
// largest number of instances a replica holds.
func (net *memNet) compact() (held int) {
	for i, e := range net.engs {
		if protocol.ReplicaID(i+1) == net.cut {
			continue
		}
		e.Compact(e.listOf(execFrontier(e)))
		e.Tick()
		held = max(held, e.Held())
	}
	return held
}

func (net *memNet) drain() {
	for net.step() > 0 {
	}
	net.step()
}

func (net *memNet) ratio() (fast, slow uint64) {
	for _, e := range net.engs {
		st := e.Stats()
		fast += st.FastPath
		slow += st.SlowPath
	}
	return fast, slow
}

// BenchmarkEngine measures the engine alone: N replicas in memory, one command per
// instance per replica per step (no batching), conflict% of the commands writing one hot
// key. Reports commands committed per second (each command counted once, although every
// replica commits it) by wall clock and per CPU-second, and the fraction of instances
// that took the fast path. The N engines share one goroutine: cmds/s is the whole
// cluster's work on one core. As in a long run of the runtime, every 64 steps each
// replica compacts what it could have executed and ticks (frontier reports), so memory
// stays bounded; "held" is the largest number of instances one replica held.
func BenchmarkEngine(b *testing.B) {
	benchEngine(b, 1)
}

// BenchmarkEngineBatched is the same with 64 commands per instance, as the runtime
// produces under load (conflict is per command, so most batches conflict when > 0%).
func BenchmarkEngineBatched(b *testing.B) {
	benchEngine(b, 64)
}

func benchEngine(b *testing.B, perReplica int) {
	for _, n := range []int{3, 5} {
		for _, conflict := range []int{0, 2, 25, 100} {
			b.Run(fmt.Sprintf("n=%d/conflict=%d", n, conflict), func(b *testing.B) {
				net := newMemNet(b, n, false)
				// Warm up: every key indexed at every replica, rows and maps grown,
				// so that the numbers are those of a long run.
				for s := 1; s <= benchKeys/perReplica+64; s++ {
					net.propose(perReplica, conflict)
					net.step()
					if s%64 == 0 {
						net.compact()
					}
				}
				net.drain()
				net.commits = 0
				for _, e := range net.engs {
					e.stats = protocol.Stats{}
				}
				b.ReportAllocs()
				b.ResetTimer()
				start, cpu0 := time.Now(), cpuTime()
				proposed, held := 0, 0
				for s := 1; proposed < b.N; s++ {
					net.propose(perReplica, conflict)
					proposed += perReplica * n
					net.step()
					if s%64 == 0 {
						held = max(held, net.compact())
					}
				}
				net.drain()
				elapsed, cpu := time.Since(start), cpuTime()-cpu0
				b.StopTimer()
				committed := net.commits / n
				if committed != proposed {
					b.Fatalf("committed %d of %d commands", committed, proposed)
				}
				fast, slow := net.ratio()
				b.ReportMetric(float64(committed)/elapsed.Seconds(), "cmds/s")
				if cpu > 0 {
					// Per CPU-second of the whole process (GC included): robust to a
					// loaded machine, where wall-clock cmds/s understates.
					b.ReportMetric(float64(committed)/cpu.Seconds(), "cmds/cpu-s")
				}
				b.ReportMetric(float64(fast)/float64(fast+slow), "fast-ratio")
				b.ReportMetric(float64(held), "held")
			})
		}
	}
}

// With no conflicts and no faults every instance commits on the fast path.
func TestNoConflictFastPathRatioIsOne(t *testing.T) {
	for _, n := range []int{3, 5, 7} {
		for _, thrifty := range []bool{false, true} {
			net := newMemNet(t, n, thrifty)
			for range 300 {
				net.propose(2, 0)
				net.step()
			}
			net.drain()
			fast, slow := net.ratio()
			if slow != 0 || fast == 0 || net.commits != 300*2*n*n {
				t.Fatalf("n=%d thrifty=%v: fast %d slow %d, %d commits of %d", n, thrifty, fast, slow, net.commits, 300*2*n*n)
			}
		}
	}
}
