package check

import (
	"fmt"
	"hash/fnv"
	"math"
	"sort"
	"strconv"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/parliament-lab/parliament/protocol"
)

// Op is one client operation of a history: a GET, PUT or CAS with its invocation time and,
// when the client saw the outcome, its completion time and result.
//
// An operation whose outcome is unknown (the client never got an answer: lost reply,
// crashed replica, run ended) may or may not have taken effect. It is given to porcupine
// with a completion time of +infinity and a model step that accepts any outcome, so the
// checker may linearize it anywhere after its invocation, including "never" (after every
// other operation), which is exactly the freedom an unanswered operation has.
type Op struct {
	Client   int // zero-based client number (one lane of the visualization per client)
	ClientID uint64
	Seq      uint64
	Kind     protocol.Op // OpGet, OpPut or OpCAS
	Key      string
	Value    string // PUT, CAS: the new value
	Old      string // CAS: the expected value (absent key = "")
	Call     int64  // invocation, virtual nanoseconds
	Return   int64  // completion (Known only)
	Known    bool   // the client received a reply
	Result   protocol.Result
	Out      string // GET: the value read; failed CAS: the current value
}

func (o *Op) String() string {
	var in string
	switch o.Kind {
	case protocol.OpGet:
		in = fmt.Sprintf("get(%s)", o.Key)
	case protocol.OpPut:
		in = fmt.Sprintf("put(%s, %q)", o.Key, o.Value)
	case protocol.OpCAS:
		in = fmt.Sprintf("cas(%s, %q -> %q)", o.Key, o.Old, o.Value)
	default:
		in = o.Kind.String()
	}
	if !o.Known {
		return in + " -> ?"
	}
	switch {
	case o.Kind == protocol.OpGet && o.Result == protocol.ResultOK:
		return fmt.Sprintf("%s -> %q", in, o.Out)
	case o.Result == protocol.ResultCASFailed:
		return fmt.Sprintf("%s -> cas-failed %q", in, o.Out)
	}
	return in + " -> " + o.Result.String()
}

// kvInput and kvOutput are what porcupine sees; kvState is the per-key state (the model is
// partitioned by key, so a state is one register). All three are comparable values, so
// porcupine's default == equality works.
type kvInput struct {
	kind       protocol.Op
	key        string
	value, old string
	tag        string // "c<client>#<seq>" for the visualization
}

type kvOutput struct {
	known  bool
	result protocol.Result
	out    string
}

type kvState struct {
	present bool
	value   string
}

// current is what a CAS compares with and what a failed CAS reports: an absent key reads
// as the empty value (protocol.OpCAS).
func (s kvState) current() string { return s.value }

func kvStep(state, input, output interface{}) (bool, interface{}) {
	s := state.(kvState)
	in := input.(kvInput)
	out := output.(kvOutput)
	switch in.kind {
	case protocol.OpGet:
		if !out.known {
			return true, s
		}
		switch out.result {
		case protocol.ResultOK:
			return s.present && s.value == out.out, s
		case protocol.ResultNotFound:
			return !s.present, s
		}
		return false, s
	case protocol.OpPut:
		// An unanswered PUT that is linearized took effect; one that did not is linearized
		// after everything else, where its effect is invisible.
		next := kvState{present: true, value: in.value}
		if !out.known {
			return true, next
		}
		return out.result == protocol.ResultOK, next
	case protocol.OpCAS:
		match := s.current() == in.old
		next := s
		if match {
			next = kvState{present: true, value: in.value}
		}
		if !out.known {
			return true, next
		}
		switch out.result {
		case protocol.ResultOK:
			return match, next
		case protocol.ResultCASFailed:
			return !match && out.out == s.current(), s
		}
		return false, s
	}
	return false, s
}

