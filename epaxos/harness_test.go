package epaxos

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/parliament-lab/parliament/protocol"
)

// cluster is a tiny in-test network: every message an engine sends waits in a queue
// until the test delivers or drops it; ticks, proposals, crashes and restarts (from the
// records the replica persisted) are explicit. Every Ready is checked: an instance is
// committed once per replica incarnation and with the same value everywhere.
type cluster struct {
	t       testing.TB
	ids     []protocol.ReplicaID
	mutate  func(*Config)
	eng     map[protocol.ReplicaID]*Engine
	disk    map[protocol.ReplicaID][]protocol.Record
	down    map[protocol.ReplicaID]bool
	queue   []protocol.Message
	decided map[protocol.InstanceID]string                                   // first committed fingerprint
	commits map[protocol.ReplicaID]map[protocol.InstanceID]protocol.Instance // this incarnation
	sent    []protocol.Message                                               // every message ever sent (for assertions)
	client  uint64
	// exec makes run() act like the runtime's executor: suspect what committed
	// instances wait on, and be quiet only when every committed instance is executable.
	exec bool
	gone counters // internal counters of engines replaced by restarts
	// compactEvery > 0 makes run() compact every live replica (and replace its log with
	// LiveRecords) every compactEvery ticks, as the runtime does periodically.
	compactEvery int
}

func newCluster(t testing.TB, n int, mutate func(*Config)) *cluster {
	c := &cluster{
		t: t, mutate: mutate,
		eng:     map[protocol.ReplicaID]*Engine{},
		disk:    map[protocol.ReplicaID][]protocol.Record{},
		down:    map[protocol.ReplicaID]bool{},
		decided: map[protocol.InstanceID]string{},
		commits: map[protocol.ReplicaID]map[protocol.InstanceID]protocol.Instance{},
	}
	for i := 1; i <= n; i++ {
		c.ids = append(c.ids, protocol.ReplicaID(i))
	}
	for _, id := range c.ids {
		c.start(id)
	}
	return c
}

func (c *cluster) config(id protocol.ReplicaID) Config {
	cfg := DefaultConfig()
	cfg.ID = id
	cfg.Replicas = c.ids
	cfg.Seed = 42
	cfg.RecoveryTicks = 20
	cfg.Records = slices.Clone(c.disk[id])
	if c.mutate != nil {
		c.mutate(&cfg)
	}
	return cfg
}

func (c *cluster) start(id protocol.ReplicaID) {
	if old := c.eng[id]; old != nil {
		c.gone.add(old.counts)
	}
	e, err := New(c.config(id))
	if err != nil {
		c.t.Fatalf("New(%d): %v", id, err)
	}
	c.eng[id] = e
	c.commits[id] = map[protocol.InstanceID]protocol.Instance{}
	c.flush(id)
}

// crash stops id: its engine and every message to it are gone; its disk stays.
func (c *cluster) crash(id protocol.ReplicaID) {
	c.down[id] = true
	c.dropWhere(func(m protocol.Message) bool { return m.To == id })
}

// restart rebuilds id from the records it persisted.
func (c *cluster) restart(id protocol.ReplicaID) {
	delete(c.down, id)
	c.start(id)
}

func fingerprint(in protocol.Instance) string {
	var b strings.Builder
	fmt.Fprintf(&b, "seq=%d deps=%v cmds=", in.Seq, in.Deps)
	for _, cmd := range in.Cmds {
		fmt.Fprintf(&b, "%v:%d/%d:%s=%s,", cmd.Op, cmd.ClientID, cmd.Seq, cmd.Key, cmd.Value)
	}
	return b.String()
}

