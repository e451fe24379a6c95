package replica

import (
	"fmt"
	"slices"
	"time"

	"github.com/parliament-lab/parliament/protocol"
)

// forgetTicks is how long a command may wait here for its commit before the replica
// forgets it (a client that timed out retries with the same (client, seq), possibly at
// another replica, and gets its reply there).
const forgetTicks = 6000 // one minute at the default 10 ms tick

// maxReadyRounds bounds the Ready/Advance rounds per loop iteration, so that a busy engine
// cannot starve the channels.
const maxReadyRounds = 4

// run is the event loop: the only goroutine that touches the engine, the executor and the
// store. It owns the log and closes it on its way out — also when Stop has given up on it
// (a stuck fsync) and the transport is already closed.
func (r *Replica) run() {
	defer close(r.doneC)
	defer r.closeLog()
	ticker := time.NewTicker(r.cl.Tick.D())
	defer ticker.Stop()
	recv := r.tr.Recv()
	p := r.newPipeline() // nil: the log commits synchronously
	for {
		// Block for the next event...
		select {
		case <-r.stopC:
			// What was done before Stop leaves as it would have without the pipeline.
			if err := p.drain(r); err != nil {
				r.fail(err)
				return
			}
			r.shutdown()
			return
		case msgs, ok := <-recv:
			if !ok {
				recv = nil
				continue
			}
			if err := r.step(p, msgs); err != nil {
				r.fail(err)
				return
			}
		case <-r.in.signal:
			r.takeClients()
		case <-ticker.C:
			r.tick()
		case err := <-p.headC():
			// An fsync ended: release what it made durable (sync.go).
			if err := p.synced(r, err); err != nil {
				r.fail(err)
				return
			}
		}
		// ...then take everything else already waiting, without blocking, so that one
		// Ready covers all of it (and all client commands go into one Propose).
	drain:
		for {
			select {
			case msgs, ok := <-recv:
				if !ok {
					recv = nil
					break drain
				}
				if err := r.step(p, msgs); err != nil {
					r.fail(err)
					return
				}
			case <-r.in.signal:
				r.takeClients()
			case err := <-p.headC():
				if err := p.synced(r, err); err != nil {
					r.fail(err)
					return
				}
			default:
				break drain
			}
		}
		if len(r.batches) > 0 {
			r.propose()
		}
		if err := r.handleReady(p); err != nil {
			r.fail(err)
			return
		}
		if err := r.maybeCheckpoint(); err != nil {
			r.fail(err)
			return
		}
	}
}

// closeLog closes the log (the loop's, on its way out; Start's, when it fails).
func (r *Replica) closeLog() {
	defer r.diskEnd(r.diskBegin())
	if err := r.wal.Close(); err != nil {
		r.log.Error("closing log", "err", err)
	}
}

// fail stops the loop after an error of the log or the snapshot files: what the engine
// believes durable may not be, so the only safe continuation is a restart from the disk.
// Outputs still held for their fsync (sync.go) are dropped, never released.
func (r *Replica) fail(err error) {
	r.err = err
	r.log.Error("stopping: cannot persist", "err", err)
	r.shutdown()
}

func (r *Replica) step(p *pipeline, msgs []protocol.Message) error {
	var err error
	for i := range msgs {
		m := &msgs[i]
		switch m.Type {
		case protocol.MsgSnapshot:
			err = r.stepSnapshot(p, m, false)
		case protocol.MsgSnapshotChunk:
			// Runtime-level (chunk.go): the engine sees only the whole MsgSnapshot.
			r.stats.chunksRecv.Add(1)
			if whole, ok := r.chunkIn.receive(m, r.ticks); ok {
				err = r.stepSnapshot(p, &whole, true)
			}
		case protocol.MsgSnapshotAck:
			r.chunkOut.ack(m, r.ticks)
		default:
			r.eng.Step(*m)
		}
		if err != nil {
			break
		}
	}
	// Engines take messages by value and may keep only what their slices point to, which
	// Release leaves alone: the transport may reuse the batch's slots.
	if r.rel != nil {
		r.rel.Release(msgs)
	}
	return err
}

// stepSnapshot steps a MsgSnapshot, restoring the store and the executor from it first
// when the engine will install it, and truncating the log to the engine's live records
// after (they start from the installed snapshot). Outputs held for their fsync are
// released first: the install replaces the executor they are meant for. owned: m.Data
// belongs to the runtime (reassembled from chunks), not to the transport.
func (r *Replica) stepSnapshot(p *pipeline, m *protocol.Message, owned bool) error {
	if r.compactor == nil {
		r.eng.Step(*m)
		return nil
	}
	if err := p.drain(r); err != nil {
		return err
	}
	step, installed, name, err := r.installSnapshot(m, owned)
	if err != nil || !step {
		return err
	}
	r.eng.Step(*m)
	if !installed {
		return nil
	}
	r.exec.Execute()
	return r.truncate(name)
}