// KVModel is the sequential specification of the key-value store: one register per key
// (porcupine checks each key's sub-history on its own, which is sound because operations
// on different keys commute and linearizability is compositional, Herlihy & Wing §3.3).
func KVModel() porcupine.Model {
	return porcupine.Model{
		Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
			byKey := map[string][]porcupine.Operation{}
			for _, op := range history {
				k := op.Input.(kvInput).key
				byKey[k] = append(byKey[k], op)
			}
			keys := make([]string, 0, len(byKey))
			for k := range byKey {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			parts := make([][]porcupine.Operation, 0, len(keys))
			for _, k := range keys {
				parts = append(parts, byKey[k])
			}
			return parts
		},
		Init: func() interface{} { return kvState{} },
		Step: kvStep,
		Hash: func(state interface{}) uint64 {
			s := state.(kvState)
			h := fnv.New64a()
			h.Write([]byte(s.value))
			if s.present {
				return h.Sum64() ^ 1
			}
			return h.Sum64()
		},
		DescribeOperation: func(input, output interface{}) string {
			in := input.(kvInput)
			out := output.(kvOutput)
			op := Op{Kind: in.kind, Key: in.key, Value: in.value, Old: in.old,
				Known: out.known, Result: out.result, Out: out.out}
			return in.tag + " " + op.String()
		},
		DescribeState: func(state interface{}) string {
			s := state.(kvState)
			if !s.present {
				return "(absent)"
			}
			return strconv.Quote(s.value)
		},
	}
}

// Operations converts a history to porcupine operations. Unknown outcomes complete at
// +infinity; GETs with unknown outcome are left out (they constrain nothing).
func Operations(h []Op) []porcupine.Operation {
	ops := make([]porcupine.Operation, 0, len(h))
	for i := range h {
		o := &h[i]
		if !o.Known && o.Kind == protocol.OpGet {
			continue
		}
		ret := int64(math.MaxInt64)
		if o.Known {
			ret = o.Return
		}
		ops = append(ops, porcupine.Operation{
			ClientId: o.Client,
			Input: kvInput{kind: o.Kind, key: o.Key, value: o.Value, old: o.Old,
				tag: fmt.Sprintf("c%d#%d", o.ClientID, o.Seq)},
			Call:   o.Call,
			Output: kvOutput{known: o.Known, result: o.Result, out: o.Out},
			Return: ret,
		})
	}
	return ops
}

// LinResult is the verdict of CheckLinearizable.
type LinResult struct {
	// Result is porcupine.Ok, porcupine.Illegal, or porcupine.Unknown when the search ran
	// out of time (not a violation, but nothing was proved).
	Result porcupine.CheckResult
	Ops    int // operations given to porcupine
	info   porcupine.LinearizationInfo
	model  porcupine.Model
	// verbose is set when info holds partial linearizations for the visualization.
	verbose bool
	badKey  string // an illegal key sub-history, when Illegal
	badOps  int
}

// Ok reports whether the history was proved linearizable.
func (r *LinResult) Ok() bool { return r.Result == porcupine.Ok }

// Illegal reports whether the history was proved not linearizable.
func (r *LinResult) Illegal() bool { return r.Result == porcupine.Illegal }

// Visualize writes porcupine's interactive HTML rendering of the history (with the
// longest partial linearizations and the point where each one fails) to path.
func (r *LinResult) Visualize(path string) error {
	if !r.verbose {
		return fmt.Errorf("check: no linearization info to visualize")
	}
	return porcupine.VisualizePath(r.model, r.info, path)
}

// CheckLinearizable checks h against the KV model. The search is NP-hard in general;
// timeout bounds it (0 = no bound) and a timeout yields porcupine.Unknown. When the
// history is illegal the check is repeated in verbose mode so that Visualize works.
func CheckLinearizable(h []Op, timeout time.Duration) *LinResult {
	model := KVModel()
	ops := Operations(h)
	res := porcupine.CheckOperationsTimeout(model, ops, timeout)
	r := &LinResult{Result: res, Ops: len(ops), model: model}
	if res == porcupine.Illegal {
		vres, info := porcupine.CheckOperationsVerbose(model, ops, timeout)
		if vres == porcupine.Illegal {
			r.info = info
			r.verbose = true
		}
		for _, p := range model.Partition(ops) {
			if porcupine.CheckOperationsTimeout(model, p, timeout) == porcupine.Illegal {
				r.badKey, r.badOps = p[0].Input.(kvInput).key, len(p)
				break
			}
		}
	}
	return r
}

// Violation describes an illegal history in one line (nil unless Illegal).
func (r *LinResult) Violation() *Violation {
	if !r.Illegal() {
		return nil
	}
	d := "the client history has no linearization"
	if r.badKey != "" {
		d = fmt.Sprintf("the history of key %s (%d operations) has no linearization", r.badKey, r.badOps)
	}
	return &Violation{Property: Linearizability, Detail: d}
}
