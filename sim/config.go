package sim

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/parliament-lab/parliament/kv"
	"github.com/parliament-lab/parliament/protocol"
)

// Protocol names accepted by Config.Protocol.
const (
	EPaxos     = "epaxos"
	MultiPaxos = "multipaxos"
)

// Faults selects which kinds of fault a run may inject. Which of the selected kinds are
// active in one seed, and how often they strike, is drawn from that seed (swarm testing:
// Groce et al., ISSTA'12), so that rare mixes (say, duplication without loss) happen too.
type Faults struct {
	Loss      bool // messages dropped
	Dup       bool // messages delivered twice
	Reorder   bool // per-link FIFO broken by random extra delay
	Delay     bool // rare delay spikes of hundreds of milliseconds to seconds
	Partition bool // symmetric and one-way partitions that heal
	Crash     bool // crash-restart: only persisted records survive
	Skew      bool // each replica ticks at its own rate
}

// AllFaults enables every kind of fault.
func AllFaults() Faults {
	return Faults{Loss: true, Dup: true, Reorder: true, Delay: true, Partition: true, Crash: true, Skew: true}
}

var faultNames = []struct {
	name string
	get  func(*Faults) *bool
}{
	{"loss", func(f *Faults) *bool { return &f.Loss }},
	{"dup", func(f *Faults) *bool { return &f.Dup }},
	{"reorder", func(f *Faults) *bool { return &f.Reorder }},
	{"delay", func(f *Faults) *bool { return &f.Delay }},
	{"partition", func(f *Faults) *bool { return &f.Partition }},
	{"crash", func(f *Faults) *bool { return &f.Crash }},
	{"skew", func(f *Faults) *bool { return &f.Skew }},
}

// FaultNames lists the names ParseFaults accepts besides "all" and "none".
func FaultNames() []string {
	out := make([]string, len(faultNames))
	for i, f := range faultNames {
		out[i] = f.name
	}
	return out
}

// ParseFaults reads a comma-separated list of fault names, "all" or "none".
func ParseFaults(s string) (Faults, error) {
	var f Faults
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		switch part {
		case "", "none":
			continue
		case "all":
			f = AllFaults()
			continue
		}
		found := false
		for _, fn := range faultNames {
			if fn.name == part {
				*fn.get(&f) = true
				found = true
			}
		}
		if !found {
			return Faults{}, fmt.Errorf("sim: unknown fault %q (want all, none or a list of %s)",
				part, strings.Join(FaultNames(), ", "))
		}
	}
	return f, nil
}

// String is the canonical form ParseFaults reads back: "all", "none" or a list.
func (f Faults) String() string {
	if f == AllFaults() {
		return "all"
	}
	var names []string
	for _, fn := range faultNames {
		if *fn.get(&f) {
			names = append(names, fn.name)
		}
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ",")
}

// Defaults used when a Config field is zero.
const (
	DefaultOps           = 60
	DefaultTick          = 10 * time.Millisecond
	DefaultLivenessBound = 30 * time.Second
	DefaultMaxEvents     = 4_000_000
	// DefaultSkew lets ticks run from 0.8x to 1.25x. Wider skews shrink some replica's
	// election timeout below the WAN round trip to a majority; see docs/simulation.md.
	DefaultSkew = 0.25
)

// Compaction selects whether replicas take state-machine snapshots and let their engines
// forget what the snapshots cover (protocol.Compactor).
type Compaction uint8

const (
	// CompactSwarm draws per seed: off in one seed of five; otherwise a snapshot period
	// and, in most seeds, a tiny engine retention so that peers catch up by snapshot.
	CompactSwarm Compaction = iota
	CompactOff              // never snapshot: engines keep every instance, restarts replay the whole log
	CompactOn               // snapshot in every seed (period and retention still drawn)
)

var compactionNames = []string{"swarm", "off", "on"}

func (c Compaction) String() string {
	if int(c) < len(compactionNames) {
		return compactionNames[c]
	}
	return fmt.Sprintf("compaction(%d)", uint8(c))
}

// ParseCompaction reads "swarm", "off" or "on".
func ParseCompaction(s string) (Compaction, error) {
	for i, n := range compactionNames {
		if s == n {
			return Compaction(i), nil
		}
	}
	return 0, fmt.Errorf("sim: unknown compaction %q (want swarm, off or on)", s)
}

// EngineFactory builds one replica's engine. The simulator calls it at start and again at
// every restart, with Records set to what the previous incarnation persisted.
type EngineFactory func(cfg protocol.Config) (protocol.Engine, error)

