package result

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func sample() *File {
	return &File{
		Meta: Meta{Machine: "m", CPUs: 2, Go: "go1.26", Commit: "abc", Command: "parliament bench", Seed: 1,
			Started: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)},
		Runs: []Run{{
			Name: "latency/epaxos/c0", Experiment: "latency", Protocol: "epaxos", Replicas: 5, WAN: "aws-5site",
			Clients: 1, DurationS: 10, ThroughputOps: 123.5, FastPathRatio: 1,
			Timeline: []Point{{TS: 0.5, Ops: 10}},
			Sites: []Site{
				{Site: "CA", Ops: 100, Commit: Percentiles{P50: 60, P90: 61, P99: 62, P999: 63}, Optimum: 60},
				{Site: "VA", Ops: 90, Commit: Percentiles{P50: 71}, Optimum: 70.8},
			},
		}, {Name: "throughput/multipaxos/c0", Experiment: "throughput", Protocol: "multipaxos"}},
	}
}

// TestSchemaKeys pins the JSON keys the issue and docs/results.md promise.
func TestSchemaKeys(t *testing.T) {
	b, _ := json.Marshal(sample())
	var raw map[string]any
	json.Unmarshal(b, &raw)
	meta := raw["meta"].(map[string]any)
	for _, k := range []string{"machine", "cpus", "go", "commit", "command", "seed", "started"} {
		if _, ok := meta[k]; !ok {
			t.Errorf("meta lacks %q", k)
		}
	}
	run := raw["runs"].([]any)[0].(map[string]any)
	for _, k := range []string{"protocol", "replicas", "conflict", "wan", "leader", "durable", "clients",
		"duration_s", "throughput_ops", "fast_path_ratio", "timeline", "sites",
		"elections", "retries", "redirects", "recoveries", "dropped_msgs", "host_stall_ms", "retry_timeout_s"} {
		if _, ok := run[k]; !ok {
			t.Errorf("run lacks %q", k)
		}
	}
	tl := run["timeline"].([]any)[0].(map[string]any)
	if _, ok := tl["t_s"]; !ok {
		t.Error("timeline point lacks t_s")
	}
	if _, ok := tl["ops"]; !ok {
		t.Error("timeline point lacks ops")
	}
	site := run["sites"].([]any)[0].(map[string]any)
	for _, k := range []string{"site", "ops", "commit_ms", "exec_ms", "optimum_commit_ms"} {
		if _, ok := site[k]; !ok {
			t.Errorf("site lacks %q", k)
		}
	}
	for _, k := range []string{"p50", "p90", "p99", "p999"} {
		if _, ok := site["commit_ms"].(map[string]any)[k]; !ok {
			t.Errorf("commit_ms lacks %q", k)
		}
	}
}

func TestWriteRead(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out")
	f := sample()
	if err := Write(dir, f); err != nil {
		t.Fatal(err)
	}
	back, err := Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := json.Marshal(f)
	b, _ := json.Marshal(back)
	if !bytes.Equal(a, b) {
		t.Fatalf("round trip differs:\n%s\n%s", a, b)
	}
	raw, _ := os.ReadFile(filepath.Join(dir, CSVName))
	rows, err := csv.NewReader(bytes.NewReader(raw)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 4 || strings.Join(rows[0], ",") != strings.Join(CSVHeader, ",") {
		t.Fatalf("csv rows %d:\n%s", len(rows), raw)
	}
	if rows[2][18] != "VA" || rows[2][20] != "71" || rows[3][18] != "all" {
		t.Fatalf("csv content:\n%s", raw)
	}
	if got := back.RunsOf("throughput"); len(got) != 1 || got[0].Protocol != "multipaxos" {
		t.Fatalf("RunsOf %+v", got)
	}
	if _, err := Read(filepath.Join(dir, "nope")); err == nil {
		t.Fatal("missing file read")
	}
}

// TestExternalRuns: what an external run does not measure is empty in results.csv, and
// results files written before Run.External existed still load, their external runs
// recognised by the meta's emulation.
func TestExternalRuns(t *testing.T) {
	f := sample()
	f.Runs[0].External, f.Runs[0].Retries, f.Runs[0].Redirects = true, 7, 2
	var b bytes.Buffer
	if err := WriteCSV(&b, f); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(&b).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	col := map[string]int{}
	for i, name := range rows[0] {
		col[name] = i
	}
	for _, name := range []string{"fast_path_ratio", "msgs_per_cmd", "bytes_per_cmd", "elections", "recoveries",
		"dropped_msgs", "host_stall_p99_ms", "host_stall_max_ms", "other_cpu"} {
		if got := rows[1][col[name]]; got != "" {
			t.Errorf("external run: %s = %q, want empty", name, got)
		}
		if got := rows[3][col[name]]; got != "0" {
			t.Errorf("in-process run: %s = %q, want 0", name, got)
		}
	}
	if rows[1][col["retries"]] != "7" || rows[1][col["redirects"]] != "2" || rows[1][col["external"]] != "true" || rows[3][col["external"]] != "false" {
		t.Errorf("rows:\n%v\n%v", rows[1], rows[3])
	}

	// The key is omitted for in-process runs, as in files written before it existed.
	js, _ := json.Marshal(sample())
	if strings.Contains(string(js), `"external"`) {
		t.Errorf("in-process run writes \"external\": %s", js)
	}
	// A file of an external run written before the field: only the meta says so.
	old := `{"meta": {"machine": "m", "emulation": "external"}, "runs": [{"name": "sweep/epaxos", "protocol": "epaxos", "fast_path_ratio": 0, "retries": 0}]}`
	path := filepath.Join(t.TempDir(), JSONName)
	if err := os.WriteFile(path, []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	back, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if r := &back.Runs[0]; r.External || !back.IsExternal(r) {
		t.Errorf("old external file: External %v, IsExternal %v", r.External, back.IsExternal(r))
	}
	if in := sample(); in.IsExternal(&in.Runs[0]) {
		t.Error("in-process run taken for external")
	}
}
