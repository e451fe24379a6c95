package check

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/parliament-lab/parliament/protocol"
)

// CmdID identifies a client command: a client retries with the same pair, and the state
// machine executes it at most once.
type CmdID struct {
	ClientID uint64
	Seq      uint64
}

func (c CmdID) String() string { return fmt.Sprintf("c%d#%d", c.ClientID, c.Seq) }

// cmdRef names one command of one instance (instances carry batches). Two instances may
// carry the same CmdID (a client retried at another replica); they are distinct refs.
type cmdRef struct {
	inst protocol.InstanceID
	idx  int
}

func (r cmdRef) String() string { return fmt.Sprintf("%v[%d]", r.inst, r.idx) }

type committedInst struct {
	by protocol.ReplicaID
	fp string
}

// keyOrder is the canonical order of the commands on one key, as the first replica to
// execute them chose it: the writes in sequence, and for every read the number of writes
// that preceded it. Reads do not conflict with each other, so only their position between
// writes is fixed (protocol.Command.Conflicts).
type keyOrder struct {
	writes    []cmdRef
	readEpoch map[cmdRef]int
}

type replicaExec struct {
	incarnation int
	pos         map[string]int                 // per key: writes executed so far in this incarnation
	cmds        map[uint64]*numSet             // per client: sequence numbers executed in this incarnation
	inst        map[protocol.ReplicaID]*numSet // per row: instances executed (or inherited from a snapshot)
	nInst       int                            // instances in inst
	restoredAt  []protocol.InstanceID          // frontier of the snapshot the state machine was last restored from
	before      map[protocol.ReplicaID]*numSet // instances the restored snapshot had executed (shared, never modified)
	reexec      map[protocol.InstanceID]bool   // of those above restoredAt: executed again since the restore
}

func newReplicaExec() *replicaExec {
	return &replicaExec{pos: map[string]int{}, cmds: map[uint64]*numSet{}, inst: map[protocol.ReplicaID]*numSet{}}
}

func (re *replicaExec) hasInst(id protocol.InstanceID) bool {
	s := re.inst[id.Replica]
	return s != nil && s.Has(id.Num)
}

func (re *replicaExec) addInst(id protocol.InstanceID) {
	s := re.inst[id.Replica]
	if s == nil {
		s = &numSet{}
		re.inst[id.Replica] = s
	}
	if s.Add(id.Num) {
		re.nInst++
	}
}

func (re *replicaExec) addCmd(id CmdID) {
	s := re.cmds[id.ClientID]
	if s == nil {
		s = &numSet{}
		re.cmds[id.ClientID] = s
	}
	s.Add(id.Seq)
}

func (re *replicaExec) hasCmd(id CmdID) bool {
	s := re.cmds[id.ClientID]
	return s != nil && s.Has(id.Seq)
}

// ReplicaChecker checks, as a run goes, that replicas agree: every instance (or slot) is
// committed with the same commands, deps and seq everywhere, executed instances are the
// committed ones, and conflicting commands execute in the same relative order at every
// replica (compared per key). It also remembers which commands each replica has executed
// since its last restart, for the durability check at the end of a run.
//
// It is not safe for concurrent use; the simulator runs single-threaded.
type ReplicaChecker struct {
	committed map[protocol.InstanceID]committedInst
	keys      map[string]*keyOrder
	replicas  map[protocol.ReplicaID]*replicaExec
}

// NewReplicaChecker returns an empty checker.
func NewReplicaChecker() *ReplicaChecker {
	return &ReplicaChecker{
		committed: map[protocol.InstanceID]committedInst{},
		keys:      map[string]*keyOrder{},
		replicas:  map[protocol.ReplicaID]*replicaExec{},
	}
}

