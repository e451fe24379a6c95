package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/parliament-lab/parliament/bench/result"
)

func TestPlotFromResultsAlone(t *testing.T) {
	dir := t.TempDir()
	f := &result.File{Meta: result.Meta{Machine: "m", CPUs: 2, Commit: "abc"}, Runs: []result.Run{
		{Experiment: "throughput", Protocol: "epaxos", Replicas: 3, Conflict: 0, ThroughputOps: 1000},
		{Experiment: "throughput", Protocol: "epaxos", Replicas: 3, Conflict: 100, ThroughputOps: 500},
	}}
	if err := result.Write(dir, f); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"plot", dir}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	for _, name := range []string{"throughput.png", "throughput.svg"} {
		if st, err := os.Stat(filepath.Join(dir, name)); err != nil || st.Size() == 0 {
			t.Errorf("%s not written: %v", name, err)
		}
	}
	if !strings.Contains(stdout.String(), "Throughput vs conflict rate") {
		t.Errorf("stdout %q", stdout.String())
	}

	out := t.TempDir()
	if code := run([]string{"plot", "--out", out, filepath.Join(dir, "results.json")}, &stdout, &stderr); code != 0 {
		t.Fatalf("--out: exit %d: %s", code, stderr.String())
	}
	if _, err := os.Stat(filepath.Join(out, "throughput.png")); err != nil {
		t.Error(err)
	}
}

func TestPlotErrors(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"plot"}, &stdout, &stderr); code != 2 {
		t.Errorf("no argument: exit %d, want 2", code)
	}
	stderr.Reset()
	if code := run([]string{"plot", filepath.Join(t.TempDir(), "nothing")}, &stdout, &stderr); code != 1 || stderr.Len() == 0 {
		t.Errorf("missing dir: exit %d, stderr %q", code, stderr.String())
	}
	empty := t.TempDir()
	result.Write(empty, &result.File{})
	stderr.Reset()
	if code := run([]string{"plot", empty}, &stdout, &stderr); code != 1 || !strings.Contains(stderr.String(), "no runs") {
		t.Errorf("empty results: exit %d, stderr %q", code, stderr.String())
	}
}
