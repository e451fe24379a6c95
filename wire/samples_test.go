package wire

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/parliament-lab/parliament/protocol"
)

// Sample values shared by the round-trip tests, the fuzz seed corpora and the benchmarks.

func key(i int) []byte { return []byte(fmt.Sprintf("key-%04d", i)) }

// value16 returns a 16-byte value, the size the benchmarks of the EPaxos paper use.
func value16(i int) []byte { return []byte(fmt.Sprintf("value-%010d", i)) }

func putCommands(n int) []protocol.Command {
	cmds := make([]protocol.Command, n)
	for i := range cmds {
		cmds[i] = protocol.Command{ClientID: 1000 + uint64(i%8), Seq: 5000 + uint64(i), Op: protocol.OpPut, Key: key(i), Value: value16(i)}
	}
	return cmds
}

// maxCommand has every field at its largest.
var maxCommand = protocol.Command{
	ClientID: math.MaxUint64, Seq: math.MaxUint64, Op: protocol.OpCAS,
	Key: make([]byte, 300), Value: make([]byte, 70000), Old: []byte("old"),
}

var maxBallot = protocol.Ballot{Round: math.MaxUint32, Replica: math.MaxUint32}
var maxInst = protocol.InstanceID{Replica: math.MaxUint32, Num: math.MaxUint64}

func epaxosInstance(r protocol.ReplicaID, num uint64, ncmds int) protocol.Instance {
	return protocol.Instance{
		ID:      protocol.InstanceID{Replica: r, Num: num},
		Status:  protocol.StatusCommitted,
		Ballot:  protocol.Ballot{Round: 0, Replica: r},
		VBallot: protocol.Ballot{Round: 0, Replica: r},
		Seq:     num + 7,
		Deps:    []protocol.InstanceID{{Replica: 1, Num: num}, {Replica: 2, Num: num - 1}, {Replica: 3, Num: 0}, {Replica: 4, Num: num + 3}, {Replica: 5, Num: 12}},
		Cmds:    putCommands(ncmds),
	}
}

// preAccept64 is a typical EPaxos PreAccept: 64 batched PUTs of 16-byte values, deps on
// every row of a 5-replica cluster.
func preAccept64() protocol.Message {
	inst := epaxosInstance(3, 123456, 64)
	return protocol.Message{
		Type: protocol.MsgPreAccept, From: 3, To: 4, Ballot: inst.Ballot, Inst: inst.ID,
		Seq: inst.Seq, Deps: inst.Deps, Cmds: inst.Cmds,
	}
}

// mpAccept is a Multi-Paxos phase-2a Accept of one slot carrying 64 commands.
func mpAccept() protocol.Message {
	return protocol.Message{
		Type: protocol.MsgAccept, From: 1, To: 2, Ballot: protocol.Ballot{Round: 3, Replica: 1},
		Inst: protocol.InstanceID{Num: 987654}, Index: 987600, Cmds: putCommands(64),
	}
}

func sampleMessages() map[string]protocol.Message {
	all := protocol.Message{
		Type: protocol.MsgEPrepareOK, From: 5, To: 1, Ballot: protocol.Ballot{Round: 2, Replica: 1},
		VBallot: protocol.Ballot{Round: 1, Replica: 5}, Inst: protocol.InstanceID{Replica: 5, Num: 77},
		OK: true, Status: protocol.StatusAccepted, Seq: 9, Index: 300,
		Deps:  []protocol.InstanceID{{Replica: 1, Num: 3}},
		Cmds:  putCommands(2),
		Insts: []protocol.Instance{epaxosInstance(1, 4, 3), {}, epaxosInstance(2, 9, 0)},
		Data:  []byte("snapshot bytes"),
	}
	maxMsg := protocol.Message{
		Type: protocol.MsgSnapshot, From: math.MaxUint32, To: math.MaxUint32, Ballot: maxBallot,
		VBallot: maxBallot, Inst: maxInst, OK: true, Status: protocol.StatusExecuted,
		Seq: math.MaxUint64, Index: math.MaxUint64,
		Deps: []protocol.InstanceID{maxInst, maxInst},
		Cmds: []protocol.Command{maxCommand, {}},
		Insts: []protocol.Instance{{
			ID: maxInst, Status: protocol.StatusExecuted, Ballot: maxBallot, VBallot: maxBallot,
			Seq: math.MaxUint64, Deps: []protocol.InstanceID{maxInst}, Cmds: []protocol.Command{maxCommand},
		}},
		Data: make([]byte, 1<<17),
	}
	return map[string]protocol.Message{
		"empty-prepare":            {Type: protocol.MsgPrepare},
		"heartbeat":                {Type: protocol.MsgHeartbeat, From: 1, To: 2, Ballot: protocol.Ballot{Round: 1, Replica: 1}, Index: 42},
		"accepted":                 {Type: protocol.MsgAccepted, From: 2, To: 1, Ballot: protocol.Ballot{Round: 1, Replica: 1}, Inst: protocol.InstanceID{Num: 8}, OK: true},
		"nack-ballot-replica-only": {Type: protocol.MsgNack, Ballot: protocol.Ballot{Replica: 3}},
		"inst-replica-only":        {Type: protocol.MsgEPrepare, Inst: protocol.InstanceID{Replica: 2}},
		"preaccept64":              preAccept64(),
		"mp-accept":                mpAccept(),
		"commit-batch": {Type: protocol.MsgECommitBatch, From: 1, To: 3,
			Insts: []protocol.Instance{epaxosInstance(1, 10, 4), epaxosInstance(1, 11, 1), epaxosInstance(2, 3, 2)}},
		"all-fields": all,
		"maximal":    maxMsg,
		// The runtime's chunked state transfer (docs/wire.md): a Multi-Paxos snapshot's
		// header, then Data = uvarint total | uvarint offset | CRC-32C | bytes.
		"snapshot-chunk": {Type: protocol.MsgSnapshotChunk, From: 1, To: 3, Index: 4096,
			VBallot: protocol.Ballot{Round: 2, Replica: 1}, Deps: []protocol.InstanceID{{Num: 4096}},
			Data: snapshotPrefix(200000, 65536, 0xdeadbeef, []byte("chunk bytes"))},
		"snapshot-chunk-epaxos": {Type: protocol.MsgSnapshotChunk, From: 2, To: 1,
			Deps: []protocol.InstanceID{{Replica: 1, Num: 70}, {Replica: 2, Num: 12}, {Replica: 3, Num: 9}},
			Data: snapshotPrefix(1<<33, 0, 1, make([]byte, 300))},
		"snapshot-ack": {Type: protocol.MsgSnapshotAck, From: 3, To: 1, Index: 4096,
			VBallot: protocol.Ballot{Round: 2, Replica: 1}, Deps: []protocol.InstanceID{{Num: 4096}},
			Data: snapshotPrefix(200000, 131072, 0xdeadbeef, nil)},
	}
}

