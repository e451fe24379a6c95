package bench

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/parliament-lab/parliament/bench/result"
)

// WriteTable prints the summary tables of a results file: per-site latency against the
// optimum, throughput, the open-loop sweep and the failure gaps.
func WriteTable(w io.Writer, f *result.File) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	line := func(cells ...string) { fmt.Fprintln(tw, strings.Join(cells, "\t")+"\t") }
	ms := func(v float64) string { return fmt.Sprintf("%.1f", v) }

	if runs := f.RunsOf(ExpLatency); len(runs) > 0 {
		fmt.Fprintln(tw, "Commit latency per site (ms): median vs the optimum from the RTT matrix")
		line("protocol", "conflict%", "site", "optimum", "p50", "ratio", "p90", "p99", "p99.9", "exec p50", "ops")
		for _, r := range runs {
			for _, s := range r.Sites {
				ratio := "-"
				if s.Optimum > 0 {
					ratio = fmt.Sprintf("%.3f", s.Commit.P50/s.Optimum)
				}
				line(r.Protocol, fmt.Sprintf("%g", r.Conflict), s.Site, ms(s.Optimum), ms(s.Commit.P50), ratio,
					ms(s.Commit.P90), ms(s.Commit.P99), ms(s.Commit.P999), ms(s.Exec.P50), fmt.Sprint(s.Ops))
			}
		}
		line()
	}
	if runs := f.RunsOf(ExpThroughput); len(runs) > 0 {
		fmt.Fprintln(tw, "Throughput vs conflict rate")
		line("protocol", "conflict%", "wan", "ops/s", "fast path", "msgs/cmd", "bytes/cmd", "p50 ms", "p99 ms", "elections", "stall max ms")
		for _, r := range runs {
			line(r.Protocol, fmt.Sprintf("%g", r.Conflict), r.WAN, fmt.Sprintf("%.0f", r.ThroughputOps), fastPath(r),
				fmt.Sprintf("%.2f", r.MsgsPerCmd), fmt.Sprintf("%.0f", r.BytesPerCmd), ms(r.Commit.P50), ms(r.Commit.P99), fmt.Sprint(r.Elections), ms(r.HostStall.Max))
		}
		line()
	}
	if runs := f.RunsOf(ExpSweep); len(runs) > 0 {
		fmt.Fprintln(tw, "Open loop: latency vs throughput (coordinated-omission corrected)")
		line("protocol", "offered ops/s", "achieved ops/s", "p50 ms", "p99 ms", "errors")
		for _, r := range runs {
			line(r.Protocol, fmt.Sprintf("%.0f", r.RateOps), fmt.Sprintf("%.0f", r.ThroughputOps), ms(r.Commit.P50), ms(r.Commit.P99), fmt.Sprint(r.Errors))
		}
		line()
	}
	if runs := f.RunsOf(ExpFailure); len(runs) > 0 {
		fmt.Fprintln(tw, "Replica failure: longest stretch without any completed command after the crash")
		line("protocol", "crashed", "at s", "gap s", "gap starts s", "gap before crash s", "ops/s")
		for _, r := range runs {
			if r.Fail == nil {
				continue
			}
			line(r.Protocol, r.Fail.Site, fmt.Sprintf("%.2f", r.Fail.AtS), fmt.Sprintf("%.2f", r.Fail.GapS), fmt.Sprintf("%.2f", r.Fail.GapAtS), fmt.Sprintf("%.2f", r.Fail.GapBeforeS), fmt.Sprintf("%.0f", r.ThroughputOps))
		}
		line()
	}
	if runs := f.RunsOf(ExpCustom); len(runs) > 0 {
		fmt.Fprintln(tw, "Runs")
		line("protocol", "conflict%", "wan", "ops/s", "fast path", "p50 ms", "p99 ms", "exec p50 ms")
		for _, r := range runs {
			line(r.Protocol, fmt.Sprintf("%g", r.Conflict), r.WAN, fmt.Sprintf("%.0f", r.ThroughputOps), fastPath(r), ms(r.Commit.P50), ms(r.Commit.P99), ms(r.Exec.P50))
		}
		line()
	}
	if len(f.Runs) > 0 {
		fmt.Fprintln(tw, "Disturbances in the measured window (0 everywhere in a steady run on an idle machine, except where a run crashes a replica)")
		line("run", "elections", "recoveries", "resends", "redirects", "dropped msgs", "stall p99 ms", "stall max ms", "other CPUs")
		for _, r := range f.Runs {
			line(r.Name, fmt.Sprint(r.Elections), fmt.Sprint(r.Recoveries), fmt.Sprint(r.Retries), fmt.Sprint(r.Redirects),
				fmt.Sprint(r.Dropped), ms(r.HostStall.P99), ms(r.HostStall.Max), fmt.Sprintf("%.2f", r.OtherCPU))
		}
		line()
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	return WriteWarnings(w, f)
}

// WriteWarnings prints one line per disturbed run (result.Run.Warnings): its numbers
// measured the machine or a lost message, not only the protocol.
func WriteWarnings(w io.Writer, f *result.File) error {
	n := 0
	for _, r := range f.Runs {
		if len(r.Warnings) == 0 {
			continue
		}
		if n == 0 {
			if _, err := fmt.Fprintln(w, "Disturbed runs (their latencies include more than the protocol; rerun on an idle machine):"); err != nil {
				return err
			}
		}
		n++
		if _, err := fmt.Fprintf(w, "  WARNING %s: %s\n", r.Name, strings.Join(r.Warnings, "; ")); err != nil {
			return err
		}
	}
	if n > 0 {
		_, err := fmt.Fprintln(w)
		return err
	}
	return nil
}

func fastPath(r result.Run) string {
	if r.Protocol != "epaxos" {
		return "-"
	}
	return fmt.Sprintf("%.2f", r.FastPathRatio)
}
