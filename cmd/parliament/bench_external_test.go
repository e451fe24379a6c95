package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/parliament-lab/parliament/bench"
	"github.com/parliament-lab/parliament/bench/result"
	"github.com/parliament-lab/parliament/client"
	"github.com/parliament-lab/parliament/config"
	"github.com/parliament-lab/parliament/protocol"
	"github.com/parliament-lab/parliament/replica"
)

// startBenchCluster starts a 3-replica EPaxos cluster (sites CA, VA, IE) in this process on
// loopback ports, as an operator's cluster the bench reaches only through its file and
// TCP; it returns the file's path. The replicas stop when the test ends.
func startBenchCluster(t *testing.T) string {
	t.Helper()
	var lns []net.Listener
	for range 3 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, l)
	}
	f := false
	cl := &config.Cluster{ClusterID: 7, Protocol: config.EPaxos, Durable: &f, DataDir: t.TempDir()}
	for i, l := range lns {
		cl.Replicas = append(cl.Replicas, config.Replica{ID: protocol.ReplicaID(i + 1), Address: l.Addr().String(), Site: []string{"CA", "VA", "IE"}[i]})
		l.Close()
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
		t.Cleanup(r.Stop)
	}
	c, err := client.New(client.Options{Cluster: cl})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.Put(ctx, []byte("ready"), []byte("1")); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestBenchExternalSweep: `parliament bench --config FILE --rate R1,R2` runs an open-loop
// sweep against a running cluster and writes the results and the latency-vs-throughput
// chart, as an in-process sweep does.
func TestBenchExternalSweep(t *testing.T) {
	path := startBenchCluster(t)
	dir := filepath.Join(t.TempDir(), "out")
	var stdout, stderr bytes.Buffer
	code := run([]string{"bench", "--config", path, "--rate", "150,300", "--clients", "1", "--outstanding", "8",
		"--duration", "1s", "--warmup", "200ms", "--seed", "4", "--out", dir}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	f, err := result.Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	if f.Meta.Emulation != "external" || len(f.Runs) != 2 {
		t.Fatalf("meta %+v, %d runs", f.Meta, len(f.Runs))
	}
	for i, want := range []float64{150, 300} {
		r := f.Runs[i]
		t.Logf("%s: offered %.0f/s, achieved %.1f/s, commit p50 %.2fms, errors %d", r.Name, r.RateOps, r.ThroughputOps, r.Commit.P50, r.Errors)
		if r.Experiment != bench.ExpSweep || r.Protocol != "epaxos" || r.RateOps != want || len(r.Sites) != 3 {
			t.Errorf("run %d: %s %s rate %v, %d sites", i, r.Experiment, r.Protocol, r.RateOps, len(r.Sites))
		}
		if r.ThroughputOps < 0.5*want || r.ThroughputOps > 1.3*want || r.Commit.P50 <= 0 || r.Errors != 0 {
			t.Errorf("run %d: achieved %.1f/s of %.0f, commit p50 %v, errors %d", i, r.ThroughputOps, want, r.Commit.P50, r.Errors)
		}
	}
	csv := mustRead(t, filepath.Join(dir, result.CSVName))
	if !strings.Contains(csv, ",150,") || !strings.Contains(csv, ",300,") {
		t.Errorf("results.csv lacks the rates:\n%s", csv)
	}
	if _, err := os.Stat(filepath.Join(dir, "latency-tput.png")); err != nil {
		t.Errorf("no latency-vs-throughput chart: %v\n%s", err, stdout.String())
	}
}

// TestBenchExternalRefusesFail: the bench cannot crash a replica it did not start.
func TestBenchExternalRefusesFail(t *testing.T) {
	path := startBenchCluster(t)
	var stdout, stderr bytes.Buffer
	code := run([]string{"bench", "--config", path, "--fail", "CA@500ms", "--duration", "1s", "--out", t.TempDir()}, &stdout, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "--fail is not supported with --config") {
		t.Errorf("exit %d: %s", code, stderr.String())
	}
}
