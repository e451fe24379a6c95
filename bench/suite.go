package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"github.com/parliament-lab/parliament/bench/result"
	"github.com/parliament-lab/parliament/workloads"
)

// SuiteOptions are the knobs that apply to every run of a suite.
type SuiteOptions struct {
	Seed    int64
	Durable bool
	Repeat  int // runs per configuration (>= 1); summaries across them in result.File.Summary
}

// DefaultSuite is what `parliament bench` runs without flags, sized to finish in about
// three minutes on 2 cores:
//
//   - latency: the 5-site WAN (aws-5site), 0% and 100% conflict, both protocols, 10
//     closed-loop clients per site with one command outstanding (EPaxos paper, Figure 4);
//     the Multi-Paxos leader is at CA.
//   - throughput: no WAN, conflict 0, 2, 25, 100%, 8 clients per site with 16 outstanding
//     each, enough to saturate 2 cores (Figure 5 shape).
//   - sweep: the 5-site WAN at 0% conflict, open loop with Poisson arrivals at 500 to 8000
//     commands/s (latency vs throughput).
//   - failure: the 5-site WAN at 0% conflict, the CA replica (Multi-Paxos: the leader)
//     crashes 4s into the load (Figure 10).
//
// Multi-Paxos runs use an election timeout of 50 ticks (see Config.electionTicks).
func DefaultSuite(o SuiteOptions) []Config {
	aws := workloads.AWS5()
	var out []Config
	add := func(c Config) {
		c.Seed, c.Durable = o.Seed, o.Durable
		for r := range max(o.Repeat, 1) {
			c.Repeat = r
			c.Name = ""
			out = append(out, c)
		}
	}
	protos := []string{workloads.EPaxos, workloads.MultiPaxos}
	for _, conflict := range []float64{0, 100} {
		for _, p := range protos {
			add(Config{Experiment: ExpLatency, Protocol: p, Replicas: 5, WAN: workloads.WANAWS5, Matrix: aws, Leader: "CA",
				Workload: workloads.Spec{ConflictPct: conflict}, Clients: 10, Outstanding: 1,
				Warmup: time.Second, Duration: 8 * time.Second})
		}
	}
	for _, p := range protos {
		for _, conflict := range []float64{0, 2, 25, 100} {
			add(Config{Experiment: ExpThroughput, Protocol: p, Replicas: 5, WAN: workloads.WANNone,
				Workload: workloads.Spec{ConflictPct: conflict}, Clients: 8, Outstanding: 16,
				Warmup: time.Second, Duration: 4 * time.Second})
		}
	}
	for _, p := range protos {
		for _, rate := range []float64{500, 1000, 2000, 4000, 8000} {
			add(Config{Experiment: ExpSweep, Protocol: p, Replicas: 5, WAN: workloads.WANAWS5, Matrix: aws, Leader: "CA",
				Workload: workloads.Spec{ConflictPct: 0}, Clients: 4, Outstanding: 1000, RateOps: rate,
				Warmup: time.Second, Duration: 3 * time.Second})
		}
	}
	for _, p := range protos {
		add(Config{Experiment: ExpFailure, Protocol: p, Replicas: 5, WAN: workloads.WANAWS5, Matrix: aws, Leader: "CA",
			Workload: workloads.Spec{ConflictPct: 0}, Clients: 20, Outstanding: 4,
			Warmup: time.Second, Duration: 9 * time.Second, Fail: &FailSpec{Site: "CA", At: 4 * time.Second}})
	}
	return out
}

// Estimate returns the load time of cfgs (warm-up + duration), without startup costs.
func Estimate(cfgs []Config) time.Duration {
	var d time.Duration
	for _, c := range cfgs {
		d += c.Warmup + c.Duration
	}
	return d
}

// RunAll runs cfgs one after the other and returns the results file (without writing
// it). A failed run stops the suite and returns what was measured so far with the error.
// done, when not nil, gets each run as it finishes (to report its warnings at once).
func RunAll(ctx context.Context, meta result.Meta, cfgs []Config, progress Progress, done func(r *result.Run)) (*result.File, error) {
	if len(cfgs) == 0 {
		return nil, ErrNoRuns
	}
	f := &result.File{Meta: meta}
	for i := range cfgs {
		r, err := Run(ctx, cfgs[i], progress)
		if err != nil {
			f.Meta.ElapsedS = time.Since(meta.Started).Seconds()
			f.Summary = Summarize(f.Runs)
			return f, fmt.Errorf("run %d/%d (%s %s): %w", i+1, len(cfgs), cfgs[i].Experiment, cfgs[i].Protocol, err)
		}
		if done != nil {
			done(&r)
		}
		f.Runs = append(f.Runs, r)
	}
	f.Meta.ElapsedS = time.Since(meta.Started).Seconds()
	f.Summary = Summarize(f.Runs)
	return f, nil
}

// Stamp returns the metadata of a suite started now: machine, CPUs, Go version, commit of
// the working directory's repository ("unknown" outside one; "+dirty" with uncommitted
// changes to tracked files), the command line and the seed.
func Stamp(args []string, seed int64, durable bool, suite string) result.Meta {
	host, err := os.Hostname()
	if err != nil {
		host = "unknown"
	}
	return result.Meta{
		Machine: host, CPUs: runtime.NumCPU(), OS: runtime.GOOS + "/" + runtime.GOARCH, Go: runtime.Version(),
		Commit: Commit(), Command: strings.Join(args, " "), Seed: seed, Started: time.Now().UTC().Truncate(time.Second),
		Suite: suite, Durable: durable, Emulation: "in-process",
	}
}

// Commit returns the short commit hash of the current directory's git repository.
func Commit() string {
	out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	c := strings.TrimSpace(string(out))
	if st, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(strings.TrimSpace(string(st))) > 0 {
		c += "-dirty"
	}
	return c
}
