package epaxos

import (
	"fmt"

	"github.com/parliament-lab/parliament/protocol"
)

// Config configures one EPaxos replica. Zero knobs take the values of DefaultConfig.
type Config struct {
	protocol.Config

	// Thrifty sends PreAccept and Accept only to the replicas needed for a quorum,
	// closest first by LatencyRank, and widens to every replica after ThriftyWidenTicks
	// without enough replies (EPaxos paper, §4.4 "thrifty"). Default false: send to all.
	Thrifty bool
	// RecoveryTicks is how long an instance known here may stay uncommitted before this
	// replica runs Explicit Prepare on it (a per-replica seeded jitter of up to half of it
	// is added so that replicas do not duel). Default 50.
	RecoveryTicks int
	// ThriftyWidenTicks is how long the coordinator waits for a fast quorum: a thrifty
	// coordinator then widens to all replicas, a non-thrifty one (or a widened one) that
	// already holds a majority gives up on the fast path and runs Accept. Default 10.
	ThriftyWidenTicks int
	// RetransmitTicks is the period after which unanswered PreAccept, Accept, EPrepare and
	// EValidate messages are sent again (the transport may drop). Default 10.
	RetransmitTicks int
	// MaxBatch is the largest number of commands in one instance. Default 4096.
	MaxBatch int
	// MaxInFlight bounds the instances this replica leads that are not yet committed;
	// commands proposed beyond it wait (and are then batched together). Bounding the
	// pipeline keeps dependency cycles short under 100% conflict. Default 256.
	MaxInFlight int
	// RetainInstances bounds, per row, how many executed instances this replica keeps
	// beyond its compacted frontier for peers that have not reported executing them
	// (see Compact). A peer that needs a forgotten instance gets a snapshot instead.
	// Default 100000.
	RetainInstances int
	// FrontierTicks is the period at which this replica tells its peers its compacted
	// frontier (an ECommitBatch carrying Deps only), once Compact was called. Default 10.
	FrontierTicks int
	// LatencyRank lists peers closest first, for thrifty quorums. Missing peers rank
	// after listed ones by ID distance; nil means by ID distance from ID.
	LatencyRank []protocol.ReplicaID

	// UnsafeFastQuorumMinusOne commits on the fast path with one reply fewer than the
	// fast quorum. Test-only mutation for the simulator: NEVER set outside tests.
	UnsafeFastQuorumMinusOne bool
	// UnsafeRecoveryIgnoreAccepted makes recovery ignore accepted values reported by
	// EPrepareOK. Test-only mutation for the simulator: NEVER set outside tests.
	UnsafeRecoveryIgnoreAccepted bool
}

// DefaultConfig returns the default knobs; ID and Replicas are left zero.
func DefaultConfig() Config {
	return Config{
		RecoveryTicks:     50,
		ThriftyWidenTicks: 10,
		RetransmitTicks:   10,
		MaxBatch:          4096,
		MaxInFlight:       256,
		RetainInstances:   100000,
		FrontierTicks:     10,
	}
}

func (c *Config) fillDefaults() {
	d := DefaultConfig()
	if c.RecoveryTicks <= 0 {
		c.RecoveryTicks = d.RecoveryTicks
	}
	if c.ThriftyWidenTicks <= 0 {
		c.ThriftyWidenTicks = d.ThriftyWidenTicks
	}
	if c.RetransmitTicks <= 0 {
		c.RetransmitTicks = d.RetransmitTicks
	}
	if c.MaxBatch <= 0 {
		c.MaxBatch = d.MaxBatch
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = d.MaxInFlight
	}
	if c.RetainInstances <= 0 {
		c.RetainInstances = d.RetainInstances
	}
	if c.FrontierTicks <= 0 {
		c.FrontierTicks = d.FrontierTicks
	}
}

// Validate checks the configuration and names the bad field.
func (c *Config) Validate() error {
	if err := c.Config.Validate(); err != nil {
		return fmt.Errorf("epaxos: %w", err)
	}
	n := len(c.Replicas)
	if n < 3 || n%2 == 0 {
		return fmt.Errorf("epaxos: config: Replicas has %d members; EPaxos needs an odd number >= 3", n)
	}
	if c.RecoveryTicks < 0 || c.ThriftyWidenTicks < 0 || c.RetransmitTicks < 0 || c.MaxBatch < 0 || c.MaxInFlight < 0 ||
		c.RetainInstances < 0 || c.FrontierTicks < 0 {
		return fmt.Errorf("epaxos: config: negative knob (RecoveryTicks %d, ThriftyWidenTicks %d, RetransmitTicks %d, MaxBatch %d, MaxInFlight %d, RetainInstances %d, FrontierTicks %d)",
			c.RecoveryTicks, c.ThriftyWidenTicks, c.RetransmitTicks, c.MaxBatch, c.MaxInFlight, c.RetainInstances, c.FrontierTicks)
	}
	for _, r := range c.LatencyRank {
		found := false
		for _, x := range c.Replicas {
			if x == r {
				found = true
			}
		}
		if !found {
			return fmt.Errorf("epaxos: config: LatencyRank names replica %d, not in Replicas %v", r, c.Replicas)
		}
	}
	return nil
}

// MaxFailures returns F for N = 2F+1 replicas.
func MaxFailures(n int) int { return (n - 1) / 2 }

// SlowQuorum returns the classic (Accept, Explicit Prepare) quorum size F+1.
func SlowQuorum(n int) int { return MaxFailures(n) + 1 }

// FastQuorum returns the EPaxos fast quorum size F + ⌊(F+1)/2⌋ for N = 2F+1 replicas,
// the command leader included (EPaxos paper §4.3, "optimized EPaxos"). N=3: 2, N=5: 3,
// N=7: 5, N=9: 6. It is never a plain majority for N >= 7.
func FastQuorum(n int) int {
	f := MaxFailures(n)
	return f + (f+1)/2
}
