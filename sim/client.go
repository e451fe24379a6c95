package sim

import (
	"fmt"
	"time"

	"github.com/parliament-lab/parliament/check"
	"github.com/parliament-lab/parliament/protocol"
)

// Client timing, in virtual time.
const (
	retryTimeout = int64(1500 * time.Millisecond) // plus up to half of it again, drawn
	maxThink     = int64(20 * time.Millisecond)
	// redirectBackoff (plus up to as much again) delays the retry of a command redirected
	// by a replica that knows no leader.
	redirectBackoff = int64(25 * time.Millisecond)
)

// client is a simulated closed-loop client: one operation outstanding at a time, sent to
// a replica at (or near) its site, retried with the same (client ID, sequence number) on
// timeout, possibly at another replica, and redirected when a replica says so.
type client struct {
	idx      int    // zero-based: the porcupine lane
	id       uint64 // protocol ClientID
	home     int    // replica index whose site the client sits at
	seq      uint64
	op       int // history index of the outstanding operation, -1 when idle
	cmd      protocol.Command
	attempt  int // global attempt counter: stale timers carry an older value
	target   int
	lastSeen map[string]string // last value seen per key, so that some CAS succeed

	final     bool     // a final reader: pinned to home, reads finalKeys in turn
	finalKeys []string // keys still to read
}

func (s *sim) issue(c *client) {
	if c.op >= 0 {
		return
	}
	var cmd protocol.Command
	if c.final {
		if len(c.finalKeys) == 0 {
			return
		}
		cmd = protocol.Command{Op: protocol.OpGet, Key: []byte(c.finalKeys[0])}
		c.finalKeys = c.finalKeys[1:]
	} else {
		if s.issued >= s.cfg.Ops {
			return
		}
		s.issued++
		cmd = s.nextCommand(c)
	}
	c.seq++
	cmd.ClientID, cmd.Seq = c.id, c.seq
	c.cmd = cmd
	s.history = append(s.history, check.Op{
		Client: c.idx, ClientID: c.id, Seq: c.seq, Kind: cmd.Op, Key: string(cmd.Key),
		Value: string(cmd.Value), Old: string(cmd.Old), Call: s.now,
	})
	c.op = len(s.history) - 1
	c.target = c.home
	if s.trace != nil {
		s.tracef("client %d invokes %s at r%d", c.id, check.FormatCommand(&cmd), c.target+1)
	}
	s.sendRequest(c)
}

// nextCommand draws a GET (40%), PUT (40%) or CAS (20%) on the small key set. Values are
// unique per command, so a read identifies the write it saw, which is what makes the
// linearizability check sharp.
func (s *sim) nextCommand(c *client) protocol.Command {
	rng := s.cliRng
	key := s.keys[rng.IntN(len(s.keys))]
	val := fmt.Sprintf("v%d.%d", c.id, c.seq+1)
	switch x := rng.IntN(10); {
	case x < 4:
		return protocol.Command{Op: protocol.OpGet, Key: []byte(key)}
	case x < 8:
		return protocol.Command{Op: protocol.OpPut, Key: []byte(key), Value: []byte(val)}
	default:
		old := c.lastSeen[key] // "" when never seen: succeeds on an absent key
		if rng.IntN(5) == 0 {
			old = "nope"
		}
		return protocol.Command{Op: protocol.OpCAS, Key: []byte(key), Value: []byte(val), Old: []byte(old)}
	}
}

// clientDelay draws the one-way delay between a client's site and a replica.
func (s *sim) clientDelay(c *client, replica int) int64 {
	d := s.oneWay[c.home][replica]
	return d + int64(float64(d)*jitterFrac*s.netRng.Float64()) + minDelay
}

func (s *sim) sendRequest(c *client) {
	c.attempt++
	timeout := retryTimeout + s.cliRng.Int64N(retryTimeout/2)
	s.after(timeout, event{kind: evTimeout, client: c.idx, attempt: c.attempt})
	if s.lost() {
		s.res.Dropped++
		if s.trace != nil {
			s.tracef("client %d request %s to r%d lost", c.id, check.FormatCommand(&c.cmd), c.target+1)
		}
		return
	}
	s.after(s.clientDelay(c, c.target), event{kind: evRequest, node: c.target, client: c.idx, cmd: c.cmd.Clone()})
}

