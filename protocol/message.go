package protocol

import "fmt"

// MsgType says what a Message is. Both engines share one numbering so that a single codec
// (package wire) can carry every message and refuse unknown ones. Values are part of the
// wire format: never renumber, only append.
type MsgType uint8

const (
	MsgInvalid MsgType = 0

	// Multi-Paxos (Lamport, "Paxos Made Simple"). Inst.Num is the slot (Inst.Replica 0).
	MsgPrepare        MsgType = 1  // phase 1a: Ballot, Index = first slot asked about
	MsgPromise        MsgType = 2  // phase 1b: Ballot, OK, Insts = accepted slots >= Index (each with VBallot), Index = sender's commit point
	MsgAccept         MsgType = 3  // phase 2a: Ballot, Inst (slot), Cmds, Index = leader's commit point
	MsgAccepted       MsgType = 4  // phase 2b: Ballot, Inst (slot), OK
	MsgCommit         MsgType = 5  // commit notification: Ballot, Index = every slot <= Index is chosen; Insts may carry values
	MsgHeartbeat      MsgType = 6  // leader liveness: Ballot, Index = commit point
	MsgHeartbeatAck   MsgType = 7  // follower answer: Ballot, OK, Index = follower's commit point
	MsgCatchUp        MsgType = 8  // lagging replica asks for chosen slots from Index on
	MsgCatchUpReply   MsgType = 9  // Insts = chosen slots, Index = sender's commit point
	MsgForward        MsgType = 10 // follower forwards client Cmds to the leader
	MsgNack           MsgType = 11 // a refused request: Ballot = the higher ballot the sender has promised
	mpLast            MsgType = 31 // Multi-Paxos types stay below 32
	MsgPreAccept      MsgType = 32 // EPaxos: Ballot, Inst, Cmds, Deps, Seq
	MsgPreAcceptOK    MsgType = 33 // EPaxos: Ballot, Inst, OK (attributes unchanged), Deps, Seq, Index = sender's committed-prefix hint
	MsgEAccept        MsgType = 34 // EPaxos Paxos-accept: Ballot, Inst, Cmds, Deps, Seq
	MsgEAcceptOK      MsgType = 35 // EPaxos: Ballot, Inst, OK
	MsgECommit        MsgType = 36 // EPaxos: Inst, Cmds, Deps, Seq
	MsgEPrepare       MsgType = 37 // EPaxos explicit prepare (recovery): Ballot, Inst
	MsgEPrepareOK     MsgType = 38 // EPaxos: Ballot, Inst, OK, Status, VBallot, Cmds, Deps, Seq
	MsgTryPreAccept   MsgType = 39 // EPaxos recovery: Ballot, Inst, Cmds, Deps, Seq
	MsgTryPreAcceptOK MsgType = 40 // EPaxos recovery: Ballot, Inst, OK, Status, Deps (conflicting instance in Insts)
	MsgEValidate      MsgType = 41 // EPaxos recovery (engine-defined use; e.g. EPaxos* validation phase)
	MsgEValidateOK    MsgType = 42 // EPaxos recovery (engine-defined use)
	MsgECommitBatch   MsgType = 43 // EPaxos: Insts = several committed instances at once
	epLast            MsgType = 63 // EPaxos types stay below 64
	MsgSnapshot       MsgType = 64 // state transfer: Index = last instance folded into Data (a KV snapshot)
	MsgSnapshotReq    MsgType = 65 // ask a peer for its snapshot
	// MsgSnapshotChunk is runtime-level (package replica; engines never see it): one part of
	// a MsgSnapshot whose Data is too large for one frame. It carries the MsgSnapshot's own
	// fields (Ballot, VBallot, Inst, OK, Status, Seq, Index, Deps, Cmds, Insts: whatever the
	// engine set), and Data = uvarint total | uvarint offset | 4-byte little-endian CRC-32C
	// of the whole snapshot | the snapshot's bytes [offset, offset+n), n >= 1. The receiving
	// runtime reassembles the chunks in order and steps one MsgSnapshot (docs/wire.md).
	MsgSnapshotChunk MsgType = 66
	// MsgSnapshotAck is runtime-level: the receiver of MsgSnapshotChunks says how far it got,
	// which paces the sender. It carries the same fields as the chunks it answers (without
	// Cmds and Insts), and Data = uvarint total | uvarint have | 4-byte CRC-32C, where have
	// is the number of bytes held contiguously from offset 0 (total: done, or not needed).
	MsgSnapshotAck MsgType = 67
	msgLast        MsgType = 68
)