// flush runs the Ready/Advance cycle of id, checking the commits.
func (c *cluster) flush(id protocol.ReplicaID) {
	if c.down[id] {
		return
	}
	e := c.eng[id]
	rd := e.Ready()
	c.disk[id] = append(c.disk[id], rd.Persist...)
	for _, m := range rd.Messages {
		if m.From != id {
			c.t.Fatalf("replica %d sent a message from %d: %v", id, m.From, m)
		}
		if m.Type == protocol.MsgSnapshot && (m.To == 0 || m.To == id || len(m.Data) != 0 || len(m.Deps) == 0) {
			c.t.Fatalf("replica %d sent a malformed snapshot offer %v deps=%v data=%d", id, m, m.Deps, len(m.Data))
		}
		c.queue = append(c.queue, m)
		c.sent = append(c.sent, m)
	}
	for _, in := range rd.Committed {
		if in.Status != protocol.StatusCommitted {
			c.t.Fatalf("replica %d: Committed instance %v has status %v", id, in.ID, in.Status)
		}
		if _, dup := c.commits[id][in.ID]; dup {
			c.t.Fatalf("replica %d committed %v twice", id, in.ID)
		}
		if r := e.ri(in.ID.Replica); in.ID.Num <= e.cf[r] {
			c.t.Fatalf("replica %d emitted %v, covered by its compacted frontier %v", id, in.ID, e.Frontier())
		}
		c.commits[id][in.ID] = in
		fp := fingerprint(in)
		if prev, ok := c.decided[in.ID]; ok && prev != fp {
			c.t.Fatalf("AGREEMENT VIOLATED: instance %v committed as\n  %s\nand at replica %d as\n  %s", in.ID, prev, id, fp)
		}
		c.decided[in.ID] = fp
	}
	e.Advance(rd)
}

func (c *cluster) flushAll() {
	for _, id := range c.ids {
		c.flush(id)
	}
}

func (c *cluster) cmd(op protocol.Op, key, val string) protocol.Command {
	c.client++
	return protocol.Command{ClientID: c.client, Seq: 1, Op: op, Key: []byte(key), Value: []byte(val)}
}

func (c *cluster) put(key, val string) protocol.Command { return c.cmd(protocol.OpPut, key, val) }

func (c *cluster) propose(id protocol.ReplicaID, cmds ...protocol.Command) {
	c.eng[id].Propose(cmds)
	c.flush(id)
}

// deliverWhere delivers, in queue order, every queued message matching pred (and the
// messages they cause that also match), and returns how many it delivered.
func (c *cluster) deliverWhere(pred func(m protocol.Message) bool) int {
	n := 0
	for steps := 0; steps < 1_000_000; steps++ {
		i := slices.IndexFunc(c.queue, pred)
		if i < 0 {
			return n
		}
		m := c.queue[i]
		c.queue = slices.Delete(c.queue, i, i+1)
		if c.down[m.To] {
			continue
		}
		c.eng[m.To].Step(m)
		c.flush(m.To)
		n++
	}
	c.t.Fatalf("deliverWhere: no quiescence")
	return n
}

func (c *cluster) deliverAll() int {
	return c.deliverWhere(func(protocol.Message) bool { return true })
}

func (c *cluster) dropWhere(pred func(m protocol.Message) bool) {
	c.queue = slices.DeleteFunc(c.queue, pred)
}

func (c *cluster) tick(n int) {
	for range n {
		for _, id := range c.ids {
			if !c.down[id] {
				c.eng[id].Tick()
				c.flush(id)
			}
		}
	}
}

// run delivers and ticks until every live replica has committed every instance any
// replica knows, or fails after maxTicks.
func (c *cluster) run(maxTicks int) {
	for i := 0; i < maxTicks; i++ {
		c.deliverAll()
		if c.quiet() {
			return
		}
		if c.exec {
			for _, id := range c.ids {
				c.suspectBlocked(id)
			}
			c.deliverAll()
		}
		if c.compactEvery > 0 && i%c.compactEvery == 0 {
			for _, id := range c.ids {
				if !c.down[id] {
					c.compact(id)
					c.truncate(id)
				}
			}
		}
		c.tick(1)
	}
	c.t.Fatalf("no progress after %d ticks: %s", maxTicks, c.describe())
}

func (c *cluster) quiet() bool {
	for _, id := range c.ids {
		if c.down[id] {
			continue
		}
		e := c.eng[id]
		if len(e.pending) > 0 || e.inflight > 0 {
			return false
		}
		for _, row := range e.rows {
			for _, inst := range row {
				if inst != nil && inst.status != protocol.StatusNone && inst.status != protocol.StatusCommitted {
					return false
				}
			}
		}
		if c.exec && len(blocked(e)) > 0 {
			return false
		}
	}
	return len(c.queue) == 0
}