// request: a client command reaches a replica, which proposes it.
func (s *sim) request(e *event) {
	nd := s.nodes[e.node]
	if !nd.up {
		if s.trace != nil {
			s.tracef("r%d is down: request %s lost", nd.id, check.FormatCommand(&e.cmd))
		}
		return
	}
	nd.waiting[check.CmdID{ClientID: e.cmd.ClientID, Seq: e.cmd.Seq}] = e.client
	if s.trace != nil {
		s.tracef("r%d propose %s", nd.id, check.FormatCommand(&e.cmd))
	}
	nd.eng.Propose([]protocol.Command{e.cmd})
	s.afterInput(nd)
}

func (s *sim) replyToClient(nd *node, ci int, rep protocol.Reply) {
	c := s.clients[ci]
	if s.lost() {
		s.res.Dropped++
		s.tracef("r%d reply to client %d #%d lost", nd.id, c.id, rep.Seq)
		return
	}
	s.after(s.clientDelay(c, nd.idx), event{kind: evReply, client: ci, node: nd.idx, reply: rep})
}

func (s *sim) clientReply(e *event) {
	c := s.clients[e.client]
	rep := &e.reply
	if c.op < 0 || rep.Seq != c.seq {
		s.tracef("client %d ignores stale reply #%d %v from r%d", c.id, rep.Seq, rep.Result, e.node+1)
		return
	}
	switch rep.Result {
	case protocol.ResultRedirect:
		next := int(rep.Leader) - 1
		if next < 0 || next >= len(s.nodes) || next == e.node {
			next = s.otherReplica(e.node)
		}
		c.target = next
		if rep.Leader == 0 {
			// No leader known (an election is under way): back off briefly instead of
			// bouncing between leaderless replicas at network speed.
			backoff := redirectBackoff + s.cliRng.Int64N(redirectBackoff)
			if s.trace != nil {
				s.tracef("client %d redirected by r%d (no leader): retries at r%d in %s", c.id, e.node+1, next+1, check.FormatTime(backoff))
			}
			s.after(backoff, event{kind: evResend, client: c.idx, attempt: c.attempt})
			return
		}
		s.tracef("client %d redirected by r%d to r%d", c.id, e.node+1, next+1)
		s.sendRequest(c)
		return
	case protocol.ResultError:
		// Refused (the store could not serve a duplicate?): the retry timer resends it.
		s.tracef("client %d got error %q from r%d; will retry", c.id, rep.Value, e.node+1)
		return
	}
	op := &s.history[c.op]
	op.Known, op.Return, op.Result, op.Out = true, s.now, rep.Result, string(rep.Value)
	if s.trace != nil {
		s.tracef("client %d completes %s", c.id, op.Tag())
	}
	key := op.Key
	switch {
	case op.Kind == protocol.OpGet:
		c.lastSeen[key] = op.Out
	case op.Kind == protocol.OpPut, op.Kind == protocol.OpCAS && op.Result == protocol.ResultOK:
		c.lastSeen[key] = op.Value
		s.acked = append(s.acked, check.CmdID{ClientID: c.id, Seq: c.seq})
	case op.Result == protocol.ResultCASFailed:
		c.lastSeen[key] = op.Out
	}
	c.op = -1
	if c.final {
		s.after(0, event{kind: evIssue, client: c.idx})
		return
	}
	s.finished++
	s.after(s.cliRng.Int64N(maxThink), event{kind: evIssue, client: c.idx})
}

func (s *sim) clientTimeout(e *event) {
	c := s.clients[e.client]
	if c.op < 0 || e.attempt != c.attempt {
		return
	}
	if !c.final && len(s.nodes) > 1 && s.cliRng.IntN(2) == 0 {
		c.target = s.otherReplica(c.target)
	} else if c.final {
		c.target = c.home
	}
	s.tracef("client %d times out on #%d; retries at r%d", c.id, c.seq, c.target+1)
	s.sendRequest(c)
}

func (s *sim) otherReplica(not int) int {
	n := len(s.nodes)
	if n == 1 {
		return 0
	}
	x := s.cliRng.IntN(n - 1)
	if x >= not {
		x++
	}
	return x
}

// startFinalReads begins the last part of the liveness phase: a reader pinned to each
// replica reads every key there. Every read must see the latest acknowledged write
// (linearizability), and executing it forces the replica to execute every write it
// depends on (durability).
func (s *sim) startFinalReads() {
	s.final = true
	s.tracef("workload done: final reads of %d keys at every replica", len(s.keys))
	for i := range s.nodes {
		c := &client{idx: len(s.clients), id: uint64(len(s.clients) + 1), home: i, op: -1,
			final: true, finalKeys: append([]string(nil), s.keys...), lastSeen: map[string]string{}}
		s.clients = append(s.clients, c)
		s.after(0, event{kind: evIssue, client: c.idx})
	}
}
