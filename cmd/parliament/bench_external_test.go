package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/parliament-lab/parliament/bench"
	"github.com/parliament-lab/parliament/bench/result"
	"github.com/parliament-lab/parliament/config"
)

// TestBenchExternalSweep: `parliament bench --config FILE --rate R1,R2` runs an open-loop
// sweep against a cluster of replica processes and writes the results and the
// latency-vs-throughput chart, as an in-process sweep does.
func TestBenchExternalSweep(t *testing.T) {
	c := startE2E(t, config.EPaxos, 3)
	c.waitReady()
	dir := filepath.Join(t.TempDir(), "out")
	var stdout, stderr bytes.Buffer
	code := run([]string{"bench", "--config", c.cfg, "--rate", "150,300", "--clients", "1", "--outstanding", "8",
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
		if r.Experiment != bench.ExpSweep || r.Protocol != config.EPaxos || r.RateOps != want || len(r.Sites) != len(c.cl.Replicas) {
			t.Errorf("run %d: %s %s rate %v, %d sites", i, r.Experiment, r.Protocol, r.RateOps, len(r.Sites))
		}
		// The seeded arrivals fix how many fall in the window; a loaded machine can only
		// lose those not answered by the end.
		if r.ThroughputOps < 0.5*want || r.ThroughputOps > 1.3*want || r.Commit.P50 <= 0 || r.Errors != 0 {
			t.Errorf("run %d: achieved %.1f/s of %.0f, commit p50 %v, errors %d", i, r.ThroughputOps, want, r.Commit.P50, r.Errors)
		}
	}
	// The replicas' counters are not measured, and the output says so.
	if !f.Runs[0].External || !strings.Contains(stdout.String(), "not measured on an external cluster") {
		t.Errorf("external %v; table:\n%s", f.Runs[0].External, stdout.String())
	}
	csv := mustRead(t, filepath.Join(dir, result.CSVName))
	if !strings.Contains(csv, ",150,") || !strings.Contains(csv, ",300,") {
		t.Errorf("results.csv lacks the rates:\n%s", csv)
	}
	if _, err := os.Stat(filepath.Join(dir, "latency-tput.png")); err != nil {
		t.Errorf("no latency-vs-throughput chart: %v\n%s", err, stdout.String())
	}
}

// TestBenchExternalRefuses: the bench cannot crash a replica it did not start, nor turn
// on compression that the cluster file leaves off (both refused before it connects, so no
// replica needs to run).
func TestBenchExternalRefuses(t *testing.T) {
	var file, stderr bytes.Buffer
	if code := run([]string{"config", "--replicas", "3"}, &file, &stderr); code != 0 {
		t.Fatalf("parliament config: exit %d: %s", code, stderr.String())
	}
	path := filepath.Join(t.TempDir(), "cluster.yaml")
	if err := os.WriteFile(path, file.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		flags []string
		want  string
	}{
		{[]string{"--fail", "CA@500ms"}, "--fail is not supported with --config"},
		{[]string{"--compress"}, "--compress with --config"},
	} {
		stderr.Reset()
		var stdout bytes.Buffer
		args := append([]string{"bench", "--config", path, "--duration", "1s", "--out", t.TempDir()}, c.flags...)
		if code := run(args, &stdout, &stderr); code != 1 || !strings.Contains(stderr.String(), c.want) {
			t.Errorf("%v: exit %d: %s", c.flags, code, stderr.String())
		}
	}
}
