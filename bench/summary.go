package bench

import (
	"sort"
	"strings"

	"github.com/montanaflynn/stats"

	"github.com/parliament-lab/parliament/bench/result"
)

// configKey is a run's name without its repetition suffix ("/r1"...).
func configKey(r *result.Run) string {
	if i := strings.LastIndex(r.Name, "/r"); i >= 0 && r.Repeat > 0 {
		return r.Name[:i]
	}
	return r.Name
}

// Summarize computes, for each configuration, the mean, standard deviation, min, median
// and max over its repetitions of throughput and of each site's median and p99 commit
// latency (github.com/montanaflynn/stats), and the EPaxos fast-path ratio where it was
// measured (not on an external cluster). With one repetition the spread is 0.
func Summarize(runs []result.Run) []result.Summary {
	type key struct{ cfg, metric string }
	values := map[key][]float64{}
	var order []key
	add := func(k key, v float64) {
		if _, ok := values[k]; !ok {
			order = append(order, k)
		}
		values[k] = append(values[k], v)
	}
	for i := range runs {
		r := &runs[i]
		cfg := configKey(r)
		add(key{cfg, "throughput_ops"}, r.ThroughputOps)
		if r.Protocol == "epaxos" && !r.External { // not measured on an external cluster
			add(key{cfg, "fast_path_ratio"}, r.FastPathRatio)
		}
		for _, s := range r.Sites {
			if s.Ops == 0 {
				continue
			}
			add(key{cfg, "commit_p50_ms@" + s.Site}, s.Commit.P50)
			add(key{cfg, "commit_p99_ms@" + s.Site}, s.Commit.P99)
		}
	}
	out := make([]result.Summary, 0, len(order))
	for _, k := range order {
		v := stats.Float64Data(values[k])
		s := result.Summary{Key: k.cfg, Metric: k.metric, N: len(v)}
		s.Mean, _ = stats.Mean(v)
		s.Stddev, _ = stats.StandardDeviationSample(v)
		if len(v) < 2 {
			s.Stddev = 0
		}
		s.Min, _ = stats.Min(v)
		s.Median, _ = stats.Median(v)
		s.Max, _ = stats.Max(v)
		out = append(out, s)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}
