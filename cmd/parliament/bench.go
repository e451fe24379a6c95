package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/parliament-lab/parliament/bench"
	"github.com/parliament-lab/parliament/bench/plot"
	"github.com/parliament-lab/parliament/bench/result"
	"github.com/parliament-lab/parliament/workloads"
)

func init() {
	register(command{
		name:    "bench",
		summary: "run the benchmark suite (in-process cluster, emulated WAN) and draw its charts",
		run:     runBench,
	})
}

const benchExamples = `  parliament bench                                   # the default suite (about 3 minutes on 2 cores)
  parliament bench --protocols epaxos --conflicts 0,100 --wan aws-5site --duration 20s
  parliament bench --protocols multipaxos --leader VA --clients 20 --outstanding 1
  parliament bench --wan none --conflicts 0,2,25,100 --clients 8 --outstanding 16
  parliament bench --rate 1000,2000,4000 --outstanding 1000      # open loop, Poisson arrivals
  parliament bench --fail CA@4s --duration 10s                   # crash the CA replica 4s in
  parliament bench --config cluster.yaml --duration 30s          # an external cluster`

// experimentFlags are the flags that replace the default suite by a custom matrix of runs.
var experimentFlags = map[string]bool{
	"protocols": true, "replicas": true, "conflicts": true, "wan": true, "leader": true, "clients": true,
	"outstanding": true, "rate": true, "duration": true, "warmup": true, "fail": true, "config": true,
	"distribution": true, "theta": true, "reads": true, "value-size": true, "keys": true,
}

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bench", "[flags]", benchExamples, stderr)
	protocols := fs.String("protocols", "epaxos,multipaxos", "protocols to compare, comma-separated")
	replicas := fs.Int("replicas", 5, "replicas per cluster: 3, 5 or 7 (sites from the WAN matrix; 3 on aws-5site = CA, VA, IE)")
	conflicts := fs.String("conflicts", "0", "conflict rates in percent, comma-separated (EPaxos paper: 0,2,25,100)")
	wan := fs.String("wan", "aws-5site", "WAN matrix: aws-5site, aws-3site, none, or a CSV file (see workloads/matrices)")
	leader := fs.String("leader", "", "Multi-Paxos leader site (default: the first replica's site, CA on aws-5site)")
	clients := fs.Int("clients", 10, "clients per site")
	outstanding := fs.Int("outstanding", 1, "commands in flight per client (closed loop), or the cap in open loop")
	rates := fs.String("rate", "0", "open-loop offered load in commands/s over all clients, comma-separated for a sweep; 0 = closed loop")
	duration := fs.Duration("duration", 10*time.Second, "measured time per run")
	warmup := fs.Duration("warmup", time.Second, "warm-up per run, not measured")
	durable := fs.Bool("durable", false, "replicas fsync their write-ahead log (in a temporary directory) before answering")
	compress := fs.Bool("compress", false, "s2 compression on the replicas' peer connections (with --config: the cluster file's compress setting decides)")
	fail := fs.String("fail", "", "crash the replica of SITE at DURATION after the load starts, e.g. CA@4s")
	seed := fs.Int64("seed", 1, "master seed of the workload and the engines")
	out := fs.String("out", "", "results directory (default results/<date>-<commit>)")
	repeat := fs.Int("repeat", 1, "runs of each configuration; results.json summarizes them (mean, stddev, ...)")
	doPlot := fs.Bool("plot", true, "draw the charts into the results directory")
	configPath := fs.String("config", "", "benchmark an external cluster from its cluster file instead of an in-process one")
	dist := fs.String("distribution", "conflict", "key choice: conflict (hot key at --conflicts %), uniform or zipf")
	theta := fs.Float64("theta", 0.99, "zipf skew")
	reads := fs.Float64("reads", 0, "percent of commands that are GETs")
	valueSize := fs.Int("value-size", 16, "bytes per PUT value")
	keys := fs.Int("keys", 1<<20, "key space for uniform and zipf")
	verbose := fs.Bool("v", false, "log the replicas' warnings to stderr")
	electionTicks := fs.Int("election-ticks", 0, "Multi-Paxos base election timeout in 10ms ticks (0 = max(50, 2 x the largest WAN round trip))")
	recoveryTicks := fs.Int("recovery-ticks", 0, "EPaxos recovery timeout in 10ms ticks (0 = max(50, 2 x the largest WAN round trip); -1 = the engine's and runtime's defaults)")
	retryTimeout := fs.Duration("retry-timeout", 0, "clients resend a command after this long without a reply (0 = max(1s, 5 x the largest WAN round trip); with --fail 2 x it + 100ms; with --config 0 = the client library's 1s)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "parliament bench: unexpected argument %q\n", fs.Arg(0))
		return errUsage
	}
	custom := false
	fs.Visit(func(f *flag.Flag) {
		if experimentFlags[f.Name] {
			custom = true
		}
	})
	if *repeat < 1 {
		return fmt.Errorf("--repeat %d: want >= 1", *repeat)
	}

	suite := "default"
	var cfgs []bench.Config
	if !custom {
		cfgs = bench.DefaultSuite(bench.SuiteOptions{Seed: *seed, Durable: *durable, Repeat: *repeat})
	} else {
		suite = "custom"
		var err error
		cfgs, err = customRuns(customFlags{
			protocols: *protocols, replicas: *replicas, conflicts: *conflicts, wan: *wan, leader: *leader,
			clients: *clients, outstanding: *outstanding, rates: *rates, duration: *duration, warmup: *warmup,
			durable: *durable, fail: *fail, seed: *seed, repeat: *repeat,
			spec: workloads.Spec{Distribution: *dist, Theta: *theta, ReadPct: *reads, ValueSize: *valueSize, Keys: *keys},
		})
		if err != nil {
			return err
		}
	}
	for i := range cfgs {
		if *verbose {
			cfgs[i].Logger = stderrLogger(stderr)
		}
		cfgs[i].ElectionTicks, cfgs[i].RecoveryTicks, cfgs[i].RetryTimeout = *electionTicks, *recoveryTicks, *retryTimeout
		cfgs[i].Compress = *compress
		// Before any run starts. (With --config, RunExternal validates each run once the
		// cluster file has set its protocol and size.)
		if *configPath == "" {
			if err := cfgs[i].Validate(); err != nil {
				return err
			}
		}
	}
	meta := bench.Stamp(append([]string{"parliament", "bench"}, args...), *seed, *durable, suite)
	dir := *out
	if dir == "" {
		dir = filepath.Join("results", meta.Started.Format("2006-01-02")+"-"+meta.Commit)
	}

	var f *result.File
	var err error
	if *configPath != "" {
		meta.Emulation = "external"
		f, err = bench.RunExternal(ctx, meta, *configPath, cfgs, newProgress(stderr, cfgs))
	} else {
		f, err = bench.RunAll(ctx, meta, cfgs, newProgress(stderr, cfgs), func(r *result.Run) {
			if len(r.Warnings) > 0 {
				fmt.Fprintf(stderr, "bench: WARNING %s: %s\n", r.Name, strings.Join(r.Warnings, "; "))
			}
		})
	}
	if f != nil && len(f.Runs) > 0 {
		if werr := result.Write(dir, f); werr != nil {
			return werr
		}
		fmt.Fprintln(stdout)
		bench.WriteTable(stdout, f)
		fmt.Fprintf(stdout, "results: %s (%s, %s); suite took %.0fs\n", dir, result.JSONName, result.CSVName, f.Meta.ElapsedS)
		if *doPlot {
			charts, perr := plot.All(f, dir)
			if perr != nil {
				return perr
			}
			names := make([]string, len(charts))
			for i, c := range charts {
				names[i] = c.Name
			}
			fmt.Fprintf(stdout, "charts: %s/{%s}.{png,svg}\n", dir, strings.Join(names, ","))
		}
	}
	return err
}

