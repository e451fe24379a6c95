package replica

import (
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/parliament-lab/parliament/config"
	"github.com/parliament-lab/parliament/internal/testnet"
	"github.com/parliament-lab/parliament/protocol"
	"github.com/parliament-lab/parliament/transport"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testCluster returns a validated cluster file for n replicas of proto, with a short tick
// so that elections are quick.
func testCluster(t testing.TB, proto string, n int) *config.Cluster {
	t.Helper()
	cl := config.Generate(proto, n, 1, "")
	cl.Tick = config.Duration(2 * time.Millisecond)
	if err := cl.Validate(); err != nil {
		t.Fatal(err)
	}
	return cl
}

// freePorts rewrites the cluster's addresses to free loopback ports.
func freePorts(t testing.TB, cl *config.Cluster) {
	t.Helper()
	base := testnet.FreeBase(t, len(cl.Replicas))
	for i := range cl.Replicas {
		cl.Replicas[i].Address = "127.0.0.1:" + strconv.Itoa(base+i)
	}
}

type cluster struct {
	cl  *config.Cluster
	rs  []*Replica
	net *transport.MemNetwork
}

// startMem starts every replica of cl on an in-memory network.
func startMem(t testing.TB, cl *config.Cluster) *cluster {
	t.Helper()
	c := &cluster{cl: cl, net: transport.NewMemNetwork()}
	for _, id := range cl.IDs() {
		r, err := Start(Options{Cluster: cl, ID: id, Transport: c.net.Transport(id)})
		if err != nil {
			t.Fatal(err)
		}
		c.rs = append(c.rs, r)
	}
	t.Cleanup(c.stop)
	return c
}

// startTCP starts every replica of cl on real loopback TCP.
func startTCP(t testing.TB, cl *config.Cluster) *cluster {
	t.Helper()
	freePorts(t, cl)
	c := &cluster{cl: cl}
	for _, id := range cl.IDs() {
		r, err := Start(Options{Cluster: cl, ID: id})
		if err != nil {
			t.Fatal(err)
		}
		c.rs = append(c.rs, r)
	}
	t.Cleanup(c.stop)
	return c
}

func (c *cluster) stop() {
	for _, r := range c.rs {
		r.Stop()
	}
}

// waiter collects replies.
type waiter struct {
	mu   sync.Mutex
	got  map[uint64]protocol.Reply
	cond chan struct{}
}

func newWaiter() *waiter {
	return &waiter{got: map[uint64]protocol.Reply{}, cond: make(chan struct{}, 1)}
}

func (w *waiter) Reply(r protocol.Reply) {
	w.mu.Lock()
	w.got[r.Seq] = r
	w.mu.Unlock()
	select {
	case w.cond <- struct{}{}:
	default:
	}
}

func (w *waiter) take(seq uint64) (protocol.Reply, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	r, ok := w.got[seq]
	delete(w.got, seq)
	return r, ok
}

var nextClient atomic.Uint64

// do submits cmd at r and waits for a reply that is not a redirect, resubmitting (same
// client and seq) after a redirect or a timeout.
func do(t testing.TB, r *Replica, cmd protocol.Command) protocol.Reply {
	t.Helper()
	w := newWaiter()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		r.Submit([]protocol.Command{cmd}, w)
		timer := time.NewTimer(500 * time.Millisecond)
	wait:
		for {
			select {
			case <-w.cond:
				rep, ok := w.take(cmd.Seq)
				if !ok {
					continue
				}
				if rep.Result == protocol.ResultRedirect {
					timer.Stop()
					time.Sleep(5 * time.Millisecond) // no leader yet: retry shortly
					break wait
				}
				timer.Stop()
				return rep
			case <-timer.C:
				break wait
			}
		}
	}
	t.Fatalf("replica %d: no reply to %v %s within 10s", r.ID(), cmd.Op, cmd.Key)
	return protocol.Reply{}
}

func put(client, seq uint64, k, v string) protocol.Command {
	return protocol.Command{ClientID: client, Seq: seq, Op: protocol.OpPut, Key: []byte(k), Value: []byte(v)}
}

func get(client, seq uint64, k string) protocol.Command {
	return protocol.Command{ClientID: client, Seq: seq, Op: protocol.OpGet, Key: []byte(k)}
}

// checkReadWrite writes through every replica and reads every write back through every
// replica: the runtime glues engine, executor and store correctly whatever replica a
// client talks to.
func checkReadWrite(t *testing.T, c *cluster) {
	client := nextClient.Add(1)
	seq := uint64(0)
	for _, r := range c.rs {
		seq++
		k := "k" + strconv.Itoa(int(r.ID()))
		if rep := do(t, r, put(client, seq, k, "v"+k)); rep.Result != protocol.ResultOK {
			t.Fatalf("put at %d: %v", r.ID(), rep.Result)
		}
	}
	for _, r := range c.rs {
		for _, w := range c.rs {
			seq++
			k := "k" + strconv.Itoa(int(w.ID()))
			rep := do(t, r, get(client, seq, k))
			if rep.Result != protocol.ResultOK || string(rep.Value) != "v"+k {
				t.Fatalf("get %s at %d = %v %q, want ok %q", k, r.ID(), rep.Result, rep.Value, "v"+k)
			}
		}
	}
	seq++
	if rep := do(t, c.rs[0], get(client, seq, "absent")); rep.Result != protocol.ResultNotFound {
		t.Fatalf("get absent = %v, want not-found", rep.Result)
	}
}

func TestReadWriteMem(t *testing.T) {
	for _, tt := range []struct {
		proto string
		n     int
	}{{config.MultiPaxos, 3}, {config.MultiPaxos, 1}, {config.EPaxos, 3}, {config.EPaxos, 5}} {
		t.Run(fmt.Sprintf("%s/n=%d", tt.proto, tt.n), func(t *testing.T) {
			if _, ok := engines[tt.proto]; !ok {
				t.Skip("engine not built in")
			}
			checkReadWrite(t, startMem(t, testCluster(t, tt.proto, tt.n)))
		})
	}
}

// TestReadWriteTCP runs each protocol on loopback TCP, with and without s2 compression on
// the peer connections (cluster file `compress: true`).
func TestReadWriteTCP(t *testing.T) {
	for _, proto := range []string{config.MultiPaxos, config.EPaxos} {
		for _, compress := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/compress=%v", proto, compress), func(t *testing.T) {
				if _, ok := engines[proto]; !ok {
					t.Skip("engine not built in")
				}
				cl := testCluster(t, proto, 3)
				cl.Compress = compress
				c := startTCP(t, cl)
				for _, r := range c.rs {
					if r.Addr() != c.cl.Replicas[r.ID()-1].Address {
						t.Errorf("replica %d listens on %s, want %s", r.ID(), r.Addr(), c.cl.Replicas[r.ID()-1].Address)
					}
				}
				checkReadWrite(t, c)
			})
		}
	}
}
