package bench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/parliament-lab/parliament/bench/result"
	"github.com/parliament-lab/parliament/client"
	"github.com/parliament-lab/parliament/config"
	"github.com/parliament-lab/parliament/internal/testnet"
	"github.com/parliament-lab/parliament/protocol"
	"github.com/parliament-lab/parliament/replica"
	"github.com/parliament-lab/parliament/workloads"
)

// TestRunExternal benchmarks a cluster reached only through its cluster file and TCP
// (package client), as `parliament bench --config` does.
func TestRunExternal(t *testing.T) {
	path := startExternal(t, "multipaxos")
	m, _ := workloads.ResolveWAN(workloads.WANAWS5)
	// A retry timeout far above any command's latency on a loaded machine: no resend.
	r := runExternalOnce(t, path, Config{Protocol: "epaxos", Replicas: 5, WAN: "aws-5site", Matrix: m, Clients: 2, Outstanding: 2,
		Duration: time.Second, Warmup: 300 * time.Millisecond, Seed: 3, Experiment: ExpLatency, RetryTimeout: 10 * time.Second})
	if r.Protocol != "multipaxos" || r.Replicas != 3 || r.ThroughputOps <= 0 || len(r.Sites) != 3 {
		t.Fatalf("run %+v", r)
	}
	for _, s := range r.Sites {
		if s.Ops == 0 || s.Commit.P50 <= 0 || s.Optimum <= 0 {
			t.Errorf("site %+v", s)
		}
	}
	// Commands still in flight when the run ends are abandoned, not failed.
	if r.Errors != 0 {
		t.Errorf("closed loop: %d errors", r.Errors)
	}
	// The clients' counters: the cluster had its leader before the run, and every command
	// was answered within the timeout the run passed to the clients.
	if !r.External || r.RetryTimeoutS != 10 || r.Retries != 0 || r.Redirects != 0 {
		t.Errorf("external %v, retry timeout %vs, %d resends, %d redirects", r.External, r.RetryTimeoutS, r.Retries, r.Redirects)
	}
	// The leader the optimum assumes is no disturbance: the bench cannot see the
	// replicas' leader, so no warning may claim the run ended without it.
	if len(r.Warnings) != 0 {
		t.Errorf("steady external run warned: %q", r.Warnings)
	}
}