type customFlags struct {
	protocols, conflicts, wan, leader, rates, fail string
	replicas, clients, outstanding, repeat         int
	duration, warmup                               time.Duration
	durable                                        bool
	seed                                           int64
	spec                                           workloads.Spec
}

// customRuns expands the flags into one run per protocol x conflict rate x offered rate
// (x repetition). Each run is filed under the experiment its shape matches, so that
// `parliament plot` draws the right chart: failure with --fail, sweep with --rate,
// latency on a WAN, throughput without one.
func customRuns(c customFlags) ([]bench.Config, error) {
	matrix, err := workloads.ResolveWAN(c.wan)
	if err != nil {
		return nil, err
	}
	var failSpec *bench.FailSpec
	if c.fail != "" {
		if failSpec, err = bench.ParseFail(c.fail); err != nil {
			return nil, err
		}
	}
	conflicts, err := floatList("conflicts", c.conflicts)
	if err != nil {
		return nil, err
	}
	rates, err := floatList("rate", c.rates)
	if err != nil {
		return nil, err
	}
	var out []bench.Config
	for _, p := range strings.Split(c.protocols, ",") {
		p = strings.TrimSpace(p)
		for _, conflict := range conflicts {
			for _, rate := range rates {
				exp := bench.ExpThroughput
				switch {
				case failSpec != nil:
					exp = bench.ExpFailure
				case rate > 0:
					exp = bench.ExpSweep
				case matrix != nil:
					exp = bench.ExpLatency
				}
				spec := c.spec
				spec.ConflictPct = conflict
				for r := range c.repeat {
					cfg := bench.Config{
						Experiment: exp, Protocol: p, Replicas: c.replicas, WAN: c.wan, Matrix: matrix, Leader: c.leader,
						Workload: spec, Clients: c.clients, Outstanding: c.outstanding, RateOps: rate,
						Duration: c.duration, Warmup: c.warmup, Durable: c.durable, Fail: failSpec, Seed: c.seed, Repeat: r,
					}
					if err := cfg.Validate(); err != nil {
						return nil, err
					}
					out = append(out, cfg)
				}
			}
		}
	}
	return out, nil
}