// Valid reports whether t is a message type this version knows.
func (t MsgType) Valid() bool {
	switch {
	case t >= MsgPrepare && t <= MsgNack:
		return true
	case t >= MsgPreAccept && t <= MsgECommitBatch:
		return true
	case t >= MsgSnapshot && t < msgLast:
		return true
	}
	return false
}

var msgNames = map[MsgType]string{
	MsgPrepare: "Prepare", MsgPromise: "Promise", MsgAccept: "Accept", MsgAccepted: "Accepted",
	MsgCommit: "Commit", MsgHeartbeat: "Heartbeat", MsgHeartbeatAck: "HeartbeatAck",
	MsgCatchUp: "CatchUp", MsgCatchUpReply: "CatchUpReply", MsgForward: "Forward", MsgNack: "Nack",
	MsgPreAccept: "PreAccept", MsgPreAcceptOK: "PreAcceptOK", MsgEAccept: "EAccept",
	MsgEAcceptOK: "EAcceptOK", MsgECommit: "ECommit", MsgEPrepare: "EPrepare",
	MsgEPrepareOK: "EPrepareOK", MsgTryPreAccept: "TryPreAccept", MsgTryPreAcceptOK: "TryPreAcceptOK",
	MsgEValidate: "EValidate", MsgEValidateOK: "EValidateOK", MsgECommitBatch: "ECommitBatch",
	MsgSnapshot: "Snapshot", MsgSnapshotReq: "SnapshotReq", MsgSnapshotChunk: "SnapshotChunk",
	MsgSnapshotAck: "SnapshotAck",
}

func (t MsgType) String() string {
	if s, ok := msgNames[t]; ok {
		return s
	}
	return fmt.Sprintf("msg(%d)", uint8(t))
}

// Message is one peer-to-peer message. Like etcd's raftpb.Message it is a single struct
// whose fields each message type uses as documented on its MsgType; unused fields stay
// zero (and cost nothing on the wire). One struct keeps the codec, the transports and the
// simulator free of per-type code and of interface allocations on the hot path.
//
// Slices in a Message received from a transport may share memory with other messages of the
// same frame; an engine that keeps them beyond Step must not modify them.
type Message struct {
	Type    MsgType
	From    ReplicaID
	To      ReplicaID
	Ballot  Ballot
	VBallot Ballot
	Inst    InstanceID
	OK      bool
	Status  Status
	Seq     uint64
	Index   uint64
	Deps    []InstanceID
	Cmds    []Command
	Insts   []Instance
	Data    []byte
}

func (m Message) String() string {
	return fmt.Sprintf("%v %d->%d b=%v inst=%v ok=%v", m.Type, m.From, m.To, m.Ballot, m.Inst, m.OK)
}

// RecordType says what a Record holds. Values are part of the on-disk format: only append.
type RecordType uint8

const (
	RecordInvalid RecordType = 0
	// RecordBallot: the replica-wide promise (Multi-Paxos phase 1). Ballot is promised.
	RecordBallot RecordType = 1
	// RecordInstance: the full current state of one instance or slot (Inst, including its
	// Ballot, VBallot and Status). A later record for the same ID supersedes an earlier one.
	RecordInstance RecordType = 2
	// RecordCommitIndex: Multi-Paxos commit point (Index).
	RecordCommitIndex RecordType = 3
	// RecordSnapshot: instances up to Index (and per-row points in Inst.Deps, for EPaxos)
	// are folded into a state-machine snapshot; earlier records may be dropped.
	RecordSnapshot RecordType = 4
	recordLast     RecordType = 5
)

// Valid reports whether t is a record type this version knows.
func (t RecordType) Valid() bool { return t > RecordInvalid && t < recordLast }

// Record is what an engine asks the runtime to make durable before the messages of the
// same Ready leave. On restart the engine is rebuilt from the records alone.
type Record struct {
	Type   RecordType
	Ballot Ballot
	Index  uint64
	Inst   Instance
}

// Ready is what the runtime must do after calls into the engine. Order matters:
//  1. Persist every Record (one fsync for all of them: group commit).
//  2. Only then send Messages: a promise or vote leaves only once it survives a crash.
//  3. Hand Committed to the executor (in order); it applies them when their dependencies
//     are satisfied and answers the clients.
//  4. Answer Redirect commands with a redirect to Leader (0 = unknown: retry elsewhere).
//  5. Call Advance with this Ready.
type Ready struct {
	Persist   []Record
	Messages  []Message
	Committed []Instance
	Redirect  []Command
	Leader    ReplicaID // the replica believed to lead (Multi-Paxos); 0 when unknown or leaderless
}

// IsEmpty reports whether there is nothing to do.
func (rd *Ready) IsEmpty() bool {
	return len(rd.Persist) == 0 && len(rd.Messages) == 0 && len(rd.Committed) == 0 && len(rd.Redirect) == 0
}