// Fingerprint is a canonical text of what consensus decides for an instance: the commands
// (every field), the deps (as a set of per-row prefixes; a dep on row R up to 0 is no dep)
// and seq. Ballots and status are local and not part of it.
func Fingerprint(inst *protocol.Instance) string {
	// Hand-rolled with strconv: the simulator fingerprints every commit and execution.
	b := make([]byte, 0, 64+48*len(inst.Cmds))
	b = append(b, "seq="...)
	b = strconv.AppendUint(b, inst.Seq, 10)
	b = append(b, " deps=["...)
	deps := make([]protocol.InstanceID, 0, len(inst.Deps))
	for _, d := range inst.Deps {
		if d.Num > 0 {
			deps = append(deps, d)
		}
	}
	sort.Slice(deps, func(i, j int) bool {
		if deps[i].Replica != deps[j].Replica {
			return deps[i].Replica < deps[j].Replica
		}
		return deps[i].Num < deps[j].Num
	})
	for i, d := range deps {
		if i > 0 {
			b = append(b, ' ')
		}
		b = strconv.AppendUint(b, uint64(d.Replica), 10)
		b = append(b, '.')
		b = strconv.AppendUint(b, d.Num, 10)
	}
	b = append(b, "] cmds=["...)
	for i := range inst.Cmds {
		c := &inst.Cmds[i]
		if i > 0 {
			b = append(b, ' ')
		}
		b = strconv.AppendUint(b, c.ClientID, 10)
		b = append(b, '#')
		b = strconv.AppendUint(b, c.Seq, 10)
		b = append(b, ':')
		b = append(b, c.Op.String()...)
		b = append(b, '(')
		b = strconv.AppendQuote(b, string(c.Key))
		b = append(b, ',')
		b = strconv.AppendQuote(b, string(c.Value))
		b = append(b, ',')
		b = strconv.AppendQuote(b, string(c.Old))
		b = append(b, ')')
	}
	b = append(b, ']')
	return string(b)
}

// FormatInstance renders what was decided for an instance, for traces: seq, deps and
// commands (readable, unlike Fingerprint, which is exact).
func FormatInstance(inst *protocol.Instance) string {
	var b strings.Builder
	fmt.Fprintf(&b, "seq=%d deps=%v cmds=[", inst.Seq, inst.Deps)
	for i := range inst.Cmds {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(FormatCommand(&inst.Cmds[i]))
	}
	b.WriteByte(']')
	return b.String()
}

// FormatCommand renders a command for traces and reports.
func FormatCommand(c *protocol.Command) string {
	switch c.Op {
	case protocol.OpNoop:
		return "noop"
	case protocol.OpGet:
		return fmt.Sprintf("c%d#%d:get(%s)", c.ClientID, c.Seq, c.Key)
	case protocol.OpPut:
		return fmt.Sprintf("c%d#%d:put(%s,%q)", c.ClientID, c.Seq, c.Key, c.Value)
	case protocol.OpCAS:
		return fmt.Sprintf("c%d#%d:cas(%s,%q->%q)", c.ClientID, c.Seq, c.Key, c.Old, c.Value)
	}
	return fmt.Sprintf("c%d#%d:%v(%s)", c.ClientID, c.Seq, c.Op, c.Key)
}

func (a *ReplicaChecker) replica(r protocol.ReplicaID) *replicaExec {
	re := a.replicas[r]
	if re == nil {
		re = newReplicaExec()
		a.replicas[r] = re
	}
	return re
}

// Committed records that replica r committed inst. It returns an Agreement violation if
// another replica (or an earlier incarnation of r) committed the same instance with other
// commands, deps or seq.
func (a *ReplicaChecker) Committed(r protocol.ReplicaID, inst *protocol.Instance) *Violation {
	fp := Fingerprint(inst)
	if prev, ok := a.committed[inst.ID]; ok {
		if prev.fp != fp {
			return &Violation{Property: Agreement, Detail: fmt.Sprintf(
				"instance %v committed as {%s} at replica %d but as {%s} at replica %d",
				inst.ID, prev.fp, prev.by, fp, r)}
		}
		return nil
	}
	a.committed[inst.ID] = committedInst{by: r, fp: fp}
	return nil
}

