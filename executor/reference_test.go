package executor

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/parliament-lab/parliament/protocol"
)

// reference is a deliberately simple model of the executor's specification, in the style
// of etcd-io/raft's quorum/quick_test.go: quadratic, no memoization, obviously correct.
// It knows the whole graph in advance (every instance the test will ever add), and answers
// three questions about a state where only some instances are committed:
//   - which instances must have executed (every instance whose whole dependency closure
//     is committed: the executor is eager);
//   - which order constraints an execution order must satisfy (dependencies first; inside
//     a strongly connected component by (Seq, Replica, Num));
//   - which instances Blocked must report.
type reference struct {
	insts map[protocol.InstanceID]protocol.Instance
	ids   []protocol.InstanceID // sorted
	idx   map[protocol.InstanceID]int
	reach [][]bool // reach[i][j]: j is in the dependency closure of i (i reaches j, j != i unless on a cycle)
	// Precomputed lists of the same relations, to keep checks after every step cheap.
	succ      [][]int
	reachList [][]int
}

func newReference(insts []protocol.Instance) *reference {
	r := &reference{insts: map[protocol.InstanceID]protocol.Instance{}, idx: map[protocol.InstanceID]int{}}
	for _, in := range insts {
		r.insts[in.ID] = in
		r.ids = append(r.ids, in.ID)
	}
	slices.SortFunc(r.ids, cmpID)
	for i, id := range r.ids {
		r.idx[id] = i
	}
	n := len(r.ids)
	r.reach = make([][]bool, n)
	for i := range r.reach {
		r.reach[i] = make([]bool, n)
		var succ []int
		for _, j := range r.successors(r.ids[i]) {
			if !r.reach[i][r.idx[j]] {
				r.reach[i][r.idx[j]] = true
				succ = append(succ, r.idx[j])
			}
		}
		r.succ = append(r.succ, succ)
	}
	// Floyd-Warshall transitive closure.
	for k := 0; k < n; k++ {
		for i := 0; i < n; i++ {
			if !r.reach[i][k] {
				continue
			}
			for j := 0; j < n; j++ {
				if r.reach[k][j] {
					r.reach[i][j] = true
				}
			}
		}
	}
	r.reachList = make([][]int, n)
	for i := range r.reach {
		for j, ok := range r.reach[i] {
			if ok {
				r.reachList[i] = append(r.reachList[i], j)
			}
		}
	}
	return r
}

func cmpID(a, b protocol.InstanceID) int {
	if c := cmp.Compare(a.Replica, b.Replica); c != 0 {
		return c
	}
	return cmp.Compare(a.Num, b.Num)
}

// successors expands prefix dependencies: (R, n) stands for R.1 .. R.n.
func (r *reference) successors(id protocol.InstanceID) []protocol.InstanceID {
	var out []protocol.InstanceID
	for _, d := range r.insts[id].Deps {
		for k := uint64(1); k <= d.Num; k++ {
			out = append(out, protocol.InstanceID{Replica: d.Replica, Num: k})
		}
	}
	return out
}

// mustHaveExecuted returns the committed instances whose whole closure is committed.
// committed is indexed like r.ids.
func (r *reference) mustHaveExecuted(committed []bool) map[protocol.InstanceID]bool {
	out := map[protocol.InstanceID]bool{}
	for i, id := range r.ids {
		if !committed[i] {
			continue
		}
		ok := true
		for _, j := range r.reachList[i] {
			if !committed[j] {
				ok = false
				break
			}
		}
		if ok {
			out[id] = true
		}
	}
	return out
}

// blocked returns the uncommitted instances that some committed, unexecuted instance
// depends on directly.
// committed and executed are indexed like r.ids.
func (r *reference) blocked(committed, executed []bool) []protocol.InstanceID {
	set := make([]bool, len(r.ids))
	for i := range r.ids {
		if !committed[i] || executed[i] {
			continue
		}
		for _, j := range r.succ[i] {
			if !committed[j] {
				set[j] = true
			}
		}
	}
	var out []protocol.InstanceID
	for j, ok := range set {
		if ok {
			out = append(out, r.ids[j]) // r.ids is sorted
		}
	}
	return out
}

// mustPrecede reports whether a must execute before b.
func (r *reference) mustPrecede(a, b protocol.InstanceID) bool {
	i, j := r.idx[a], r.idx[b]
	ab, ba := r.reach[i][j], r.reach[j][i]
	switch {
	case ab && ba: // same component
		x, y := r.insts[a], r.insts[b]
		if x.Seq != y.Seq {
			return x.Seq < y.Seq
		}
		return cmpID(a, b) < 0
	case ba: // b depends on a
		return true
	}
	return false
}

// checkOrder verifies an execution order against every constraint among its instances.
func (r *reference) checkOrder(order []protocol.InstanceID) error {
	pos := map[protocol.InstanceID]int{}
	for i, id := range order {
		if _, dup := pos[id]; dup {
			return fmt.Errorf("%v executed twice", id)
		}
		pos[id] = i
	}
	for _, a := range order {
		for _, b := range order {
			if a != b && r.mustPrecede(a, b) && pos[a] > pos[b] {
				return fmt.Errorf("%v must execute before %v, got positions %d and %d", a, b, pos[a], pos[b])
			}
		}
	}
	return nil
}
