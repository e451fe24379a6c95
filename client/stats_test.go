package client_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/parliament-lab/parliament/client"
	"github.com/parliament-lab/parliament/config"
	"github.com/parliament-lab/parliament/protocol"
	"github.com/parliament-lab/parliament/replica"
)

// waitStats polls c.Stats until ok accepts them, failing the test after 10s.
func waitStats(t *testing.T, c *client.Client, what string, ok func(client.Stats) bool) client.Stats {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := c.Stats()
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 10s: stats %+v", what, st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// follower waits until every replica of rs follows one leader and returns a replica
// other than the leader.
func follower(t *testing.T, rs []*replica.Replica) *replica.Replica {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		leader := rs[0].Leader()
		agreed := leader != 0
		var f *replica.Replica
		for _, r := range rs {
			agreed = agreed && r.Leader() == leader
			if r.ID() != leader {
				f = r
			}
		}
		if agreed {
			return f
		}
		if time.Now().After(deadline) {
			t.Fatal("the replicas agree on no leader")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestStatsHealthy: a client whose every command is answered in time by a replica that
// serves it resends nothing and sees no redirect.
func TestStatsHealthy(t *testing.T) {
	for _, proto := range []string{config.MultiPaxos, config.EPaxos} {
		t.Run(proto, func(t *testing.T) {
			cl, rs := startCluster(t, proto, 3)
			// One command first, from another client, as a running cluster has served
			// some: a Multi-Paxos cluster elects its leader meanwhile, and a follower
			// redirects what it gets before it knows one.
			warm := newClient(t, client.Options{Cluster: cl})
			if err := warm.Put(ctx(t), []byte("ready"), []byte("1")); err != nil {
				t.Fatal(err)
			}
			at := protocol.ReplicaID(2)
			if proto == config.MultiPaxos {
				at = follower(t, rs).ID() // forwards to the leader it knows
			}
			// A timeout far above any healthy command's latency, so that a loaded machine
			// (race detector, parallel packages) does not make a slow reply look lost.
			c := newClient(t, client.Options{Cluster: cl, Replica: at, Timeout: 10 * time.Second, MaxOutstanding: 64})
			if st := c.Stats(); st != (client.Stats{}) {
				t.Fatalf("new client: %+v", st)
			}
			const n = 500
			var wg sync.WaitGroup
			wg.Add(n)
			for i := range n {
				cmd := protocol.Command{Op: protocol.OpPut, Key: []byte(fmt.Sprintf("k%d", i%10)), Value: []byte("v")}
				c.Submit(cmd, func(rep protocol.Reply, err error) {
					if err != nil || rep.Result != protocol.ResultOK {
						t.Errorf("put: %v %v", rep.Result, err)
					}
					wg.Done()
				})
			}
			wg.Wait()
			if st := c.Stats(); st != (client.Stats{}) {
				t.Fatalf("healthy run: %+v, want no resend and no redirect", st)
			}
		})
	}
}

// TestStatsResends: an EPaxos replica cut off from its majority never answers, so the
// client resends the command after each timeout; EPaxos never redirects a live replica.
func TestStatsResends(t *testing.T) {
	cl, rs := startCluster(t, config.EPaxos, 3)
	c := newClient(t, client.Options{Cluster: cl, Replica: 1, Timeout: 50 * time.Millisecond})
	rs[1].Stop()
	rs[2].Stop()
	done := make(chan error, 1)
	c.Submit(protocol.Command{Op: protocol.OpPut, Key: []byte("k"), Value: []byte("v")}, func(_ protocol.Reply, err error) { done <- err })
	st := waitStats(t, c, "resend", func(s client.Stats) bool { return s.Resends > 0 })
	c.Close()
	if err := <-done; !errors.Is(err, client.ErrClosed) {
		t.Fatalf("command without a majority: %v, want ErrClosed", err)
	}
	if st.Redirects != 0 {
		t.Errorf("redirects %d from a live EPaxos replica", st.Redirects)
	}
}

// TestStatsRedirects: a Multi-Paxos follower whose leader is gone campaigns, cannot win
// without a majority, and answers commands with "no leader known"; the client counts each
// such redirect and keeps trying.
func TestStatsRedirects(t *testing.T) {
	cl, rs := startCluster(t, config.MultiPaxos, 3)
	warm := newClient(t, client.Options{Cluster: cl})
	if err := warm.Put(ctx(t), []byte("ready"), []byte("1")); err != nil {
		t.Fatal(err)
	}
	warm.Close()
	// Keep a follower: a leader that lost its majority keeps leading (and stays silent).
	survivor := follower(t, rs)
	for _, r := range rs {
		if r != survivor {
			r.Stop()
		}
	}
	c := newClient(t, client.Options{Cluster: cl, Replica: survivor.ID(), Timeout: 100 * time.Millisecond})
	done := make(chan error, 1)
	c.Submit(protocol.Command{Op: protocol.OpPut, Key: []byte("k"), Value: []byte("v")}, func(_ protocol.Reply, err error) { done <- err })
	waitStats(t, c, "redirect", func(s client.Stats) bool { return s.Redirects > 0 })
	c.Close()
	if err := <-done; !errors.Is(err, client.ErrClosed) {
		t.Fatalf("command without a leader: %v, want ErrClosed", err)
	}
}
