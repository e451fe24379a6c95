package client_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/parliament-lab/parliament/client"
	"github.com/parliament-lab/parliament/config"
	"github.com/parliament-lab/parliament/protocol"
	"github.com/parliament-lab/parliament/replica"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// startCluster runs n replicas of proto in this process on free loopback ports.
func startCluster(t *testing.T, proto string, n int) (*config.Cluster, []*replica.Replica) {
	t.Helper()
	cl := config.Generate(proto, n, 1, "")
	cl.Tick = config.Duration(2 * time.Millisecond)
	for i := range cl.Replicas {
		cl.Replicas[i].Address = freeAddr(t)
	}
	if err := cl.Validate(); err != nil {
		t.Fatal(err)
	}
	var rs []*replica.Replica
	for _, id := range cl.IDs() {
		r, err := replica.Start(replica.Options{Cluster: cl, ID: id})
		if err != nil {
			t.Fatal(err)
		}
		rs = append(rs, r)
		t.Cleanup(r.Stop)
	}
	return cl, rs
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

func newClient(t *testing.T, opts client.Options) *client.Client {
	t.Helper()
	c, err := client.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestPutGetCAS(t *testing.T) {
	for _, proto := range []string{config.MultiPaxos, config.EPaxos} {
		t.Run(proto, func(t *testing.T) {
			cl, _ := startCluster(t, proto, 3)
			for _, id := range cl.IDs() {
				c := newClient(t, client.Options{Cluster: cl, Replica: id})
				if c.Replica() != id {
					t.Fatalf("connected to %d, want %d", c.Replica(), id)
				}
				k := []byte(fmt.Sprintf("key-%d", id))
				if _, found, err := c.Get(ctx(t), k); err != nil || found {
					t.Fatalf("get before put: found=%v err=%v", found, err)
				}
				if err := c.Put(ctx(t), k, []byte("a")); err != nil {
					t.Fatal(err)
				}
				if v, found, err := c.Get(ctx(t), k); err != nil || !found || string(v) != "a" {
					t.Fatalf("get = %q %v %v, want a", v, found, err)
				}
				if ok, cur, err := c.CAS(ctx(t), k, []byte("x"), []byte("b")); err != nil || ok || string(cur) != "a" {
					t.Fatalf("cas with wrong old = %v %q %v, want false a", ok, cur, err)
				}
				if ok, _, err := c.CAS(ctx(t), k, []byte("a"), []byte("b")); err != nil || !ok {
					t.Fatalf("cas = %v %v, want true", ok, err)
				}
				if v, _, _ := c.Get(ctx(t), k); string(v) != "b" {
					t.Fatalf("after cas get = %q, want b", v)
				}
			}
			// Every write is visible from every replica.
			for _, id := range cl.IDs() {
				c := newClient(t, client.Options{Cluster: cl, Replica: id})
				for _, w := range cl.IDs() {
					if v, _, err := c.Get(ctx(t), []byte(fmt.Sprintf("key-%d", w))); err != nil || string(v) != "b" {
						t.Fatalf("get key-%d at %d = %q %v", w, id, v, err)
					}
				}
			}
		})
	}
}

func TestPipelined(t *testing.T) {
	cl, _ := startCluster(t, config.MultiPaxos, 3)
	c := newClient(t, client.Options{Cluster: cl, MaxOutstanding: 256})
	const n = 5000
	var wg sync.WaitGroup
	var bad atomic.Int64
	wg.Add(n)
	for i := 0; i < n; i++ {
		cmd := protocol.Command{Op: protocol.OpPut, Key: []byte(fmt.Sprintf("k%d", i%100)), Value: []byte(fmt.Sprintf("%d", i))}
		c.Submit(cmd, func(rep protocol.Reply, err error) {
			if err != nil || rep.Result != protocol.ResultOK {
				bad.Add(1)
			}
			wg.Done()
		})
	}
	wg.Wait()
	if bad.Load() != 0 {
		t.Fatalf("%d of %d pipelined puts failed", bad.Load(), n)
	}
	// Pipelined writes from one client to one key are applied in submission order by
	// Multi-Paxos (one log), so the last value wins.
	for k := 0; k < 100; k++ {
		v, _, err := c.Get(ctx(t), []byte(fmt.Sprintf("k%d", k)))
		if err != nil || string(v) != fmt.Sprintf("%d", n-100+k) {
			t.Fatalf("k%d = %q %v, want %d", k, v, err, n-100+k)
		}
	}
}

func TestFailover(t *testing.T) {
	cl, rs := startCluster(t, config.MultiPaxos, 3)
	c := newClient(t, client.Options{Cluster: cl, Replica: 2, Timeout: 200 * time.Millisecond})
	if err := c.Put(ctx(t), []byte("x"), []byte("1")); err != nil {
		t.Fatal(err)
	}
	rs[1].Stop() // the replica the client talks to
	if err := c.Put(ctx(t), []byte("x"), []byte("2")); err != nil {
		t.Fatalf("put after the replica stopped: %v", err)
	}
	if got := c.Replica(); got == 2 {
		t.Fatalf("still connected to the stopped replica")
	}
	if v, _, err := c.Get(ctx(t), []byte("x")); err != nil || string(v) != "2" {
		t.Fatalf("get = %q %v", v, err)
	}
}

func TestWrongCluster(t *testing.T) {
	cl, _ := startCluster(t, config.MultiPaxos, 1)
	_, err := client.New(client.Options{Addresses: cl.Addresses(), ClusterID: cl.ClusterID + 1})
	if err == nil || !strings.Contains(err.Error(), "cluster ID mismatch") {
		t.Fatalf("err = %v, want a cluster ID mismatch", err)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("error is not one line: %q", err)
	}
}

func TestUnreachable(t *testing.T) {
	addrs := map[protocol.ReplicaID]string{1: freeAddr(t), 2: freeAddr(t)}
	start := time.Now()
	_, err := client.New(client.Options{Addresses: addrs, ClusterID: 7})
	if !errors.Is(err, client.ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
	if time.Since(start) > 3*time.Second {
		t.Errorf("took %v to give up", time.Since(start))
	}
	_, err = client.New(client.Options{Addresses: addrs, ClusterID: 7, Replica: 2})
	if !errors.Is(err, client.ErrUnavailable) || !strings.Contains(err.Error(), "replica 2") {
		t.Fatalf("err = %v, want replica 2 unavailable", err)
	}
	if _, err := client.New(client.Options{Addresses: addrs, ClusterID: 7, Replica: 9}); err == nil {
		t.Fatal("unknown replica accepted")
	}
}

func TestCloseFailsOutstanding(t *testing.T) {
	cl, rs := startCluster(t, config.MultiPaxos, 3)
	c, err := client.New(client.Options{Cluster: cl, Replica: 1})
	if err != nil {
		t.Fatal(err)
	}
	// Without a majority nothing commits: the command stays outstanding.
	rs[1].Stop()
	rs[2].Stop()
	got := make(chan error, 1)
	c.Submit(protocol.Command{Op: protocol.OpPut, Key: []byte("k")}, func(_ protocol.Reply, err error) { got <- err })
	c.Close()
	select {
	case err := <-got:
		if !errors.Is(err, client.ErrClosed) {
			t.Fatalf("err = %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("outstanding command not failed by Close")
	}
	c.Close()
	c.Submit(protocol.Command{Op: protocol.OpGet}, func(_ protocol.Reply, err error) { got <- err })
	if err := <-got; !errors.Is(err, client.ErrClosed) {
		t.Fatalf("submit after close: %v", err)
	}
}

func TestContextDeadline(t *testing.T) {
	cl, rs := startCluster(t, config.MultiPaxos, 3)
	c := newClient(t, client.Options{Cluster: cl, Replica: 1, Timeout: 50 * time.Millisecond})
	rs[1].Stop()
	rs[2].Stop()
	cx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err := c.Put(cx, []byte("k"), []byte("v"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
}