// Config describes one simulated run. The zero value of every optional field picks a
// default or, for Clients and Keys, draws the value from the seed.
type Config struct {
	Protocol string // EPaxos or MultiPaxos
	Replicas int    // cluster size (3 and 5 are the paper's)
	Seed     uint64 // the master seed: everything in the run derives from it
	Faults   Faults
	Ops      int // client operations before the final reads (default DefaultOps)
	Clients  int // concurrent clients; 0 draws 2..4 from the seed
	Keys     int // size of the key set; 0 draws 2..5 from the seed (few keys: many conflicts)
	// Mutation names a test-only engine option that breaks safety on purpose (see
	// Mutations); "" runs the real protocol.
	Mutation string
	// NewEngine overrides the engine construction (tests); nil uses Protocol and Mutation
	// (with the seed's compaction knobs).
	NewEngine EngineFactory
	// Compaction says whether replicas snapshot their state machines and truncate
	// (protocol.Compactor): CompactSwarm (the default) draws it per seed, with its period
	// and the engines' retention, and leaves it off in some seeds.
	Compaction Compaction

	Tick time.Duration // virtual duration of a tick before skew (default 10ms, as replica/)
	// SkewMax bounds the tick-rate skew (fault "skew"): each replica's tick lasts Tick
	// times a factor drawn between 1/(1+SkewMax) and 1+SkewMax. Default DefaultSkew.
	SkewMax       float64
	LivenessBound time.Duration // after the heal, every operation must complete within it (default 30s virtual)
	MaxEvents     int           // hard cap on simulated events: a run that exceeds it is a liveness failure

	// Trace, when set, receives a readable log of every event of the run. Two runs of one
	// seed write identical bytes.
	Trace io.Writer

	// tamper, in tests, changes the last replica's store just before the final state
	// comparison (which must then fail).
	tamper func(st *kv.Store)
}

// Validate reports the first bad field, as a run would (Run reports it as a failed seed):
// callers check a configuration once before running many seeds of it.
// It also builds one engine of the protocol, which refuses what the protocol cannot run
// (EPaxos on an even number of replicas).
func (c *Config) Validate() error {
	out, err := c.withDefaults()
	if err != nil {
		return err
	}
	newEngine := out.NewEngine
	if newEngine == nil {
		if newEngine, err = Engine(out.Protocol, out.Mutation); err != nil {
			return err
		}
	}
	ids := make([]protocol.ReplicaID, out.Replicas)
	for i := range ids {
		ids[i] = protocol.ReplicaID(i + 1)
	}
	if _, err := newEngine(protocol.Config{ID: 1, Replicas: ids}); err != nil {
		return fmt.Errorf("sim: %d replicas: %w", out.Replicas, err)
	}
	return nil
}

func (c *Config) withDefaults() (Config, error) {
	out := *c
	if out.Protocol != EPaxos && out.Protocol != MultiPaxos && out.NewEngine == nil {
		return out, fmt.Errorf("sim: unknown protocol %q (want %s or %s)", out.Protocol, EPaxos, MultiPaxos)
	}
	if out.Replicas < 1 || out.Replicas > 64 {
		return out, fmt.Errorf("sim: Replicas is %d, want 1..64", out.Replicas)
	}
	if out.Ops == 0 {
		out.Ops = DefaultOps
	}
	if out.Ops < 0 {
		return out, fmt.Errorf("sim: Ops is %d, must not be negative", out.Ops)
	}
	if out.Clients < 0 || out.Keys < 0 {
		return out, fmt.Errorf("sim: Clients (%d) and Keys (%d) must not be negative", out.Clients, out.Keys)
	}
	if out.Tick == 0 {
		out.Tick = DefaultTick
	}
	if out.SkewMax == 0 {
		out.SkewMax = DefaultSkew
	}
	if out.SkewMax < 0 || out.SkewMax > 10 {
		return out, fmt.Errorf("sim: SkewMax is %v, want 0..10", out.SkewMax)
	}
	if out.LivenessBound == 0 {
		out.LivenessBound = DefaultLivenessBound
	}
	if out.MaxEvents == 0 {
		out.MaxEvents = DefaultMaxEvents
	}
	if out.NewEngine == nil {
		// Validate the protocol and the mutation now; the factory is built per seed, with
		// the seed's compaction knobs (start).
		if _, err := Engine(out.Protocol, out.Mutation); err != nil {
			return out, err
		}
	}
	if out.Compaction > CompactOn {
		return out, fmt.Errorf("sim: unknown Compaction %d", out.Compaction)
	}
	return out, nil
}

// ReplayCommand is the exact command line that replays the run of cfg, writing its trace
// to traceFile (and, on a linearizability failure, porcupine's visualization next to it).
func ReplayCommand(cfg Config, traceFile string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "parliament sim --protocol %s --replicas %d --seeds 1 --seed %d --faults %s",
		cfg.Protocol, cfg.Replicas, cfg.Seed, cfg.Faults)
	if cfg.Ops != 0 {
		fmt.Fprintf(&b, " --ops %d", cfg.Ops)
	}
	if cfg.Clients != 0 {
		fmt.Fprintf(&b, " --clients %d", cfg.Clients)
	}
	if cfg.Keys != 0 {
		fmt.Fprintf(&b, " --keys %d", cfg.Keys)
	}
	if cfg.SkewMax != 0 && cfg.SkewMax != DefaultSkew {
		fmt.Fprintf(&b, " --skew %g", cfg.SkewMax)
	}
	if cfg.Compaction != CompactSwarm {
		fmt.Fprintf(&b, " --compaction %s", cfg.Compaction)
	}
	if cfg.Mutation != "" {
		fmt.Fprintf(&b, " --mutation %s", cfg.Mutation)
	}
	if traceFile != "" {
		fmt.Fprintf(&b, " --trace %s", traceFile)
	}
	return b.String()
}

// sortedIDs returns ids in ascending order (the simulator never lets map order leak).
func sortedIDs(ids []protocol.InstanceID) []protocol.InstanceID {
	sort.Slice(ids, func(i, j int) bool {
		if ids[i].Replica != ids[j].Replica {
			return ids[i].Replica < ids[j].Replica
		}
		return ids[i].Num < ids[j].Num
	})
	return ids
}
