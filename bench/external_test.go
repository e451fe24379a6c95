package bench

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/parliament-lab/parliament/config"
	"github.com/parliament-lab/parliament/protocol"
	"github.com/parliament-lab/parliament/replica"
	"github.com/parliament-lab/parliament/workloads"
)

// TestRunExternal benchmarks a cluster reached only through its cluster file and TCP
// (package client), as `parliament bench --config` does.
func TestRunExternal(t *testing.T) {
	addrs, err := freeAddrs(3)
	if err != nil {
		t.Fatal(err)
	}
	f := false
	cl := &config.Cluster{ClusterID: 99, Protocol: "multipaxos", Durable: &f, DataDir: t.TempDir()}
	for i, a := range addrs {
		cl.Replicas = append(cl.Replicas, config.Replica{ID: protocol.ReplicaID(i + 1), Address: a, Site: []string{"CA", "VA", "IE"}[i]})
	}
	cl.SetDefaults()
	b, err := cl.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "cluster.yaml")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, rc := range cl.Replicas {
		r, err := replica.Start(replica.Options{Cluster: cl, ID: rc.ID})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Stop()
	}
	m, _ := workloads.ResolveWAN(workloads.WANAWS5)
	cfgs := []Config{{Protocol: "epaxos", Replicas: 5, WAN: "aws-5site", Matrix: m, Clients: 2, Outstanding: 2,
		Duration: time.Second, Warmup: 300 * time.Millisecond, Seed: 3, Experiment: ExpLatency}}
	file, err := RunExternal(context.Background(), Stamp(nil, 3, false, "custom"), path, cfgs, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(file.Runs) != 1 {
		t.Fatalf("runs %d", len(file.Runs))
	}
	r := file.Runs[0]
	if r.Protocol != "multipaxos" || r.Replicas != 3 || r.ThroughputOps <= 0 || len(r.Sites) != 3 {
		t.Fatalf("run %+v", r)
	}
	for _, s := range r.Sites {
		if s.Ops == 0 || s.Commit.P50 <= 0 || s.Optimum <= 0 {
			t.Errorf("site %+v", s)
		}
	}
}