// snapshotPrefix builds the Data of a MsgSnapshotChunk (rest = the snapshot's bytes) or of
// a MsgSnapshotAck (off = bytes held, rest empty), as package replica does.
func snapshotPrefix(total, off uint64, crc uint32, rest []byte) []byte {
	b := binary.AppendUvarint(nil, total)
	b = binary.AppendUvarint(b, off)
	b = binary.LittleEndian.AppendUint32(b, crc)
	return append(b, rest...)
}

func sampleCommands() map[string]protocol.Command {
	return map[string]protocol.Command{
		"noop":    protocol.Noop(),
		"get":     {ClientID: 7, Seq: 1, Op: protocol.OpGet, Key: []byte("k")},
		"put":     putCommands(1)[0],
		"cas":     {ClientID: 9, Seq: 300, Op: protocol.OpCAS, Key: []byte("k"), Value: []byte("new"), Old: []byte("old")},
		"maximal": maxCommand,
	}
}

func sampleReplies() map[string]protocol.Reply {
	return map[string]protocol.Reply{
		"zero":      {},
		"ok":        {ClientID: 1000, Seq: 5000, Result: protocol.ResultOK, Value: value16(1), ExecDelayMicros: 250},
		"not-found": {ClientID: 1, Seq: 2, Result: protocol.ResultNotFound},
		"redirect":  {ClientID: 1, Seq: 2, Result: protocol.ResultRedirect, Leader: 3},
		"error":     {ClientID: 1, Seq: 2, Result: protocol.ResultError, Value: []byte("shutting down")},
		"maximal": {ClientID: math.MaxUint64, Seq: math.MaxUint64, Result: protocol.ResultCASFailed,
			Value: make([]byte, 70000), Leader: math.MaxUint32, ExecDelayMicros: math.MaxUint32},
	}
}

func sampleRecords() map[string]protocol.Record {
	return map[string]protocol.Record{
		"ballot":       {Type: protocol.RecordBallot, Ballot: protocol.Ballot{Round: 4, Replica: 2}},
		"commit-index": {Type: protocol.RecordCommitIndex, Index: 1 << 40},
		"instance":     {Type: protocol.RecordInstance, Inst: epaxosInstance(3, 99, 16)},
		"mp-slot": {Type: protocol.RecordInstance, Inst: protocol.Instance{
			ID: protocol.InstanceID{Num: 5}, Status: protocol.StatusAccepted, VBallot: protocol.Ballot{Round: 2, Replica: 1},
			Seq: 5, Deps: []protocol.InstanceID{{Num: 4}}, Cmds: []protocol.Command{protocol.Noop()}}},
		"snapshot": {Type: protocol.RecordSnapshot, Index: 1000, Inst: protocol.Instance{
			Deps: []protocol.InstanceID{{Replica: 1, Num: 100}, {Replica: 2, Num: 200}}}},
		"maximal": {Type: protocol.RecordSnapshot, Ballot: maxBallot, Index: math.MaxUint64, Inst: protocol.Instance{
			ID: maxInst, Status: protocol.StatusExecuted, Ballot: maxBallot, VBallot: maxBallot, Seq: math.MaxUint64,
			Deps: []protocol.InstanceID{maxInst}, Cmds: []protocol.Command{maxCommand, maxCommand}}},
	}
}
