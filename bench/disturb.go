package bench

import (
	"fmt"
	"time"

	"github.com/parliament-lab/parliament/bench/result"
)

// Host stall thresholds, used where the CPU time of other processes is unknown (not
// Linux): above either, the machine (not the protocol) added visible latency. On an idle
// 2-core machine a latency run's probe p99 is about 1ms and its maximum under 20ms.
const (
	stallP99Warn = 10.0  // ms
	stallMaxWarn = 100.0 // ms
	// otherCPUWarn: CPUs' worth of time used by other processes above which a run is
	// flagged (an idle machine's daemons use a few hundredths).
	otherCPUWarn = 0.25
)

// Warnings lists, in words, what disturbed a run: events a steady run on an idle machine
// does not have. A run with a crash (r.Fail) is expected to see one election (Multi-Paxos
// leader crash), recoveries, redirects, resends and drops to the dead replica, so only
// the host stall and errors count there. An external run (r.External) has only its
// clients' counters: errors, resends and redirects.
func Warnings(r *result.Run) []string {
	var w []string
	steady := r.Fail == nil
	if steady && r.Elections > 0 {
		w = append(w, fmt.Sprintf("%d leader election(s) without a failure", r.Elections))
	}
	if steady && r.WarmupElections > 0 {
		w = append(w, fmt.Sprintf("%d leader election(s) during the warm-up", r.WarmupElections))
	}
	if steady && !r.External && r.Protocol == "multipaxos" && r.Leader != "" && r.LeaderEnd != r.Leader {
		end := "no agreed leader"
		if r.LeaderEnd != "" {
			end = "the leader at " + r.LeaderEnd
		}
		w = append(w, fmt.Sprintf("the run was set up with the leader at %s but ended with %s (the optimum assumes %s)", r.Leader, end, r.Leader))
	}
	if steady && r.Recoveries > 0 {
		what := "EPaxos recoveries (explicit prepare)"
		if r.Protocol == "multipaxos" {
			what = "Multi-Paxos campaigns (phase 1)"
		}
		w = append(w, fmt.Sprintf("%d %s started without a failure", r.Recoveries, what))
	}
	if steady && r.Retries > 0 {
		timeout := time.Duration(r.RetryTimeoutS * float64(time.Second)).Round(time.Millisecond)
		w = append(w, fmt.Sprintf("%d client resend(s) after %v without a reply", r.Retries, timeout))
	}
	if steady && r.Redirects > 0 {
		w = append(w, fmt.Sprintf("%d redirect(s) (no leader known, or a replica stopping)", r.Redirects))
	}
	if steady && r.Dropped > 0 {
		w = append(w, fmt.Sprintf("%d peer message(s) dropped by the transport or the WAN emulator", r.Dropped))
	}
	if r.Errors > 0 {
		w = append(w, fmt.Sprintf("%d command(s) failed or dropped (open loop beyond capacity)", r.Errors))
	}
	stalled := r.HostStall.P99 > stallP99Warn || r.HostStall.Max > stallMaxWarn
	switch {
	case r.OtherCPU > otherCPUWarn:
		w = append(w, fmt.Sprintf("other processes used %.1f CPUs during the run; the benchmark waited up to %.0fms for a CPU (p99 %.1fms), and its latencies include such waits",
			r.OtherCPU, r.HostStall.Max, r.HostStall.P99))
	case stalled && r.OtherCPU == 0 && r.Experiment != "throughput" && r.Experiment != "sweep":
		// Other processes' CPU unknown (not Linux). Throughput and sweep runs saturate the
		// cores themselves: their stalls are part of what they measure.
		w = append(w, fmt.Sprintf("the benchmark waited up to %.0fms for a CPU (p99 %.1fms): a loaded machine? latencies include such waits",
			r.HostStall.Max, r.HostStall.P99))
	}
	return w
}
