package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/parliament-lab/parliament/sim"
)

func init() {
	register(command{
		name:    "sim",
		summary: "run seeded fault schedules through the deterministic simulator and check them",
		run:     runSim,
	})
}

const simExamples = `  parliament sim --protocol epaxos --replicas 5 --seeds 1000
  parliament sim --protocol multipaxos --replicas 3 --seeds 200 --faults loss,partition,crash
  parliament sim --protocol epaxos --replicas 5 --seeds 1 --seed 42 --trace seed42.trace   # replay one seed
  parliament sim --protocol epaxos --replicas 5 --seeds 50 --mutation fast-quorum-minus-one  # must fail
  parliament sim --protocol multipaxos --replicas 3 --seeds 500 --compaction off             # never truncate`

// maxReported bounds the failures printed in full; the summary counts them all.
const maxReported = 10

func runSim(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("sim", "--protocol epaxos|multipaxos --replicas N --seeds K [--seed S] [--faults LIST] [--ops M] [--trace FILE]", simExamples, stderr)
	proto := fs.String("protocol", sim.EPaxos, "protocol under test: epaxos or multipaxos")
	replicas := fs.Int("replicas", 5, "number of replicas")
	seeds := fs.Int("seeds", 100, "number of seeds to run: --seed, --seed+1, ...")
	seed := fs.Uint64("seed", 1, "first seed")
	faults := fs.String("faults", "all", "faults to inject: all, none, or a comma-separated list of "+strings.Join(sim.FaultNames(), ","))
	ops := fs.Int("ops", sim.DefaultOps, "client operations per seed (before the final reads)")
	clients := fs.Int("clients", 0, "concurrent clients per seed (0: drawn from the seed, 2..4)")
	keys := fs.Int("keys", 0, "keys the clients touch (0: drawn from the seed, 2..5)")
	skew := fs.Float64("skew", sim.DefaultSkew, "fault \"skew\": replica ticks last from 1/(1+S) to 1+S times the nominal tick")
	compaction := fs.String("compaction", "swarm", "snapshots and truncation: swarm (drawn per seed, off in some), on, or off")
	mutation := fs.String("mutation", "", "TEST ONLY: break the engine on purpose to see the checkers fail: "+strings.Join(sim.MutationNames(), ", "))
	trace := fs.String("trace", "", "write the event log of the first seed to FILE (and, on a linearizability failure, porcupine's visualization to FILE.html)")
	workers := fs.Int("workers", runtime.GOMAXPROCS(0), "seeds run in parallel")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "parliament sim: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return errUsage
	}
	fl, err := sim.ParseFaults(*faults)
	if err != nil {
		return err
	}
	comp, err := sim.ParseCompaction(*compaction)
	if err != nil {
		return err
	}
	if *seeds < 1 {
		return fmt.Errorf("--seeds %d: need at least 1", *seeds)
	}
	cfg := sim.Config{Protocol: *proto, Replicas: *replicas, Seed: *seed, Faults: fl, Ops: *ops,
		Clients: *clients, Keys: *keys, Mutation: *mutation, SkewMax: *skew, Compaction: comp}
	if err := cfg.Validate(); err != nil { // not as a failure of every seed
		return err
	}
	fmt.Fprintf(stdout, "sim: %s, %d replicas, seeds %d..%d, faults %s, compaction %s, %d ops per seed, %d workers\n",
		cfg.Protocol, cfg.Replicas, *seed, *seed+uint64(*seeds)-1, fl, comp, cfg.Ops, *workers)

	start := time.Now()
	var sum simSummary
	first := 0
	if *trace != "" {
		// The traced seed runs on its own, in this goroutine, writing the trace as it goes.
		res, err := runTraced(cfg, *trace)
		if err != nil {
			return err
		}
		sum.add(stdout, cfg, res, *trace)
		first = 1
	}
	progressEvery := max(1, *seeds/20)
	if first < *seeds {
		c := cfg
		c.Seed = cfg.Seed + uint64(first)
		err = sim.RunSeeds(ctx, c, *seeds-first, *workers, func(r sim.Result) bool {
			sum.add(stdout, cfg, r, "")
			if sum.seeds%progressEvery == 0 && sum.seeds < *seeds {
				el := time.Since(start).Seconds()
				fmt.Fprintf(stdout, "  %d/%d seeds  %d ops checked  %d failed  %.1f seeds/s\n",
					sum.seeds, *seeds, sum.ops, sum.failed, float64(sum.seeds)/el)
			}
			return true
		})
		if err != nil {
			fmt.Fprintf(stdout, "interrupted: %v\n", err)
		}
	}
	el := time.Since(start)
	fmt.Fprintf(stdout, "summary: %d seeds, %d operations checked (%d completed), %d instances committed, %d violations in %d seeds",
		sum.seeds, sum.ops, sum.completed, sum.instances, sum.violations, sum.failed)
	if sum.linUnknown > 0 {
		fmt.Fprintf(stdout, ", %d histories porcupine could not decide in time", sum.linUnknown)
	}
	fmt.Fprintf(stdout, "; %.1fs, %.1f seeds/s\n", el.Seconds(), float64(sum.seeds)/el.Seconds())
	fmt.Fprintf(stdout, "compaction: %d seeds with snapshots, %d snapshots taken, %d sent to peers, %d installed from peers\n",
		sum.compacted, sum.snapshots, sum.snapSent, sum.installs)
	if sum.failed > 0 {
		return exitError{code: 1}
	}
	if err != nil {
		return exitError{code: 130}
	}
	return nil
}

