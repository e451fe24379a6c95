package sim

import (
	"bytes"
	"context"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/parliament-lab/parliament/check"
	"github.com/parliament-lab/parliament/kv"
	"github.com/parliament-lab/parliament/protocol"
)

// seedCount is how many seeds the seed sweeps run per protocol and cluster size:
// PARLIAMENT_SIM_SEEDS when set (the long run of docs/simulation.md), 100 by default
// (200 per protocol across N=3 and N=5), 10 with -short.
func seedCount(t *testing.T) int {
	if s := os.Getenv("PARLIAMENT_SIM_SEEDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("PARLIAMENT_SIM_SEEDS=%q: want a positive integer", s)
		}
		return n
	}
	if testing.Short() {
		return 10
	}
	return 100
}

// TestSeeds is the CI sweep: every seed with every fault must pass every check.
func TestSeeds(t *testing.T) {
	n := seedCount(t)
	for _, proto := range []string{MultiPaxos, EPaxos} {
		for _, replicas := range []int{3, 5} {
			t.Run(proto+"/n="+strconv.Itoa(replicas), func(t *testing.T) {
				cfg := Config{Protocol: proto, Replicas: replicas, Seed: 1, Faults: AllFaults()}
				var ops, completed, crashes, parts int
				var snaps, sent, installs, restores, compacted int
				var dropped uint64
				failures := 0
				err := RunSeeds(context.Background(), cfg, n, 0, func(r Result) bool {
					ops += r.Ops
					completed += r.Completed
					crashes += r.Crashes
					parts += r.Partitions
					dropped += r.Dropped
					snaps += r.Snapshots
					sent += r.SnapshotsSent
					installs += r.Installs
					restores += r.Restores
					if r.Snapshots > 0 {
						compacted++
					}
					if r.Failed() {
						failures++
						c := cfg
						c.Seed = r.Seed
						t.Errorf("seed %d: %v\n  faults: %s\n  replay: %s", r.Seed, r.Violations[0].Error(), r.Swarm,
							ReplayCommand(c, "seed.trace"))
					}
					return failures < 5
				})
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("%d seeds: %d operations checked (%d completed), %d crashes, %d partitions, %d messages dropped",
					n, ops, completed, crashes, parts, dropped)
				t.Logf("compaction in %d seeds: %d snapshots, %d sent to peers, %d installed, %d restarts from a snapshot",
					compacted, snaps, sent, installs, restores)
				if n >= 10 && (crashes == 0 || parts == 0 || dropped == 0) {
					t.Errorf("faults were not injected: %d crashes, %d partitions, %d drops", crashes, parts, dropped)
				}
				if n >= 50 && (compacted == 0 || compacted == n || installs == 0 || restores == 0) {
					t.Errorf("compaction was not exercised: on in %d of %d seeds, %d installs, %d restores", compacted, n, installs, restores)
				}
			})
		}
	}
}