// takeClients moves queued client requests into the batch for the next proposal.
func (r *Replica) takeClients() {
	r.batches, r.batchFrom = r.in.take(r.batches, r.batchFrom)
}

// propose hands every request taken since the last Ready to the engine, which puts all
// of them (Propose calls before one Ready) into one instance or slot.
func (r *Replica) propose() {
	n := 0
	for i, cmds := range r.batches {
		p := pendingCmd{to: r.batchFrom[i], tick: r.ticks}
		for j := range cmds {
			r.pending.add(cmds[j].ClientID, cmds[j].Seq, p)
		}
		n += len(cmds)
		r.eng.Propose(cmds)
	}
	r.stats.proposed.Add(uint64(n))
	// The engine copied the Command values; the batches are garbage once dropped here.
	clear(r.batches)
	clear(r.batchFrom)
	r.batches, r.batchFrom = r.batches[:0], r.batchFrom[:0]
}

func (r *Replica) tick() {
	r.ticks++
	r.eng.Tick()
	r.chunkOut.tick(r.ticks)
	r.chunkIn.tick(r.ticks)
	if r.statsR != nil {
		es := r.statsR.Stats()
		r.stats.mu.Lock()
		r.stats.engine = es
		r.stats.mu.Unlock()
	}
	if r.susp != nil && r.exec.Pending() > 0 {
		r.suspectBlocked()
	} else if len(r.blockedSince) > 0 {
		clear(r.blockedSince)
	}
	if r.ticks%forgetTicks == 0 {
		r.pending.sweep(r.ticks, forgetTicks)
	}
}

// suspectBlocked reports to the engine the uncommitted instances that committed ones have
// waited on for suspectTicks (EPaxos: the executor found a dependency whose leader may be
// dead; the engine recovers it with Explicit Prepare, SOSP'13 §4.7). An instance still
// blocked is reported again every suspectTicks.
func (r *Replica) suspectBlocked() {
	blocked := r.exec.Blocked()
	r.suspects = r.suspects[:0]
	seen := make(map[protocol.InstanceID]struct{}, len(blocked))
	for _, id := range blocked {
		seen[id] = struct{}{}
		since, ok := r.blockedSince[id]
		if !ok {
			r.blockedSince[id] = r.ticks
			continue
		}
		if r.ticks-since >= r.suspectTicks {
			r.suspects = append(r.suspects, id)
			r.blockedSince[id] = r.ticks
		}
	}
	for id := range r.blockedSince {
		if _, ok := seen[id]; !ok {
			delete(r.blockedSince, id)
		}
	}
	if len(r.suspects) > 0 {
		r.log.Debug("suspecting blocked instances", "n", len(r.suspects), "first", r.suspects[0])
		r.stats.suspected.Add(uint64(len(r.suspects)))
		r.susp.Suspect(r.suspects)
	}
}

// handleReady does what the engine asks, in the order protocol.Ready prescribes: records
// durable first, then messages, committed instances and redirects. With a pipeline (an
// asynchronous log) step 1 only starts the commit and the rest waits for its fsync in
// the pipeline (sync.go); without, the loop appends, fsyncs and acts.
func (r *Replica) handleReady(p *pipeline) error {
	for round := 0; round < maxReadyRounds; round++ {
		rd := r.eng.Ready()
		if rd.IsEmpty() {
			return nil
		}
		r.stats.readys.Add(1)
		if rd.Leader != r.leader {
			r.leader = rd.Leader
			r.leaderSeen.Store(uint32(rd.Leader))
			r.log.Info("leader changed", "leader", rd.Leader)
		}
		if p != nil {
			if err := p.handle(r, &rd); err != nil {
				return err
			}
			r.eng.Advance(rd)
			continue
		}
		// 1. Durable before anything leaves: one Append and one Sync for the whole Ready.
		if len(rd.Persist) > 0 {
			began := r.diskBegin()
			err := r.wal.Append(rd.Persist)
			if err != nil {
				err = fmt.Errorf("log append: %w", err)
			} else if err = r.wal.Sync(); err != nil {
				err = fmt.Errorf("log sync: %w", err)
			}
			r.diskEnd(began)
			if err != nil {
				return err
			}
			r.stats.syncs.Add(1)
			r.stats.records.Add(uint64(len(rd.Persist)))
		}
		r.emit(rd.Messages, rd.Committed, rd.Redirect, rd.Leader)
		// 5. Done.
		r.eng.Advance(rd)
	}
	return nil
}

