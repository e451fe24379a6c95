package bench

import (
	"math"
	"testing"
	"time"

	"github.com/parliament-lab/parliament/bench/result"
)

func TestLatencyPercentilesAndMerge(t *testing.T) {
	a, b := NewLatency(), NewLatency()
	for i := 1; i <= 1000; i++ {
		a.Record(time.Duration(i) * time.Millisecond / 10) // 0.1 .. 100 ms
	}
	b.Record(time.Hour) // clamped to 10 min, not dropped
	a.Merge(b)
	if a.Count() != 1001 {
		t.Fatalf("count %d", a.Count())
	}
	p := a.Percentiles()
	near := func(got, want float64) bool { return math.Abs(got-want) <= want*0.005+0.001 }
	if !near(p.P50, 50) || !near(p.P90, 90) || !near(p.P99, 99) || !near(p.Max, 600000) {
		t.Fatalf("percentiles %+v", p)
	}
	cdf := a.CDF(50)
	if len(cdf) > 50 || cdf[len(cdf)-1].P != 1 {
		t.Fatalf("cdf has %d points, last %+v", len(cdf), cdf[len(cdf)-1])
	}
	for i := 1; i < len(cdf); i++ {
		if cdf[i].Ms < cdf[i-1].Ms || cdf[i].P < cdf[i-1].P {
			t.Fatalf("cdf not monotone at %d: %+v %+v", i, cdf[i-1], cdf[i])
		}
	}
	a.Reset()
	if a.Count() != 0 || a.Percentiles() != (result.Percentiles{}) || a.CDF(10) != nil {
		t.Fatal("reset histogram not empty")
	}
}

func TestSummarize(t *testing.T) {
	runs := []result.Run{
		{Name: "latency/epaxos/c0", Protocol: "epaxos", ThroughputOps: 100, FastPathRatio: 1,
			Sites: []result.Site{{Site: "CA", Ops: 5, Commit: result.Percentiles{P50: 60, P99: 70}}}},
		{Name: "latency/epaxos/c0/r1", Repeat: 1, Protocol: "epaxos", ThroughputOps: 200, FastPathRatio: 1,
			Sites: []result.Site{{Site: "CA", Ops: 5, Commit: result.Percentiles{P50: 62, P99: 80}}}},
		{Name: "latency/multipaxos/c0", Protocol: "multipaxos", ThroughputOps: 50},
	}
	got := map[string]result.Summary{}
	for _, s := range Summarize(runs) {
		got[s.Key+" "+s.Metric] = s
	}
	tp := got["latency/epaxos/c0 throughput_ops"]
	if tp.N != 2 || tp.Mean != 150 || tp.Min != 100 || tp.Max != 200 || math.Abs(tp.Stddev-70.7107) > 1e-3 {
		t.Fatalf("throughput summary %+v", tp)
	}
	if s := got["latency/epaxos/c0 commit_p50_ms@CA"]; s.N != 2 || s.Median != 61 {
		t.Fatalf("p50 summary %+v", s)
	}
	if s := got["latency/multipaxos/c0 throughput_ops"]; s.N != 1 || s.Stddev != 0 {
		t.Fatalf("single run summary %+v", s)
	}
	if _, ok := got["latency/multipaxos/c0 fast_path_ratio"]; ok {
		t.Fatal("fast path ratio summarized for multipaxos")
	}
}
