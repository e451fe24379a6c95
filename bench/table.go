package bench

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/parliament-lab/parliament/bench/result"
)

// notMeasured is printed for what an external run does not measure (result.Run.External).
const notMeasured = "n/a"

// WriteTable prints the summary tables of a results file: per-site latency against the
// optimum, throughput, the open-loop sweep and the failure gaps. The replica and host
// counters of external runs (result.File.IsExternal) print as "n/a", and a note says why.
func WriteTable(w io.Writer, f *result.File) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	line := func(cells ...string) { fmt.Fprintln(tw, strings.Join(cells, "\t")+"\t") }
	ms := func(v float64) string { return fmt.Sprintf("%.1f", v) }
	// measured formats a replica or host counter of r, or says it was not measured.
	measured := func(r *result.Run, format string, v any) string {
		if f.IsExternal(r) {
			return notMeasured
		}
		return fmt.Sprintf(format, v)
	}
	fastPath := func(r *result.Run) string {
		if r.Protocol != "epaxos" {
			return "-"
		}
		return measured(r, "%.2f", r.FastPathRatio)
	}

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
			line(r.Protocol, fmt.Sprintf("%g", r.Conflict), r.WAN, fmt.Sprintf("%.0f", r.ThroughputOps), fastPath(&r),
				measured(&r, "%.2f", r.MsgsPerCmd), measured(&r, "%.0f", r.BytesPerCmd), ms(r.Commit.P50), ms(r.Commit.P99),
				measured(&r, "%d", r.Elections), measured(&r, "%.1f", r.HostStall.Max))
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
			line(r.Protocol, fmt.Sprintf("%g", r.Conflict), r.WAN, fmt.Sprintf("%.0f", r.ThroughputOps), fastPath(&r), ms(r.Commit.P50), ms(r.Commit.P99), ms(r.Exec.P50))
		}
		line()
	}
	if len(f.Runs) > 0 {
		fmt.Fprintln(tw, "Disturbances in the measured window (0 everywhere in a steady run on an idle machine, except where a run crashes a replica)")
		line("run", "elections", "recoveries", "resends", "redirects", "dropped msgs", "stall p99 ms", "stall max ms", "other CPUs")
		external := false
		for i := range f.Runs {
			r := &f.Runs[i]
			external = external || f.IsExternal(r)
			line(r.Name, measured(r, "%d", r.Elections), measured(r, "%d", r.Recoveries), fmt.Sprint(r.Retries), fmt.Sprint(r.Redirects),
				measured(r, "%d", r.Dropped), measured(r, "%.1f", r.HostStall.P99), measured(r, "%.1f", r.HostStall.Max), measured(r, "%.2f", r.OtherCPU))
		}
		line()
		if external {
			fmt.Fprintln(tw, "n/a: not measured on an external cluster (--config): the bench reads only its clients (latency, throughput, errors, resends, redirects),")
			fmt.Fprintln(tw, "not the replicas' counters (fast path, messages and bytes per command, elections, recoveries, dropped messages) nor the host stall and other CPUs.")
			line()
		}
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