// execFrontier is what an executor could have executed at e: per row the longest prefix
// of committed instances (above the compacted frontier) whose dependencies all lie
// inside the prefixes (a fixpoint). Tests hand it to Compact.
func execFrontier(e *Engine) []uint64 {
	f := slices.Clone(e.cf)
	for r := range f {
		for f[r] < e.rowEnd(r) {
			x := e.get(protocol.InstanceID{Replica: e.ids[r], Num: f[r] + 1}, false)
			if x == nil || x.status != protocol.StatusCommitted {
				break
			}
			f[r]++
		}
	}
	for changed := true; changed; {
		changed = false
		for r := range f {
			for num := e.cf[r] + 1; num <= f[r]; num++ {
				x := e.get(protocol.InstanceID{Replica: e.ids[r], Num: num}, false)
				ok := x != nil
				for q, v := range x.deps {
					if v > f[q] {
						ok = false
					}
				}
				if !ok {
					f[r] = num - 1
					changed = true
					break
				}
			}
		}
	}
	return f
}

// compact gives replica id its executable frontier, as the runtime does after a
// snapshot, and returns it.
func (c *cluster) compact(id protocol.ReplicaID) []protocol.InstanceID {
	e := c.eng[id]
	f := e.listOf(execFrontier(e))
	e.Compact(f)
	c.flush(id)
	return f
}

// truncate replaces id's log with LiveRecords, as the runtime does after a snapshot.
func (c *cluster) truncate(id protocol.ReplicaID) {
	c.disk[id] = c.eng[id].LiveRecords()
}

// blocked lists what committed instances at e wait on: dependencies neither committed
// in memory nor covered by the compacted frontier (the executor's Blocked).
func blocked(e *Engine) []protocol.InstanceID {
	var out []protocol.InstanceID
	seen := map[protocol.InstanceID]bool{}
	for _, row := range e.rows {
		for _, x := range row {
			if x == nil || x.status != protocol.StatusCommitted {
				continue
			}
			for q, v := range x.deps {
				for num := e.cf[q] + 1; num <= v; num++ {
					id := protocol.InstanceID{Replica: e.ids[q], Num: num}
					if d := e.get(id, false); (d == nil || d.status != protocol.StatusCommitted) && !seen[id] {
						seen[id] = true
						out = append(out, id)
					}
				}
			}
		}
	}
	return out
}

// recoverNow starts a recovery of x at id at once, as its recovery timer firing would:
// unlike Suspect, it does not defer to another replica's recovery under way.
func (c *cluster) recoverNow(id protocol.ReplicaID, x protocol.InstanceID) {
	e := c.eng[id]
	inst := e.get(x, true)
	e.watchInst(inst)
	e.startRecovery(inst)
}

// suspectBlocked hands Suspect what the executor at id would report as blocked.
func (c *cluster) suspectBlocked(id protocol.ReplicaID) {
	if c.down[id] {
		return
	}
	if b := blocked(c.eng[id]); len(b) > 0 {
		c.eng[id].Suspect(b)
		c.flush(id)
	}
}

func (c *cluster) describe() string {
	var b strings.Builder
	for _, id := range c.ids {
		if c.down[id] {
			fmt.Fprintf(&b, "\n  %d: down", id)
			continue
		}
		e := c.eng[id]
		fmt.Fprintf(&b, "\n  %d: pending=%d inflight=%d", id, len(e.pending), e.inflight)
		for _, row := range e.rows {
			for _, inst := range row {
				if inst != nil && inst.status != protocol.StatusCommitted && inst.status != protocol.StatusNone {
					ph := phase(0)
					if inst.lead != nil {
						ph = inst.lead.phase
					}
					fmt.Fprintf(&b, " %v(%v b=%v vb=%v ph=%d)", inst.id, inst.status, inst.ballot, inst.vballot, ph)
				}
			}
		}
	}
	return b.String()
}

// committedAt returns the instance as committed at replica id.
func (c *cluster) committedAt(id protocol.ReplicaID, inst protocol.InstanceID) (protocol.Instance, bool) {
	in, ok := c.commits[id][inst]
	return in, ok
}