// TestRunExternalCountsClientResends: the clients' resends of an external run are the
// run's Retries (client.Stats), and what only the replicas know is marked not measured:
// "n/a" in the table, empty in results.csv.
func TestRunExternalCountsClientResends(t *testing.T) {
	path, reps := startExternalReplicas(t, "epaxos")
	// Two of the three replicas stop during the run: the survivor cannot commit without
	// a majority, so every command in flight then is resent after each timeout until the
	// run ends, within the window whenever the stop happens.
	stop := time.AfterFunc(300*time.Millisecond, func() {
		reps[1].Stop()
		reps[2].Stop()
	})
	defer stop.Stop()
	cfg := Config{Protocol: "epaxos", Clients: 1, Outstanding: 2, Duration: time.Second, Warmup: 200 * time.Millisecond,
		Seed: 8, Experiment: ExpThroughput, RetryTimeout: 50 * time.Millisecond}
	file, err := RunExternal(context.Background(), Stamp(nil, cfg.Seed, false, "custom"), path, []Config{cfg}, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := file.Runs[0]
	t.Logf("%d resends, %d redirects, %d errors, warnings %q", r.Retries, r.Redirects, r.Errors, r.Warnings)
	if !r.External || r.Retries == 0 || r.RetryTimeoutS != 0.05 {
		t.Fatalf("external %v, %d resends after %vs: the clients' resends are not counted", r.External, r.Retries, r.RetryTimeoutS)
	}
	if w := strings.Join(r.Warnings, ";"); !strings.Contains(w, "client resend(s) after 50ms") {
		t.Errorf("warnings %q lack the resends", w)
	}
	var table bytes.Buffer
	if err := WriteTable(&table, file); err != nil {
		t.Fatal(err)
	}
	// Throughput table: fast path, msgs/cmd, bytes/cmd, elections, stall max; the
	// disturbances: elections, recoveries, dropped, stall p99 and max, other CPUs.
	if n := countNA(table.String()); n != 11 || !strings.Contains(table.String(), "not measured on an external cluster") {
		t.Errorf("table has %d %q cells, want 11, and a note:\n%s", n, notMeasured, table.String())
	}
	if !strings.Contains(table.String(), fmt.Sprintf(" %d ", r.Retries)) {
		t.Errorf("table lacks the %d resends:\n%s", r.Retries, table.String())
	}
	var csv bytes.Buffer
	if err := result.WriteCSV(&csv, file); err != nil {
		t.Fatal(err)
	}
	row := strings.Split(strings.Split(csv.String(), "\n")[1], ",")
	for i, col := range result.CSVHeader {
		switch col {
		case "fast_path_ratio", "msgs_per_cmd", "bytes_per_cmd", "elections", "recoveries", "dropped_msgs",
			"host_stall_p99_ms", "host_stall_max_ms", "other_cpu":
			if row[i] != "" {
				t.Errorf("csv %s = %q, want empty (not measured)", col, row[i])
			}
		case "retries":
			if row[i] != fmt.Sprint(r.Retries) {
				t.Errorf("csv retries = %q, want %d", row[i], r.Retries)
			}
		case "external":
			if row[i] != "true" {
				t.Errorf("csv external = %q", row[i])
			}
		}
	}
}

// runExternalOnce runs cfg with RunExternal on the cluster of path and returns its one run.
func runExternalOnce(t *testing.T, path string, cfg Config) result.Run {
	t.Helper()
	file, err := RunExternal(context.Background(), Stamp(nil, cfg.Seed, false, "custom"), path, []Config{cfg}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(file.Runs) != 1 {
		t.Fatalf("runs %d", len(file.Runs))
	}
	return file.Runs[0]
}

// TestRunExternalSweepFreshClients runs one configuration twice on one cluster, as --repeat
// or a rerun does: the second run's clients must be new clients to the replicas, else
// their sequence numbers restart at 1 and the replicas' sessions drop their writes as
// duplicates.
func TestRunExternalSweepFreshClients(t *testing.T) {
	path, reps := startExternalReplicas(t, "epaxos")
	cfg := Config{Protocol: "epaxos", Replicas: 3, Clients: 2, Outstanding: 2,
		Duration: 400 * time.Millisecond, Warmup: 100 * time.Millisecond, Seed: 5, Experiment: ExpLatency}
	again := cfg
	again.Repeat = 1
	file, err := RunExternal(context.Background(), Stamp(nil, cfg.Seed, false, "custom"), path, []Config{cfg, again}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(file.Runs) != 2 || file.Runs[0].ThroughputOps <= 0 || file.Runs[1].ThroughputOps <= 0 {
		t.Fatalf("%d runs, want 2 with throughput", len(file.Runs))
	}
	for _, r := range reps {
		r.Stop()
	}
	// Every replica executed every command, so each holds a session for the readiness
	// client and for each of the 2 runs' 3 sites x 2 clients.
	const want = 1 + 2*3*2
	for _, r := range reps {
		if got := r.Store().Sessions(); got != want {
			t.Errorf("replica %d: %d client sessions, want %d (a run reused another run's client IDs)", r.ID(), got, want)
		}
	}
}

// startExternal starts a 3-replica cluster (sites CA, VA, IE; not durable) on loopback
// ports, stopped when the test ends, and returns the path of its cluster file.
func startExternal(t *testing.T, proto string) string {
	t.Helper()
	path, _ := startExternalReplicas(t, proto)
	return path
}

// startExternalReplicas is startExternal that also returns the replicas.
func startExternalReplicas(t *testing.T, proto string) (string, []*replica.Replica) {
	t.Helper()
	base := testnet.FreeBase(t, 3)
	f := false
	cl := &config.Cluster{ClusterID: 99, Protocol: proto, Durable: &f, DataDir: t.TempDir()}
	for i := range 3 {
		a := "127.0.0.1:" + strconv.Itoa(base+i)
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
	var reps []*replica.Replica
	for _, rc := range cl.Replicas {
		r, err := replica.Start(replica.Options{Cluster: cl, ID: rc.ID})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(r.Stop)
		reps = append(reps, r)
	}
	// Serve one command before the load starts, as a running cluster would: a Multi-Paxos
	// cluster elects its leader first, and a command lost meanwhile would stall its
	// client for the retry timeout.
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
	return path, reps
}