// TestSameSeedSameTrace replays seeds twice and compares the traces byte for byte.
func TestSameSeedSameTrace(t *testing.T) {
	for _, proto := range []string{MultiPaxos, EPaxos} {
		for _, seed := range []uint64{3, 7} {
			var a, b bytes.Buffer
			cfg := Config{Protocol: proto, Replicas: 5, Seed: seed, Faults: AllFaults(), Compaction: CompactOn, Trace: &a}
			ra := Run(cfg)
			cfg.Trace = &b
			rb := Run(cfg)
			if a.Len() < 10_000 {
				t.Fatalf("%s seed %d: trace of %d bytes is implausibly short", proto, seed, a.Len())
			}
			if !bytes.Contains(a.Bytes(), []byte(" snapshot #")) {
				t.Fatalf("%s seed %d: compaction on, but the trace shows no snapshot", proto, seed)
			}
			if !bytes.Equal(a.Bytes(), b.Bytes()) {
				t.Fatalf("%s seed %d: two runs wrote different traces (%d and %d bytes), first difference at byte %d",
					proto, seed, a.Len(), b.Len(), firstDiff(a.Bytes(), b.Bytes()))
			}
			if ra.Events != rb.Events || ra.Ops != rb.Ops || ra.Messages != rb.Messages {
				t.Fatalf("%s seed %d: results differ: %+v vs %+v", proto, seed, ra, rb)
			}
			// Running without a trace must not change the run.
			cfg.Trace = nil
			if rc := Run(cfg); rc.Events != ra.Events || rc.Messages != ra.Messages {
				t.Fatalf("%s seed %d: tracing changed the run (%d vs %d events)", proto, seed, rc.Events, ra.Events)
			}
			var c bytes.Buffer
			cfg.Seed, cfg.Trace = seed+100, &c
			Run(cfg)
			if bytes.Equal(a.Bytes(), c.Bytes()) {
				t.Fatalf("%s: seeds %d and %d wrote the same trace", proto, seed, seed+100)
			}
		}
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// mutationBounds are the seeds within which each mutation must be caught (N=3 and N=5,
// all faults, seeds from 1). The numbers measured when this test was written are in
// docs/simulation.md; the bounds leave room for engine changes that shift schedules.
var mutationBounds = map[string]int{
	"ignore-promised-values":   40,
	"fast-quorum-minus-one":    20,
	"recovery-ignore-accepted": 300,
	"install-drops-executed":   60,
	"install-keeps-store":      60,
}

// TestMutationsCaught proves the checkers can fail: each engine mutation that breaks
// safety on purpose is caught by a safety check within a bounded number of seeds.
func TestMutationsCaught(t *testing.T) {
	for _, name := range MutationNames() {
		m := Mutations[name]
		for _, replicas := range []int{3, 5} {
			t.Run(name+"/n="+strconv.Itoa(replicas), func(t *testing.T) {
				bound := mutationBounds[name]
				cfg := Config{Protocol: m.Protocol, Replicas: replicas, Seed: 1, Faults: AllFaults(), Mutation: name}
				var caught *Result
				tried := 0
				err := RunSeeds(context.Background(), cfg, bound, 0, func(r Result) bool {
					tried++
					for _, v := range r.Violations {
						if v.Property != check.Liveness && v.Property != check.Panic {
							caught = &r
							return false
						}
					}
					return true
				})
				if err != nil {
					t.Fatal(err)
				}
				if caught == nil {
					t.Fatalf("mutation %s (%s) not caught in %d seeds", name, m.About, bound)
				}
				t.Logf("caught at seed %d (after %d seeds): %s", caught.Seed, tried, firstLineOf(caught.Violations[0].Error()))
			})
		}
	}
}

func firstLineOf(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	if len(s) > 300 {
		return s[:300] + "..."
	}
	return s
}

// amnesiac forgets everything at a restart: the simulator must notice that a replica
// which made promises and votes before a crash came back without them.
func amnesiac(proto string) EngineFactory {
	inner, err := Engine(proto, "")
	if err != nil {
		panic(err)
	}
	return func(pc protocol.Config) (protocol.Engine, error) {
		pc.Records = nil
		return inner(pc)
	}
}

// TestAmnesiaCaught checks the crash model: an engine restarted without its records
// breaks safety (a vote or promise is forgotten, a committed write is lost), and some
// seed with crashes shows it.
func TestAmnesiaCaught(t *testing.T) {
	for _, proto := range []string{MultiPaxos, EPaxos} {
		cfg := Config{Protocol: proto, Replicas: 3, Seed: 1, Faults: Faults{Crash: true, Loss: true, Reorder: true},
			NewEngine: amnesiac(proto)}
		var caught *Result
		err := RunSeeds(context.Background(), cfg, 100, 0, func(r Result) bool {
			if r.Failed() && r.Violations[0].Property != check.Liveness {
				caught = &r
				return false
			}
			return true
		})
		if err != nil {
			t.Fatal(err)
		}
		if caught == nil {
			t.Fatalf("%s: an engine that forgets its records at restart went unnoticed in 100 seeds", proto)
		}
		t.Logf("%s: amnesia caught at seed %d: %s", proto, caught.Seed, firstLineOf(caught.Violations[0].Error()))
	}
}

// stalling wraps an engine that stops processing messages after a while (a replica
// that is "up" but deaf): with every replica deaf, nothing completes after the heal.
type stalling struct {
	protocol.Engine
	steps int
}

func (s *stalling) Step(m protocol.Message) {
	s.steps++
	if s.steps > 200 {
		return
	}
	s.Engine.Step(m)
}

func TestLivenessCaught(t *testing.T) {
	inner, _ := Engine(MultiPaxos, "")
	cfg := Config{Protocol: MultiPaxos, Replicas: 3, Seed: 5, Faults: Faults{},
		NewEngine: func(pc protocol.Config) (protocol.Engine, error) {
			e, err := inner(pc)
			return &stalling{Engine: e}, err
		}}
	r := Run(cfg)
	if !r.Failed() || r.Violations[0].Property != check.Liveness {
		t.Fatalf("deaf replicas: violations = %v, want liveness", r.Violations)
	}
	if !strings.Contains(r.Violations[0].Detail, "never completed") {
		t.Fatalf("liveness detail should name the stuck operations: %s", r.Violations[0].Detail)
	}
}

// exploding panics on its 300th message, like an engine whose invariant check fires.
type exploding struct {
	protocol.Engine
	steps int
}

func (e *exploding) Step(m protocol.Message) {
	e.steps++
	if e.steps == 300 {
		panic("invariant broken: replica 2 inst 0.7 ballot 1.2")
	}
	e.Engine.Step(m)
}

func TestPanicReported(t *testing.T) {
	inner, _ := Engine(MultiPaxos, "")
	var trace bytes.Buffer
	cfg := Config{Protocol: MultiPaxos, Replicas: 3, Seed: 1, Trace: &trace,
		NewEngine: func(pc protocol.Config) (protocol.Engine, error) {
			e, err := inner(pc)
			return &exploding{Engine: e}, err
		}}
	r := Run(cfg)
	if !r.Failed() || r.Violations[0].Property != check.Panic ||
		!strings.Contains(r.Violations[0].Detail, "invariant broken") {
		t.Fatalf("violations = %v, want the engine's panic", r.Violations)
	}
	if !strings.Contains(trace.String(), "VIOLATION panic") {
		t.Fatal("the trace does not record the panic")
	}
}

func TestNoFaultsNoDrops(t *testing.T) {
	for _, proto := range []string{MultiPaxos, EPaxos} {
		r := Run(Config{Protocol: proto, Replicas: 5, Seed: 11})
		if r.Failed() || r.Dropped != 0 || r.Crashes != 0 || r.Partitions != 0 || r.Swarm != "none" {
			t.Fatalf("%s without faults: %+v", proto, r)
		}
		// The workload plus the final reads (every key at each of the 5 replicas).
		if r.Completed != r.Ops || r.Ops < DefaultOps+5*2 {
			t.Fatalf("%s: %d of %d operations completed", proto, r.Completed, r.Ops)
		}
	}
}

func TestParseFaults(t *testing.T) {
	tests := []struct {
		in, canon string
		ok        bool
	}{
		{"all", "all", true},
		{"none", "none", true},
		{"", "none", true},
		{"loss,crash", "loss,crash", true},
		{"crash, loss", "loss,crash", true},
		{"loss,dup,reorder,delay,partition,crash,skew", "all", true},
		{"loss,bogus", "", false},
	}
	for _, tt := range tests {
		f, err := ParseFaults(tt.in)
		if (err == nil) != tt.ok {
			t.Errorf("ParseFaults(%q) error = %v, want ok=%v", tt.in, err, tt.ok)
			continue
		}
		if tt.ok && f.String() != tt.canon {
			t.Errorf("ParseFaults(%q) = %s, want %s", tt.in, f, tt.canon)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	for _, cfg := range []Config{
		{Protocol: "raft", Replicas: 3},
		{Protocol: EPaxos, Replicas: 0},
		{Protocol: EPaxos, Replicas: 3, Mutation: "ignore-promised-values"},
		{Protocol: EPaxos, Replicas: 3, Mutation: "nope"},
		{Protocol: EPaxos, Replicas: 3, Ops: -1},
	} {
		if r := Run(cfg); !r.Failed() {
			t.Errorf("Run(%+v) passed; want a configuration error", cfg)
		}
	}
}

func TestReplayCommand(t *testing.T) {
	cfg := Config{Protocol: EPaxos, Replicas: 5, Seed: 42, Faults: Faults{Loss: true, Crash: true},
		Ops: 80, Mutation: "fast-quorum-minus-one"}
	got := ReplayCommand(cfg, "x.trace")
	want := "parliament sim --protocol epaxos --replicas 5 --seeds 1 --seed 42 --faults loss,crash --ops 80 --mutation fast-quorum-minus-one --trace x.trace"
	if got != want {
		t.Fatalf("ReplayCommand = %q\nwant %q", got, want)
	}
}

func TestRunSeedsOrderAndStop(t *testing.T) {
	cfg := Config{Protocol: EPaxos, Replicas: 3, Seed: 10, Ops: 10}
	var seen []uint64
	err := RunSeeds(context.Background(), cfg, 12, 3, func(r Result) bool {
		seen = append(seen, r.Seed)
		return len(seen) < 7
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != 7 {
		t.Fatalf("each returned false after 7 results, got %d", len(seen))
	}
	for i, s := range seen {
		if s != 10+uint64(i) {
			t.Fatalf("results out of seed order: %v", seen)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := RunSeeds(ctx, cfg, 50, 2, func(Result) bool { return true }); err == nil {
		t.Fatal("RunSeeds with a cancelled context returned nil")
	}
}

// TestRegressionMultiPaxosElectionLivelock replays the seed that found a Multi-Paxos
// liveness bug: with ticks skewed down to 0.625x (--skew 0.6), replica 4 (IE) draws
// election timeouts of 65-130 ms, below its round trip to a majority (~130 ms to OR). It
// campaigns, times out before the promises arrive, campaigns again with a higher ballot,
// forever; its Prepares reset every other replica's election timer, so nobody else takes
// over and no command completes after the heal. Fix: back off the candidate's timeout
// after each failed campaign.
//
//	parliament sim --protocol multipaxos --replicas 5 --seeds 1 --seed 41 --faults all --skew 0.6 --trace seed41.trace
func TestRegressionMultiPaxosElectionLivelock(t *testing.T) {
	for _, seed := range []uint64{31, 41, 42, 49, 52, 58, 93} {
		r := Run(Config{Protocol: MultiPaxos, Replicas: 5, Seed: seed, Faults: AllFaults(), SkewMax: 0.6})
		if r.Failed() {
			t.Errorf("seed %d: %v", seed, r.Violations[0].Error())
		}
	}
}

// TestCompaction runs seeds with truncation in every one: replicas snapshot, compact and
// truncate their records, lagging replicas install their peers' snapshots, and restarts
// restore the state machine from a snapshot; every seed must pass every check, the final
// state comparison included.
func TestCompaction(t *testing.T) {
	seeds := 40
	if testing.Short() {
		seeds = 10
	}
	for _, proto := range []string{MultiPaxos, EPaxos} {
		cfg := Config{Protocol: proto, Replicas: 3, Seed: 1000, Faults: AllFaults(), Compaction: CompactOn}
		var snaps, installs, restores, sent int
		err := RunSeeds(context.Background(), cfg, seeds, 0, func(r Result) bool {
			if r.Failed() {
				c := cfg
				c.Seed = r.Seed
				t.Errorf("%s seed %d: %v\n  compaction %s\n  replay: %s", proto, r.Seed, r.Violations[0].Error(), r.Compaction,
					ReplayCommand(c, "seed.trace"))
			}
			if r.Compaction == "off" || r.Snapshots == 0 {
				t.Errorf("%s seed %d: compaction %q, %d snapshots: want compaction in every seed", proto, r.Seed, r.Compaction, r.Snapshots)
			}
			snaps += r.Snapshots
			installs += r.Installs
			restores += r.Restores
			sent += r.SnapshotsSent
			return true
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %d seeds, %d snapshots, %d sent, %d installed, %d restarts from a snapshot", proto, seeds, snaps, sent, installs, restores)
		if installs == 0 || restores == 0 || sent < installs {
			t.Errorf("%s: %d installs, %d restores, %d sent: snapshot transfer and restart from a snapshot were not exercised",
				proto, installs, restores, sent)
		}
	}
}

// TestCompactionOff checks the knob: without compaction no replica snapshots, and the
// fault schedule and workload of a seed do not depend on it (compaction draws from its
// own stream).
func TestCompactionOff(t *testing.T) {
	for _, proto := range []string{MultiPaxos, EPaxos} {
		off := Run(Config{Protocol: proto, Replicas: 3, Seed: 4, Faults: AllFaults(), Compaction: CompactOff})
		on := Run(Config{Protocol: proto, Replicas: 3, Seed: 4, Faults: AllFaults(), Compaction: CompactOn})
		if off.Failed() || on.Failed() {
			t.Fatalf("%s: violations off=%v on=%v", proto, off.Violations, on.Violations)
		}
		if off.Snapshots != 0 || off.Installs != 0 || off.Compaction != "off" {
			t.Fatalf("%s compaction off: %d snapshots, %d installs, plan %q", proto, off.Snapshots, off.Installs, off.Compaction)
		}
		if on.Snapshots == 0 {
			t.Fatalf("%s compaction on: no snapshot", proto)
		}
		if off.Swarm != on.Swarm || off.HealTime != on.HealTime || off.Ops != on.Ops {
			t.Fatalf("%s: compaction changed the fault draw or the workload: %q/%v/%d vs %q/%v/%d",
				proto, off.Swarm, off.HealTime, off.Ops, on.Swarm, on.HealTime, on.Ops)
		}
	}
}

// TestConvergenceCaught proves the final state comparison can fail: one replica's store
// gains a key just before it.
func TestConvergenceCaught(t *testing.T) {
	for _, proto := range []string{MultiPaxos, EPaxos} {
		cfg := Config{Protocol: proto, Replicas: 3, Seed: 2, Faults: AllFaults(),
			tamper: func(st *kv.Store) {
				st.Apply(&protocol.Command{Op: protocol.OpPut, Key: []byte("k0"), Value: []byte("forged")})
			}}
		r := Run(cfg)
		if !r.Failed() || r.Violations[0].Property != check.Convergence || !strings.Contains(r.Violations[0].Detail, "forged") {
			t.Fatalf("%s: violations = %v, want convergence naming the forged value", proto, r.Violations)
		}
	}
}

// TestRegressionEPaxosLatePrepareOKAccepted replays the seed that found an EPaxos
// recovery bug (with compaction on; the bug itself is in recovery). Instance 4.5 commits
// on the fast path at replica 4 (votes of 3 and 5 at ballot 0). Replica 5 recovers it,
// validates the candidate and accepts it at ballot 1.5. Replica 3 recovers it too at
// ballot 2.3: its first F+1 EPrepareOKs (1, 2, itself) show one ballot-0 vote, so it
// validates; then replica 5's late EPrepareOK arrives, "accepted at 1.5" with the
// candidate's own value. latePrepareOK counts only "pre-accepted at ballot 0 with the
// candidate's attributes" as a possible vote and marks replica 5 as not having voted, so
// cannotBeFast concludes the candidate was not fast-committed and Phase 1 restarts: 4.5
// commits at replica 3 with other deps and seq (agreement). Fix (epaxos/recovery.go,
// latePrepareOK): a reply carrying the candidate's attributes at a recovery ballot is not
// evidence against a fast commit (leave it pvUnknown); see docs/simulation.md.
//
//	parliament sim --protocol epaxos --replicas 5 --seeds 1 --seed 2601 --faults all --trace seed2601.trace
func TestRegressionEPaxosLatePrepareOKAccepted(t *testing.T) {
	r := Run(Config{Protocol: EPaxos, Replicas: 5, Seed: 2601, Faults: AllFaults()})
	if r.Failed() {
		t.Fatalf("seed 2601: %v", r.Violations[0].Error())
	}
}

// TestRegressionEPaxosRecoveryLiveness replays seeds (30,000-seed sweeps of both sizes,
// compaction drawn with tiny retention) whose operations never completed after the heal:
//   - 103675, 105214, 114960, 117956 (N=3) and 107881, 127819 (N=5): an instance's
//     outcome was known only to replicas that had executed and forgotten it; they
//     answered its recovery with snapshots the recoverers could not install (each side
//     ahead in another row), and validation never gathered F+1 answers. A snapshot
//     frontier covering the instance now tells the recovery it was committed, so its
//     fast-path candidate is accepted without validation (epaxos learnExecuted).
//   - 108009 (N=5): replicas whose executors were blocked on one instance suspected it
//     every period and kept preempting each other's recoveries. Suspect now defers to a
//     recovery under way, and a refused recoverer draws a new delay.
func TestRegressionEPaxosRecoveryLiveness(t *testing.T) {
	for _, c := range []struct {
		n    int
		seed uint64
	}{{3, 103675}, {3, 105214}, {3, 114960}, {3, 117956}, {5, 107881}, {5, 108009}, {5, 127819}} {
		r := Run(Config{Protocol: EPaxos, Replicas: c.n, Seed: c.seed, Faults: AllFaults()})
		if r.Failed() {
			t.Errorf("N=%d seed %d: %v", c.n, c.seed, r.Violations[0].Error())
		}
	}
}
