package sim

import (
	"fmt"
	"sort"
	"strings"

	"github.com/parliament-lab/parliament/epaxos"
	"github.com/parliament-lab/parliament/multipaxos"
	"github.com/parliament-lab/parliament/protocol"
)

// Mutation is a test-only engine option that breaks safety on purpose. The simulator must
// catch every one of them within a bounded number of seeds: a checker that has never
// caught a bug proves nothing.
type Mutation struct {
	Name     string
	Protocol string
	About    string
	apply    func(mp *multipaxos.Config, ep *epaxos.Config)
}

// Mutations of the simulated runtime's truncation (compaction.go), not of an engine.
const (
	mutInstallDropsExecuted = "install-drops-executed"
	mutInstallKeepsStore    = "install-keeps-store"
)

// Mutations lists the known mutations by name.
var Mutations = map[string]Mutation{
	mutInstallDropsExecuted: {
		Name: mutInstallDropsExecuted, Protocol: EPaxos,
		About: "installing a snapshot, the runtime hands the new executor only the committed instances still pending " +
			"above the frontier (as replica/ does), so instances executed here above it but missing from the snapshot are lost",
	},
	mutInstallKeepsStore: {
		Name: mutInstallKeepsStore, Protocol: MultiPaxos,
		About: "installing a snapshot, the runtime restores the executor at the frontier but keeps its old store " +
			"(the snapshot's data is ignored), so the slots it covers never reach the state machine",
	},
	"ignore-promised-values": {
		Name: "ignore-promised-values", Protocol: MultiPaxos,
		About: "a new Multi-Paxos leader proposes its own value over one found in phase 1",
		apply: func(mp *multipaxos.Config, _ *epaxos.Config) { mp.UnsafeIgnorePromisedValues = true },
	},
	"fast-quorum-minus-one": {
		Name: "fast-quorum-minus-one", Protocol: EPaxos,
		About: "EPaxos commits on the fast path with one replica fewer than the fast quorum",
		apply: func(_ *multipaxos.Config, ep *epaxos.Config) { ep.UnsafeFastQuorumMinusOne = true },
	},
	"recovery-ignore-accepted": {
		Name: "recovery-ignore-accepted", Protocol: EPaxos,
		About: "EPaxos recovery ignores an accepted value reported in Prepare replies",
		apply: func(_ *multipaxos.Config, ep *epaxos.Config) { ep.UnsafeRecoveryIgnoreAccepted = true },
	},
}

// MutationNames returns the mutation names, sorted.
func MutationNames() []string {
	names := make([]string, 0, len(Mutations))
	for n := range Mutations {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Engine returns the factory of the named protocol's engine with its default knobs, with
// the named mutation applied ("" for none).
func Engine(proto, mutation string) (EngineFactory, error) {
	return engineWith(proto, mutation, engineKnobs{})
}

// engineKnobs are the engine settings a seed draws (compaction.go).
type engineKnobs struct {
	// retain, when > 0, is the engine's retention of compacted instances: epaxos
	// RetainInstances, multipaxos RetainCmds (retain-1, so that 0 can be drawn). Tiny
	// values make peers catch up by snapshot transfer instead of from memory.
	retain int
}

func engineWith(proto, mutation string, k engineKnobs) (EngineFactory, error) {
	var mut *Mutation
	if mutation != "" {
		m, ok := Mutations[mutation]
		if !ok {
			return nil, fmt.Errorf("sim: unknown mutation %q (want one of %s)", mutation, strings.Join(MutationNames(), ", "))
		}
		if m.Protocol != proto {
			return nil, fmt.Errorf("sim: mutation %s applies to %s, not %s", mutation, m.Protocol, proto)
		}
		mut = &m
	}
	switch proto {
	case MultiPaxos:
		return func(pc protocol.Config) (protocol.Engine, error) {
			c := multipaxos.DefaultConfig()
			c.Config = pc
			if k.retain > 0 {
				c.RetainCmds = k.retain - 1
			}
			if mut != nil && mut.apply != nil {
				mut.apply(&c, nil)
			}
			return multipaxos.New(c)
		}, nil
	case EPaxos:
		return func(pc protocol.Config) (protocol.Engine, error) {
			c := epaxos.DefaultConfig()
			c.Config = pc
			if k.retain > 0 {
				c.RetainInstances = k.retain
			}
			if mut != nil && mut.apply != nil {
				mut.apply(nil, &c)
			}
			return epaxos.New(c)
		}, nil
	}
	return nil, fmt.Errorf("sim: unknown protocol %q (want %s or %s)", proto, EPaxos, MultiPaxos)
}
