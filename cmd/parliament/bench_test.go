package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/parliament-lab/parliament/bench"
	"github.com/parliament-lab/parliament/bench/result"
)

func TestCustomRunsExperiments(t *testing.T) {
	base := customFlags{protocols: "epaxos,multipaxos", replicas: 5, conflicts: "0,100", wan: "aws-5site", rates: "0",
		clients: 1, outstanding: 1, repeat: 1, duration: time.Second}
	cfgs, err := customRuns(base)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfgs) != 4 || cfgs[0].Experiment != bench.ExpLatency || cfgs[1].Workload.ConflictPct != 100 || cfgs[2].Protocol != "multipaxos" {
		t.Fatalf("latency matrix: %+v", cfgs)
	}
	for _, c := range []struct {
		mut  func(*customFlags)
		exp  string
		runs int
	}{
		{func(f *customFlags) { f.wan = "none" }, bench.ExpThroughput, 4},
		{func(f *customFlags) { f.rates = "100,200" }, bench.ExpSweep, 8},
		{func(f *customFlags) { f.fail = "CA@500ms" }, bench.ExpFailure, 4},
		{func(f *customFlags) { f.repeat = 3 }, bench.ExpLatency, 12},
	} {
		f := base
		c.mut(&f)
		cfgs, err := customRuns(f)
		if err != nil {
			t.Fatal(err)
		}
		if len(cfgs) != c.runs || cfgs[0].Experiment != c.exp {
			t.Errorf("%+v: %d runs of %q, want %d of %q", f, len(cfgs), cfgs[0].Experiment, c.runs, c.exp)
		}
	}
	for _, bad := range []func(*customFlags){
		func(f *customFlags) { f.conflicts = "x" },
		func(f *customFlags) { f.protocols = "raft" },
		func(f *customFlags) { f.fail = "CA" },
		func(f *customFlags) { f.wan = "/no/such/matrix.csv" },
		func(f *customFlags) { f.replicas = 4; f.protocols = "epaxos" },
	} {
		f := base
		bad(&f)
		if _, err := customRuns(f); err == nil {
			t.Errorf("%+v accepted", f)
		}
	}
}

func TestBenchCommandWritesResults(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out")
	var stdout, stderr bytes.Buffer
	code := run([]string{"bench", "--protocols", "epaxos", "--replicas", "3", "--wan", "aws-3site", "--conflicts", "0",
		"--clients", "1", "--duration", "1s", "--warmup", "200ms", "--seed", "7", "--out", dir, "--plot=false"}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	f, err := result.Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	if f.Meta.Seed != 7 || f.Meta.Suite != "custom" || !strings.Contains(f.Meta.Command, "--wan aws-3site") || f.Meta.CPUs < 1 || f.Meta.Commit == "" {
		t.Errorf("meta %+v", f.Meta)
	}
	if len(f.Runs) != 1 || len(f.Runs[0].Sites) != 3 || f.Runs[0].Sites[0].Optimum == 0 {
		t.Fatalf("runs %+v", f.Runs)
	}
	for _, want := range []string{"Commit latency per site", "CA", "results: " + dir} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("stdout lacks %q:\n%s", want, stdout.String())
		}
	}
	// Not a terminal: plain progress lines, no progress bar.
	if !strings.Contains(stderr.String(), "bench: run 1/1") {
		t.Errorf("stderr %q", stderr.String())
	}
}

// TestBenchUsageErrors: bad flags and values are refused with exit 1 (2 for a usage
// error) and a message naming the value, before any run starts (each case returns at
// once: the default suite would take minutes).
func TestBenchUsageErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--fail", "nowhere"}, 1, "nowhere"},
		{[]string{"extra"}, 2, "extra"},
		{[]string{"--repeat", "0"}, 1, "--repeat 0"},
		{[]string{"--value-size", "-1"}, 1, "value size -1"},
		{[]string{"--keys", "-3", "--distribution", "uniform"}, 1, "key space -3"},
		{[]string{"--election-ticks", "-5"}, 1, "election ticks -5"},
		{[]string{"--recovery-ticks", "-2"}, 1, "recovery ticks -2"},
		{[]string{"--retry-timeout", "-1s"}, 1, "retry timeout -1s"},
		{[]string{"--compress=maybe"}, 2, "compress"},
	} {
		var stdout, stderr bytes.Buffer
		code := run(append([]string{"bench"}, c.args...), &stdout, &stderr)
		if code != c.code || !strings.Contains(stderr.String(), c.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d naming %q", c.args, code, stderr.String(), c.code, c.want)
		}
	}
}
