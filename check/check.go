// Package check judges a run of a replicated key-value store: is the client history
// linearizable (porcupine, with a KV model partitioned by key), do the replicas agree on
// every committed instance and on the order of conflicting commands, is every acknowledged
// write still there after crash-restarts, and did every operation complete once faults
// healed.
//
// The checkers are independent of the simulator so that tests (and the real runtime) can
// feed them histories and commit/execute streams from anywhere.
package check

import "fmt"

// Property names one correctness property. They appear in reports and in the exit message
// of `parliament sim`, so their spelling is stable.
type Property string

const (
	// Linearizability: the client history has a linearization consistent with a sequential
	// key-value store (Herlihy & Wing 1990).
	Linearizability Property = "linearizability"
	// Agreement: no two replicas commit different commands, deps or seq for one instance
	// (EPaxos) or slot (Multi-Paxos).
	Agreement Property = "agreement"
	// Order: conflicting commands execute in the same relative order at every replica
	// (EPaxos §4.2, Theorem "execution consistency").
	Order Property = "order"
	// Durability: an acknowledged write is executed by every replica once faults heal, even
	// across crash-restarts (only what an engine persisted survives a crash).
	Durability Property = "durability"
	// Convergence: once every replica has executed every committed instance, their state
	// machines are identical (snapshots, their installation and restarts from them
	// included).
	Convergence Property = "convergence"
	// Liveness: after faults heal, every client operation completes within a bound of
	// virtual time.
	Liveness Property = "liveness"
	// Contract: an engine broke the runtime contract of package protocol, for example a
	// MsgSnapshot or LiveRecords naming a frontier no state-machine snapshot has.
	Contract Property = "contract"
	// Panic: an engine (or the executor, or the state machine) panicked, which means it
	// detected a broken invariant.
	Panic Property = "panic"
)

// Violation is one broken property, with enough detail to start debugging from the trace.
type Violation struct {
	Property Property
	Time     int64 // virtual nanoseconds at which it was detected (0 when checked after the run)
	Detail   string
}

func (v *Violation) Error() string {
	return fmt.Sprintf("%s violation: %s", v.Property, v.Detail)
}