// emit does steps 2-4 of a Ready whose records are durable: messages, committed
// instances (executed when executable, answering clients), redirects to leader.
func (r *Replica) emit(msgs []protocol.Message, committed []protocol.Instance, redirect []protocol.Command, leader protocol.ReplicaID) {
	r.now = time.Now()
	// 2. Messages.
	for i := range msgs {
		m := &msgs[i]
		if m.Type == protocol.MsgSnapshot {
			if r.fillSnapshot(m) {
				r.sendSnapshot(m)
			}
			continue
		}
		r.tr.Send(*m)
	}
	r.stats.messages.Add(uint64(len(msgs)))
	// 3. Committed instances to the executor; execute what is executable.
	if len(committed) > 0 {
		ncmds := 0
		for i := range committed {
			inst := &committed[i]
			ncmds += len(inst.Cmds)
			if r.replyCommit {
				r.replyAtCommit(inst)
			}
			r.exec.Add(*inst)
		}
		r.stats.committed.Add(uint64(len(committed)))
		r.stats.committedCmds.Add(uint64(ncmds))
		r.exec.Execute()
		// Remember what must wait for dependencies: its commit time, for
		// Reply.ExecDelayMicros, and the instance, for a snapshot install.
		for i := range committed {
			inst := &committed[i]
			if !r.exec.Executed(inst.ID) {
				if _, ok := r.waiting[inst.ID]; !ok {
					w := waitInst{at: r.now, inst: *inst}
					w.inst.Deps = slices.Clone(inst.Deps) // the engine reuses Deps after Advance
					r.waiting[inst.ID] = w
				}
			}
		}
	}
	// 4. Redirects.
	for i := range redirect {
		c := &redirect[i]
		if p, ok := r.pending.take(c.ClientID, c.Seq); ok {
			r.stats.redirects.Add(1) // first: a client that got its reply sees it counted
			p.to.Reply(protocol.Reply{ClientID: c.ClientID, Seq: c.Seq, Result: protocol.ResultRedirect, Leader: leader})
		}
	}
}

// replyAtCommit answers blind writes of inst waiting here (reply_on_commit). The store
// still applies them at execution; their reply there finds no pending entry.
func (r *Replica) replyAtCommit(inst *protocol.Instance) {
	for i := range inst.Cmds {
		c := &inst.Cmds[i]
		if c.Op != protocol.OpPut {
			continue
		}
		if p, ok := r.pending.take(c.ClientID, c.Seq); ok {
			r.stats.replies.Add(1) // first: a client that got its reply sees it counted
			p.to.Reply(protocol.Reply{ClientID: c.ClientID, Seq: c.Seq, Result: protocol.ResultOK})
		}
	}
}

// apply is the executor's callback: it applies each command of an executed instance to
// the store and answers the client waiting here, if any.
func (r *Replica) apply(inst *protocol.Instance) {
	var delay uint32
	if len(r.waiting) > 0 {
		if w, ok := r.waiting[inst.ID]; ok {
			delete(r.waiting, inst.ID)
			if d := r.now.Sub(w.at).Microseconds(); d > 0 {
				delay = uint32(min(d, 1<<32-1))
			}
		}
	}
	// Counters first: a client that got its reply sees them counted (tests read them).
	if r.compactor != nil {
		r.logExecuted(inst)
	}
	r.stats.executed.Add(1)
	r.stats.executedCmds.Add(uint64(len(inst.Cmds)))
	for i := range inst.Cmds {
		c := &inst.Cmds[i]
		rep := r.store.Apply(c)
		if c.Op == protocol.OpNoop {
			continue
		}
		if p, ok := r.pending.take(c.ClientID, c.Seq); ok {
			rep.ClientID, rep.Seq = c.ClientID, c.Seq
			rep.ExecDelayMicros = delay
			r.stats.replies.Add(1)
			p.to.Reply(rep)
		}
	}
}

// shutdown answers every command still waiting here with a redirect to any other replica
// (protocol.ResultRedirect, Leader 0), so that clients retry elsewhere at once instead of
// waiting for a timeout. A command that did commit executes once anyway: the retry
// carries the same (client, seq).
func (r *Replica) shutdown() {
	r.pending.drain(func(client, seq uint64, p pendingCmd) {
		p.to.Reply(protocol.Reply{ClientID: client, Seq: seq, Result: protocol.ResultRedirect})
	})
	// Commands still in the inbox were never proposed.
	batches, from := r.in.take(nil, nil)
	for i, cmds := range batches {
		for _, c := range cmds {
			from[i].Reply(protocol.Reply{ClientID: c.ClientID, Seq: c.Seq, Result: protocol.ResultRedirect})
		}
	}
}
