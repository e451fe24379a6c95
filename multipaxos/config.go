package multipaxos

import (
	"errors"
	"fmt"
	"slices"

	"github.com/parliament-lab/parliament/protocol"
)

// ErrConfig is wrapped by every error New returns for a bad Config.
var ErrConfig = errors.New("multipaxos: bad config")

// MaxReplicas is the largest cluster the engine supports: vote sets are 64-bit masks.
const MaxReplicas = 64

// Config configures one Multi-Paxos replica. Ticks are logical: the runtime decides how long
// a tick lasts (10 ms by default in replica/).
type Config struct {
	protocol.Config

	// ElectionTicks is the base election timeout. A follower (or candidate) that hears
	// nothing from a leader for a timeout drawn uniformly from [ElectionTicks,
	// 2*ElectionTicks) starts phase 1 with a higher ballot. Default 10.
	ElectionTicks int
	// HeartbeatTicks is the interval between leader heartbeats; it must be below
	// ElectionTicks so that a live leader is never suspected. Default 2. Accepts for slots
	// not yet chosen (and Prepares) are retransmitted every 2*HeartbeatTicks ticks.
	HeartbeatTicks int
	// Window is how many slots above the commit point the leader may have in flight
	// (phase 2 pipelining). Default 64.
	Window int
	// MaxBatch caps the client commands carried by one slot. Default 4096.
	MaxBatch int
	// RetainCmds bounds the committed slots kept in memory for catch-up among those the
	// runtime has compacted (protocol.Compactor): compacted slots are dropped, oldest first,
	// while the committed commands in memory exceed it. Slots no Compact covers are never
	// dropped, so memory stays bounded only if the runtime compacts periodically. A peer
	// that needs slots already dropped gets a snapshot (MsgSnapshot). Default 1<<18.
	RetainCmds int
	// PreferredLeader, when not 0, is the replica that should lead first (the benchmark's
	// --leader SITE): on a fresh start (nothing promised or committed yet) it campaigns
	// after one tick, while the others draw their normal randomized timeouts, so it is
	// reliably the first leader. After that, and after any failure or restart, elections
	// are the normal randomized ones (the preferred replica does not take leadership back).
	PreferredLeader protocol.ReplicaID
	// ProposeTakesOwnership lets the engine keep the slice passed to Propose (and the Cmds
	// of a forwarded MsgForward) instead of copying it: the caller must hand over a slice
	// it will not modify or reuse afterwards (the runtime passes a fresh slice per call).
	// The engine never modifies it either; it may put it, or parts of it, in a slot as is.
	// When false, Propose copies the Command structs. Either way the engine keeps the byte
	// slices inside each Command (Key, Value, Old) without copying: they must not be
	// modified after Propose. DefaultConfig sets it.
	ProposeTakesOwnership bool

	// UnsafeIgnorePromisedValues makes a new leader ignore the values found in phase 1 and
	// propose its own commands (or no-ops) instead. It BREAKS SAFETY on purpose, so that the
	// simulator can prove it detects a violation. Never set it outside tests.
	UnsafeIgnorePromisedValues bool
}

// DefaultConfig returns the default knobs; ID, Replicas and Seed are left zero.
func DefaultConfig() Config {
	return Config{
		ElectionTicks:  10,
		HeartbeatTicks: 2,
		Window:         64,
		MaxBatch:       4096,
		RetainCmds:     1 << 18,

		ProposeTakesOwnership: true,
	}
}

// Validate reports the first bad field, naming it and its value.
func (c *Config) Validate() error {
	if err := c.Config.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if len(c.Replicas) > MaxReplicas {
		return fmt.Errorf("%w: %d replicas, at most %d are supported", ErrConfig, len(c.Replicas), MaxReplicas)
	}
	if c.HeartbeatTicks < 1 {
		return fmt.Errorf("%w: HeartbeatTicks is %d, must be at least 1", ErrConfig, c.HeartbeatTicks)
	}
	if c.ElectionTicks <= c.HeartbeatTicks {
		return fmt.Errorf("%w: ElectionTicks is %d, must be greater than HeartbeatTicks (%d)", ErrConfig, c.ElectionTicks, c.HeartbeatTicks)
	}
	if c.Window < 1 {
		return fmt.Errorf("%w: Window is %d, must be at least 1", ErrConfig, c.Window)
	}
	if c.MaxBatch < 1 {
		return fmt.Errorf("%w: MaxBatch is %d, must be at least 1", ErrConfig, c.MaxBatch)
	}
	if c.PreferredLeader != 0 && !slices.Contains(c.Replicas, c.PreferredLeader) {
		return fmt.Errorf("%w: PreferredLeader is %d, not one of Replicas %v (0 = none)", ErrConfig, c.PreferredLeader, c.Replicas)
	}
	if c.RetainCmds < 0 {
		return fmt.Errorf("%w: RetainCmds is %d, must not be negative", ErrConfig, c.RetainCmds)
	}
	return nil
}
