package check

import (
	"bytes"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/parliament-lab/parliament/protocol"
)

// ExecState is what one replica has executed, as the checker tracks it, frozen at the
// moment its state machine was snapshotted. It travels with the snapshot: a replica that
// restores the snapshot (at a restart, or when a peer sends it) has executed exactly what
// the snapshot's producer had, and its further executions are checked from there.
type ExecState struct {
	Frontier []protocol.InstanceID // the snapshot's frontier (per-row executed prefixes)
	pos      map[string]int
	cmds     map[uint64]*numSet
	inst     map[protocol.ReplicaID]*numSet
	nInst    int
}

// Instances returns how many instances the snapshot's producer had executed.
func (st *ExecState) Instances() int { return st.nInst }

// Key is a canonical text of the set of instances executed: two snapshots with the same
// key hold the effects of the same instances, so their state machines must be equal.
func (st *ExecState) Key() string {
	rows := make([]protocol.ReplicaID, 0, len(st.inst))
	for r := range st.inst {
		rows = append(rows, r)
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i] < rows[j] })
	b := make([]byte, 0, 16*len(rows))
	for _, r := range rows {
		s := st.inst[r]
		b = strconv.AppendUint(b, uint64(r), 10)
		b = append(b, ':')
		b = strconv.AppendUint(b, s.Prefix, 10)
		for _, n := range s.Above {
			b = append(b, ',')
			b = strconv.AppendUint(b, n, 10)
		}
		b = append(b, ';')
	}
	return string(b)
}

// Covers reports whether frontier f (prefix semantics, as protocol.Instance.Deps) covers id.
func Covers(f []protocol.InstanceID, id protocol.InstanceID) bool {
	for _, d := range f {
		if d.Replica == id.Replica && id.Num <= d.Num {
			return true
		}
	}
	return false
}

// Snapshot freezes what replica r has executed, for a state-machine snapshot taken at
// frontier. It returns an Agreement violation if r has not executed everything frontier
// covers (the snapshot would claim instances its state does not hold).
func (a *ReplicaChecker) Snapshot(r protocol.ReplicaID, frontier []protocol.InstanceID) (*ExecState, *Violation) {
	re := a.replica(r)
	for _, d := range frontier {
		if s := re.inst[d.Replica]; d.Num > 0 && (s == nil || s.Prefix < d.Num) {
			have := uint64(0)
			if s != nil {
				have = s.Prefix
			}
			return nil, &Violation{Property: Agreement, Detail: fmt.Sprintf(
				"replica %d snapshots at frontier %v but has executed row %d only up to %d", r, frontier, d.Replica, have)}
		}
	}
	st := &ExecState{
		Frontier: append([]protocol.InstanceID(nil), frontier...),
		pos:      make(map[string]int, len(re.pos)),
		cmds:     cloneSets(re.cmds),
		inst:     cloneSets(re.inst),
		nInst:    re.nInst,
	}
	for k, v := range re.pos {
		st.pos[k] = v
	}
	return st, nil
}

// Restored tells the checker that replica r's state machine was replaced by a snapshot
// whose producer had executed st (a peer's snapshot installed here, or, after Restarted,
// the replica's own snapshot at a restart). From now on r has executed what st says, and
// its further executions continue the per-key order from there.
//
// Installing a snapshot must not lose anything r executed: an instance r executed that
// the snapshot does not hold must execute again (kept reports that the runtime hands it
// to the restored executor; nil means none), or its effects vanish from the state
// machine after clients may have seen them. Restored returns a Durability violation
// naming such instances (the state is replaced anyway).
func (a *ReplicaChecker) Restored(r protocol.ReplicaID, st *ExecState, kept func(protocol.InstanceID) bool) *Violation {
	lostIf := func(id protocol.InstanceID) bool { return kept == nil || !kept(id) }
	re := a.replica(r)
	var lost []string
	rows := make([]protocol.ReplicaID, 0, len(re.inst))
	for row := range re.inst {
		rows = append(rows, row)
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i] < rows[j] })
	for _, row := range rows {
		mine, theirs := re.inst[row], st.inst[row]
		if theirs == nil {
			theirs = &numSet{}
		}
		if len(lost) > 8 {
			break
		}
		// Compare number by number above what both surely hold: the sets are small
		// above their common prefix.
		from := min(mine.Prefix, theirs.Prefix) + 1
		for n := from; n <= mine.Prefix && len(lost) <= 8; n++ {
			if id := (protocol.InstanceID{Replica: row, Num: n}); !theirs.Has(n) && lostIf(id) {
				lost = append(lost, id.String())
			}
		}
		for _, n := range mine.Above {
			if len(lost) > 8 {
				break
			}
			if id := (protocol.InstanceID{Replica: row, Num: n}); !theirs.Has(n) && lostIf(id) {
				lost = append(lost, id.String())
			}
		}
	}
	re.pos = make(map[string]int, len(st.pos))
	for k, v := range st.pos {
		re.pos[k] = v
	}
	re.cmds = cloneSets(st.cmds)
	re.inst = cloneSets(st.inst)
	re.nInst = st.nInst
	re.restoredAt = st.Frontier
	re.before = st.inst
	re.reexec = nil
	if len(lost) == 0 {
		return nil
	}
	if len(lost) > 8 {
		lost = append(lost[:8], "...")
	}
	return &Violation{Property: Durability, Detail: fmt.Sprintf(
		"replica %d restored a snapshot at frontier %v that lacks instances it had executed: %s (their effects are lost)",
		r, st.Frontier, strings.Join(lost, " "))}
}

// ExecutedInstances returns how many distinct instances replica r has executed (or holds
// through a restored snapshot) in its current incarnation.
func (a *ReplicaChecker) ExecutedInstances(r protocol.ReplicaID) int { return a.replica(r).nInst }

// Missing returns, sorted, the instances some replica committed that replica r has not
// executed (in its current incarnation, snapshots included).
func (a *ReplicaChecker) Missing(r protocol.ReplicaID) []protocol.InstanceID {
	re := a.replica(r)
	var out []protocol.InstanceID
	for id := range a.committed {
		if !re.hasInst(id) {
			out = append(out, id)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Replica != out[j].Replica {
			return out[i].Replica < out[j].Replica
		}
		return out[i].Num < out[j].Num
	})
	return out
}

// SameState checks that replicas which executed the same instances hold identical
// state machines: states[i] is replica ids[i]'s state-machine snapshot (a canonical
// encoding, such as kv.Snapshot), taken once every replica executed every committed
// instance. describe, when not nil, explains a difference between two states.
func SameState(ids []protocol.ReplicaID, states [][]byte, describe func(a, b []byte) string) *Violation {
	for i := 1; i < len(states); i++ {
		if bytes.Equal(states[0], states[i]) {
			continue
		}
		detail := fmt.Sprintf("replicas %d and %d executed the same %s but their state machines differ (%d vs %d bytes)",
			ids[0], ids[i], "instances", len(states[0]), len(states[i]))
		if describe != nil {
			detail += ": " + describe(states[0], states[i])
		}
		return &Violation{Property: Convergence, Detail: detail}
	}
	return nil
}
