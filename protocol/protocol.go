// Package protocol is the vocabulary shared by every part of Parliament: replica and
// instance identifiers, ballots, client commands, the messages the engines exchange, the
// records they ask the runtime to persist, and the Engine contract itself.
//
// Engines (epaxos, multipaxos) are deterministic state machines in the style of
// etcd-io/raft: the runtime, the simulator and the tests feed them client commands, peer
// messages and ticks, and collect what they must do next from Ready. Nothing in this
// package (or in an engine) performs I/O, reads a clock or starts a goroutine.
package protocol

import (
	"bytes"
	"fmt"
	"log/slog"
)

// ReplicaID names a replica. Replicas are numbered 1..N; 0 means "none" or "unknown"
// (for example a client, or no known leader).
type ReplicaID uint32

// Ballot orders proposals: first by Round, then by the Replica that owns the round, so two
// replicas never own the same ballot. The zero Ballot is lower than every ballot a replica
// can own.
type Ballot struct {
	Round   uint32
	Replica ReplicaID
}

// Less reports whether b orders strictly before o.
func (b Ballot) Less(o Ballot) bool {
	if b.Round != o.Round {
		return b.Round < o.Round
	}
	return b.Replica < o.Replica
}

// IsZero reports whether b is the zero ballot.
func (b Ballot) IsZero() bool { return b == Ballot{} }

// Next returns the smallest ballot owned by r that is higher than b.
func (b Ballot) Next(r ReplicaID) Ballot {
	if b.Replica < r {
		return Ballot{Round: b.Round, Replica: r}
	}
	return Ballot{Round: b.Round + 1, Replica: r}
}

func (b Ballot) String() string { return fmt.Sprintf("%d.%d", b.Round, b.Replica) }

// Op is the operation a command performs on the key-value state machine.
type Op uint8

const (
	// OpNoop does nothing. Recovery and gap filling commit no-ops; a no-op conflicts with
	// nothing.
	OpNoop Op = iota
	// OpGet reads Key.
	OpGet
	// OpPut writes Value to Key.
	OpPut
	// OpCAS writes Value to Key if its current value equals Old (an absent key equals an
	// empty Old).
	OpCAS
	opCount
)

// Valid reports whether o is a known operation.
func (o Op) Valid() bool { return o < opCount }

func (o Op) String() string {
	switch o {
	case OpNoop:
		return "noop"
	case OpGet:
		return "get"
	case OpPut:
		return "put"
	case OpCAS:
		return "cas"
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

// Command is one client operation. (ClientID, Seq) identifies it uniquely: a client retries
// a command with the same pair, and the state machine executes it at most once.
type Command struct {
	ClientID uint64
	Seq      uint64 // the client's sequence number for this command, starting at 1
	Op       Op
	Key      []byte
	Value    []byte // PUT and CAS: the new value
	Old      []byte // CAS: the expected current value
}

// IsRead reports whether c does not change the state machine.
func (c *Command) IsRead() bool { return c.Op == OpGet || c.Op == OpNoop }

// Conflicts reports whether c and o interfere: they touch the same key and at least one of
// them writes. No-ops conflict with nothing. This relation is symmetric.
func (c *Command) Conflicts(o *Command) bool {
	if c.Op == OpNoop || o.Op == OpNoop {
		return false
	}
	if c.IsRead() && o.IsRead() {
		return false
	}
	return bytes.Equal(c.Key, o.Key)
}

// Noop returns the no-op command used to fill gaps and to resolve abandoned instances.
func Noop() Command { return Command{Op: OpNoop} }

// InstanceID names one consensus instance. In EPaxos each replica owns a row of instances
// numbered from 1 (Replica is the command leader). Multi-Paxos has a single log: Replica is
// 0 and Num is the slot, numbered from 1.
type InstanceID struct {
	Replica ReplicaID
	Num     uint64
}

func (id InstanceID) String() string { return fmt.Sprintf("%d.%d", id.Replica, id.Num) }

// Status is how far an instance has progressed at one replica.
type Status uint8

const (
	StatusNone        Status = iota // nothing known
	StatusPreAccepted               // EPaxos: attributes proposed, not yet final
	StatusAccepted                  // attributes (or slot value) accepted in VBallot
	StatusCommitted                 // chosen; may be executed once its dependencies are
	StatusExecuted                  // applied to the state machine
	statusCount
)

// Valid reports whether s is a known status.
func (s Status) Valid() bool { return s < statusCount }

func (s Status) String() string {
	switch s {
	case StatusNone:
		return "none"
	case StatusPreAccepted:
		return "pre-accepted"
	case StatusAccepted:
		return "accepted"
	case StatusCommitted:
		return "committed"
	case StatusExecuted:
		return "executed"
	}
	return fmt.Sprintf("status(%d)", uint8(s))
}

// Instance is the state of one instance (EPaxos) or slot (Multi-Paxos) at one replica.
//
// Deps uses prefix semantics, as the original EPaxos implementation does: a dependency
// (R, n) means every instance of row R numbered 1..n. EPaxos therefore keeps at most one
// dependency per replica (the highest conflicting instance of that row) and Multi-Paxos
// makes slot s depend on (0, s-1). The executor relies on this meaning.
type Instance struct {
	ID      InstanceID
	Status  Status
	Ballot  Ballot // highest ballot promised for this instance (0 where the engine keeps ballots per replica)
	VBallot Ballot // ballot of the last vote (pre-accept or accept) for the value below; kept apart from Ballot on purpose (EPaxos recovery needs both)
	Seq     uint64 // EPaxos sequence number (order inside a strongly connected component); Multi-Paxos: the slot
	Deps    []InstanceID
	Cmds    []Command
}

// Dep returns the dependency of inst on row r and whether there is one.
func (inst *Instance) Dep(r ReplicaID) (uint64, bool) {
	for _, d := range inst.Deps {
		if d.Replica == r {
			return d.Num, true
		}
	}
	return 0, false
}

// Config is what every engine needs at construction. Engine packages embed it in their own
// Config together with protocol-specific knobs.
type Config struct {
	ID       ReplicaID   // this replica
	Replicas []ReplicaID // every replica of the cluster including ID, ascending
	Seed     int64       // the only source of randomness an engine may use (election jitter)
	// Records are what a previous incarnation of this replica asked to persist, in order,
	// as recovered from the write-ahead log. Empty on a fresh start. An engine rebuilt from
	// them must keep every promise it made before the crash.
	Records []Record
	Logger  *slog.Logger // optional; nil means discard
}

// Validate checks the parts every engine relies on.
func (c *Config) Validate() error {
	if c.ID == 0 {
		return fmt.Errorf("protocol: config: ID is 0; replica IDs start at 1")
	}
	if len(c.Replicas) == 0 {
		return fmt.Errorf("protocol: config: Replicas is empty")
	}
	found := false
	for i, r := range c.Replicas {
		if r == 0 {
			return fmt.Errorf("protocol: config: Replicas[%d] is 0; replica IDs start at 1", i)
		}
		if i > 0 && c.Replicas[i-1] >= r {
			return fmt.Errorf("protocol: config: Replicas must be ascending and unique, got %v", c.Replicas)
		}
		if r == c.ID {
			found = true
		}
	}
	if !found {
		return fmt.Errorf("protocol: config: ID %d is not in Replicas %v", c.ID, c.Replicas)
	}
	return nil
}

// Log returns the configured logger or one that discards everything.
func (c *Config) Log() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return slog.New(slog.DiscardHandler)
}