func floatList(name, s string) ([]float64, error) {
	var out []float64
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil {
			return nil, fmt.Errorf("--%s %q: want numbers separated by commas", name, s)
		}
		out = append(out, v)
	}
	return out, nil
}

// newProgress shows a progress bar with an ETA when stderr is a terminal, and one plain
// line per run plus one every 10 seconds otherwise (logs, CI).
func newProgress(stderr io.Writer, cfgs []bench.Config) bench.Progress {
	total := bench.Estimate(cfgs)
	var mu sync.Mutex
	var doneBefore time.Duration // load time of the finished runs
	var cur string
	var curTotal time.Duration
	var lastLine time.Time
	runNo := 0
	tty := false
	if f, ok := stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		tty = true
	}
	var bar *progressbar.ProgressBar
	if tty {
		bar = progressbar.NewOptions64(total.Milliseconds(),
			progressbar.OptionSetWriter(stderr), progressbar.OptionSetPredictTime(true), progressbar.OptionSetElapsedTime(true),
			progressbar.OptionSetWidth(30), progressbar.OptionShowDescriptionAtLineEnd(), progressbar.OptionThrottle(200*time.Millisecond),
			progressbar.OptionClearOnFinish())
	}
	return func(run string, elapsed, runTotal time.Duration, ops int64) {
		mu.Lock()
		defer mu.Unlock()
		if run != cur {
			if cur != "" {
				doneBefore += curTotal
			}
			cur, curTotal = run, runTotal
			runNo++
			if !tty {
				fmt.Fprintf(stderr, "bench: run %d/%d %s (%s)\n", runNo, len(cfgs), run, runTotal)
				lastLine = time.Now()
			}
		}
		if tty {
			bar.Describe(fmt.Sprintf("run %d/%d %s, %d ops", runNo, len(cfgs), run, ops))
			bar.Set64((doneBefore + elapsed).Milliseconds())
			if doneBefore+elapsed >= total {
				bar.Finish()
			}
			return
		}
		if time.Since(lastLine) >= 10*time.Second {
			fmt.Fprintf(stderr, "bench:   %s: %.0f/%.0fs, %d commands; suite %.0f%%\n", run, elapsed.Seconds(), runTotal.Seconds(), ops,
				100*float64(doneBefore+elapsed)/float64(total))
			lastLine = time.Now()
		}
	}
}

func stderrLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn}))
}