// Executed records that replica r executed inst (the executor calls Apply in execution
// order). It returns an Order violation when a command conflicts with one that another
// replica executed in the other order, and an Agreement violation when the executed
// instance is not what was committed, or when it executes twice.
//
// After a restore from a snapshot (Restored), an instance the snapshot's producer had
// executed above the snapshot's frontier may execute once more: the frontier is a set of
// per-row prefixes, so the state machine already holds its effects but the executor does
// not know it. The store's exactly-once sessions make such a write a no-op, so it is not
// an execution in the order check; an instance the frontier covers must never execute again.
func (a *ReplicaChecker) Executed(r protocol.ReplicaID, inst *protocol.Instance) *Violation {
	if prev, ok := a.committed[inst.ID]; !ok {
		return &Violation{Property: Agreement, Detail: fmt.Sprintf(
			"replica %d executed instance %v that no replica reported committed", r, inst.ID)}
	} else if fp := Fingerprint(inst); fp != prev.fp {
		return &Violation{Property: Agreement, Detail: fmt.Sprintf(
			"replica %d executed instance %v as {%s} but it was committed as {%s}", r, inst.ID, fp, prev.fp)}
	}
	re := a.replica(r)
	if re.hasInst(inst.ID) {
		if s := re.before[inst.ID.Replica]; s != nil && s.Has(inst.ID.Num) &&
			!Covers(re.restoredAt, inst.ID) && !re.reexec[inst.ID] {
			if re.reexec == nil {
				re.reexec = map[protocol.InstanceID]bool{}
			}
			re.reexec[inst.ID] = true
			return nil
		}
		why := "twice in one incarnation"
		if Covers(re.restoredAt, inst.ID) {
			why = fmt.Sprintf("again although the snapshot it restored (frontier %v) covers it", re.restoredAt)
		}
		return &Violation{Property: Agreement, Detail: fmt.Sprintf(
			"replica %d executed instance %v %s", r, inst.ID, why)}
	}
	re.addInst(inst.ID)
	for i := range inst.Cmds {
		c := &inst.Cmds[i]
		if c.Op == protocol.OpNoop {
			continue
		}
		re.addCmd(CmdID{c.ClientID, c.Seq})
		key := string(c.Key)
		ko := a.keys[key]
		if ko == nil {
			ko = &keyOrder{readEpoch: map[cmdRef]int{}}
			a.keys[key] = ko
		}
		ref := cmdRef{inst.ID, i}
		pos := re.pos[key]
		if c.IsRead() {
			if e, ok := ko.readEpoch[ref]; !ok {
				ko.readEpoch[ref] = pos
			} else if e != pos {
				return &Violation{Property: Order, Detail: fmt.Sprintf(
					"key %s: read %v (%s) executed after %d writes at replica %d but after %d writes elsewhere (writes: %s)",
					key, ref, FormatCommand(c), pos, r, e, a.describeWrites(key, max(pos, e)))}
			}
			continue
		}
		if pos < len(ko.writes) {
			if ko.writes[pos] != ref {
				return &Violation{Property: Order, Detail: fmt.Sprintf(
					"key %s: write #%d is %v (%s) at replica %d but %v elsewhere (writes: %s)",
					key, pos+1, ref, FormatCommand(c), r, ko.writes[pos], a.describeWrites(key, pos+1))}
			}
		} else {
			ko.writes = append(ko.writes, ref)
		}
		re.pos[key] = pos + 1
	}
	return nil
}

func (a *ReplicaChecker) describeWrites(key string, n int) string {
	ko := a.keys[key]
	n = min(n, len(ko.writes))
	parts := make([]string, n)
	for i := range n {
		parts[i] = ko.writes[i].String()
	}
	return strings.Join(parts, " ")
}

// Restarted tells the checker that replica r crashed and restarted with an empty state
// machine: it will execute everything again from the beginning, and that new execution
// must follow the same order.
func (a *ReplicaChecker) Restarted(r protocol.ReplicaID) {
	re := a.replica(r)
	inc := re.incarnation + 1
	*re = *newReplicaExec()
	re.incarnation = inc
}

// HasExecuted reports whether replica r executed command id since its last restart (or
// holds it in the snapshot it restored).
func (a *ReplicaChecker) HasExecuted(r protocol.ReplicaID, id CmdID) bool {
	return a.replica(r).hasCmd(id)
}

// Durable checks that replica r executed every acknowledged write since its last restart.
// Called once faults have healed and the replica has caught up, it catches a write that a
// crash-restart lost (the replica forgot a commit it had made durable promises about).
func (a *ReplicaChecker) Durable(r protocol.ReplicaID, acked []CmdID) *Violation {
	re := a.replica(r)
	var missing []string
	for _, id := range acked {
		if !re.hasCmd(id) {
			missing = append(missing, id.String())
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if len(missing) > 8 {
		missing = append(missing[:8], fmt.Sprintf("and %d more", len(missing)-8))
	}
	return &Violation{Property: Durability, Detail: fmt.Sprintf(
		"replica %d (incarnation %d) never executed acknowledged writes %s",
		r, re.incarnation, strings.Join(missing, ", "))}
}

// Instances returns how many distinct instances were committed.
func (a *ReplicaChecker) Instances() int { return len(a.committed) }