// Engine is a replication protocol as a deterministic state machine. It is not safe for
// concurrent use; the owner (runtime, simulator, test) calls it from one goroutine. Given
// the same sequence of calls (and the same Config.Seed) it produces the same Readys.
type Engine interface {
	// Propose submits client commands that arrived at this replica.
	Propose(cmds []Command)
	// Step delivers a message from a peer. Malformed or stale messages are ignored.
	Step(m Message)
	// Tick advances the engine's logical clock by one tick; timeouts count ticks.
	Tick()
	// Ready returns what the runtime must do now. Calling it again before Advance returns
	// the same work plus anything new.
	Ready() Ready
	// Advance tells the engine that everything in rd has been done; the engine may reuse
	// the memory it handed out in rd.
	Advance(rd Ready)
}

// Suspecter is implemented by engines that can recover an instance on request. The runtime
// calls it with the instances the executor has waited on for too long (committed
// instances depend on them, but they are not committed here).
type Suspecter interface {
	Suspect(ids []InstanceID)
}

// Stats are counters an engine keeps for benchmarks and metrics.
type Stats struct {
	Proposed   uint64 // commands proposed at this replica
	Committed  uint64 // instances committed with this replica as leader / proposer
	FastPath   uint64 // EPaxos: instances led here that committed on the fast path
	SlowPath   uint64 // EPaxos: instances led here that needed the Accept phase
	Recoveries uint64 // recoveries (EPaxos explicit prepare) or elections (Multi-Paxos) started here
	Elections  uint64 // Multi-Paxos: times this replica became leader
}

// StatsReporter is implemented by engines that keep Stats.
type StatsReporter interface {
	Stats() Stats
}

// Result is the outcome of a client command.
type Result uint8

const (
	ResultOK        Result = iota // done; Value holds the read value for GET, the current value for a failed CAS
	ResultNotFound                // GET of an absent key
	ResultCASFailed               // CAS whose Old did not match; Value holds the current value
	ResultRedirect                // this replica will not serve the command: retry at Leader (0 = any other)
	ResultError                   // refused (malformed command, shutting down); Value holds a message
	resultCount
)

// Valid reports whether r is a known result.
func (r Result) Valid() bool { return r < resultCount }

func (r Result) String() string {
	switch r {
	case ResultOK:
		return "ok"
	case ResultNotFound:
		return "not-found"
	case ResultCASFailed:
		return "cas-failed"
	case ResultRedirect:
		return "redirect"
	case ResultError:
		return "error"
	}
	return fmt.Sprintf("result(%d)", uint8(r))
}

// Reply answers one client command.
type Reply struct {
	ClientID uint64
	Seq      uint64
	Result   Result
	Value    []byte
	Leader   ReplicaID // with ResultRedirect
	// ExecDelayMicros is the time between the command's commit and its execution at the
	// replying replica, so a client can split its latency into commit and execution
	// latency (the EPaxos paper reports both).
	ExecDelayMicros uint32
}

// Compactor is implemented by engines that can forget executed instances, so that memory
// and the write-ahead log stay bounded in long runs. The runtime owns the state-machine
// snapshot; the engine owns the decision of what it may forget.
//
// The protocol for truncation and catch-up:
//   - The runtime periodically snapshots the state machine at its executed frontier F (per
//     row, every instance up to F[row] has executed here; prefix semantics as Deps) and
//     calls Compact(F) once the snapshot is durable. The engine may forget every instance
//     covered by F. It should keep instances that a peer may still ask for while that peer
//     is expected to catch up cheaply (e.g. until every replica reports having executed
//     them, within a retention bound); engines may exchange frontiers in their messages.
//   - LiveRecords returns records that rebuild the engine as it is now, leaving out what
//     Compact allowed it to forget, starting with a RecordSnapshot whose Inst.Deps is the
//     frontier. The runtime may then replace its whole log with them (after the snapshot
//     file is durable).
//   - When a peer needs instances this engine has forgotten, the engine puts a MsgSnapshot
//     addressed to that peer in Ready.Messages with Deps = its compacted frontier and empty
//     Data; the runtime fills Data with the matching state-machine snapshot before sending.
//   - On receiving a MsgSnapshot whose frontier is ahead of its own, the runtime restores
//     the state machine (and executor) from Data and then Steps the message into the engine,
//     which treats every instance covered by m.Deps as committed and executed (it must not
//     emit them in Ready.Committed).
//   - On restart, Config.Records starts with the RecordSnapshot written by the last
//     truncation (if any); instances it covers are executed and must not be re-emitted.
type Compactor interface {
	Compact(frontier []InstanceID)
	LiveRecords() []Record
}