// mustCommitted fails unless inst is committed at every live replica with one value.
func (c *cluster) mustCommitted(inst protocol.InstanceID) protocol.Instance {
	c.t.Helper()
	var first protocol.Instance
	for i, id := range c.ids {
		if c.down[id] {
			continue
		}
		in, ok := c.committedAt(id, inst)
		if !ok {
			c.t.Fatalf("%v not committed at replica %d: %s", inst, id, c.describe())
		}
		if i == 0 || first.ID.Num == 0 {
			first = in
		}
	}
	return first
}

// Message predicates.
func to(id protocol.ReplicaID) func(protocol.Message) bool {
	return func(m protocol.Message) bool { return m.To == id }
}
func from(id protocol.ReplicaID) func(protocol.Message) bool {
	return func(m protocol.Message) bool { return m.From == id }
}
func ofType(t protocol.MsgType) func(protocol.Message) bool {
	return func(m protocol.Message) bool { return m.Type == t }
}
func about(inst protocol.InstanceID) func(protocol.Message) bool {
	return func(m protocol.Message) bool { return m.Inst == inst }
}
func and(ps ...func(protocol.Message) bool) func(protocol.Message) bool {
	return func(m protocol.Message) bool {
		for _, p := range ps {
			if !p(m) {
				return false
			}
		}
		return true
	}
}
func or(ps ...func(protocol.Message) bool) func(protocol.Message) bool {
	return func(m protocol.Message) bool {
		for _, p := range ps {
			if p(m) {
				return true
			}
		}
		return false
	}
}

func iid(r protocol.ReplicaID, n uint64) protocol.InstanceID {
	return protocol.InstanceID{Replica: r, Num: n}
}

// dependsOn reports whether a's deps cover b (prefix semantics).
func dependsOn(a, b protocol.Instance) bool {
	n, ok := a.Dep(b.ID.Replica)
	return ok && n >= b.ID.Num
}

func conflicting(a, b protocol.Instance) bool {
	for i := range a.Cmds {
		for j := range b.Cmds {
			if a.Cmds[i].Conflicts(&b.Cmds[j]) {
				return true
			}
		}
	}
	return false
}

// checkVisibility checks the EPaxos invariant that makes execution consistent: of two
// committed conflicting instances, at least one depends on the other.
func (c *cluster) checkVisibility() {
	c.t.Helper()
	all := map[protocol.InstanceID]protocol.Instance{}
	for _, id := range c.ids {
		for k, in := range c.commits[id] {
			all[k] = in
		}
	}
	keys := make([]protocol.InstanceID, 0, len(all))
	for k := range all {
		keys = append(keys, k)
	}
	for i := range keys {
		for j := i + 1; j < len(keys); j++ {
			a, b := all[keys[i]], all[keys[j]]
			if conflicting(a, b) && !dependsOn(a, b) && !dependsOn(b, a) {
				c.t.Fatalf("VISIBILITY VIOLATED: conflicting %v (%s) and %v (%s) do not depend on each other",
					a.ID, fingerprint(a), b.ID, fingerprint(b))
			}
		}
	}
}

// executesBefore orders two committed conflicting instances the way the executor does
// when no third instance links them: dependency first, and inside a cycle by
// (Seq, Replica, Num).
func executesBefore(a, b protocol.Instance) bool {
	ab, ba := dependsOn(a, b), dependsOn(b, a)
	switch {
	case ba && !ab:
		return true
	case ab && !ba:
		return false
	}
	if a.Seq != b.Seq {
		return a.Seq < b.Seq
	}
	if a.ID.Replica != b.ID.Replica {
		return a.ID.Replica < b.ID.Replica
	}
	return a.ID.Num < b.ID.Num
}

var _ = rand.New

// deliverAt delivers the i-th queued message.
func (c *cluster) deliverAt(i int) {
	m := c.queue[i]
	c.queue = slices.Delete(c.queue, i, i+1)
	if c.down[m.To] {
		return
	}
	c.eng[m.To].Step(m)
	c.flush(m.To)
}