func runTraced(cfg sim.Config, path string) (sim.Result, error) {
	f, err := os.Create(path)
	if err != nil {
		return sim.Result{}, err
	}
	w := bufio.NewWriter(f)
	cfg.Trace = w
	res := sim.Run(cfg)
	if err := w.Flush(); err != nil {
		f.Close()
		return res, err
	}
	if err := f.Close(); err != nil {
		return res, err
	}
	if res.Lin != nil && res.Lin.Illegal() {
		if err := res.Lin.Visualize(path + ".html"); err != nil {
			return res, err
		}
	}
	return res, nil
}

type simSummary struct {
	seeds, ops, completed, instances int
	violations, failed, linUnknown   int
	compacted, snapshots             int
	snapSent, installs               int
}

func (s *simSummary) add(w io.Writer, cfg sim.Config, r sim.Result, traced string) {
	s.seeds++
	s.ops += r.Ops
	s.completed += r.Completed
	s.instances += r.Instances
	if r.Snapshots > 0 {
		s.compacted++
	}
	s.snapshots += r.Snapshots
	s.snapSent += r.SnapshotsSent
	s.installs += r.Installs
	if r.LinUnknown() {
		s.linUnknown++
	}
	if !r.Failed() {
		return
	}
	s.violations += len(r.Violations)
	s.failed++
	if s.failed > maxReported {
		return
	}
	c := cfg
	c.Seed = r.Seed
	for i, v := range r.Violations {
		detail := v.Detail
		if i == 0 {
			fmt.Fprintf(w, "FAIL seed %d: %s violation at %s: %s\n", r.Seed, v.Property, time.Duration(v.Time), firstLine(detail))
		} else {
			fmt.Fprintf(w, "     seed %d also: %s violation: %s\n", r.Seed, v.Property, firstLine(detail))
		}
	}
	fmt.Fprintf(w, "     faults drawn: %s; compaction %s\n", r.Swarm, r.Compaction)
	if traced != "" {
		fmt.Fprintf(w, "     trace: %s", traced)
		if r.Lin != nil && r.Lin.Illegal() {
			fmt.Fprintf(w, " (porcupine visualization: %s.html)", traced)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "     replay: %s\n", sim.ReplayCommand(c, fmt.Sprintf("sim-%s-%d.trace", cfg.Protocol, r.Seed)))
	if s.failed == maxReported {
		fmt.Fprintf(w, "     (further failures are counted but not printed)\n")
	}
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " ..."
	}
	return s
}
