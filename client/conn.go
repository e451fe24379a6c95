package client

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/parliament-lab/parliament/protocol"
	"github.com/parliament-lab/parliament/transport"
)

// isRefusal reports whether err is a handshake refusal (wrong cluster, secret, version, or
// not a Parliament replica): trying again or elsewhere will not help.
func isRefusal(err error) bool {
	for _, e := range []error{transport.ErrWrongCluster, transport.ErrAuth, transport.ErrBadProof,
		transport.ErrWrongVersion, transport.ErrNotParliament, transport.ErrClientsRefused} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func (c *Client) dial(ctx context.Context, id protocol.ReplicaID) (*transport.ClientConn, error) {
	ctx, cancel := context.WithTimeout(ctx, c.ccfg.DialTimeout)
	defer cancel()
	return transport.DialClient(ctx, c.addrs[id], c.ccfg)
}

// setConn installs a fresh connection and (re)sends every outstanding command on it, in
// sequence order, with its original (client, seq).
func (c *Client) setConn(conn *transport.ClientConn, id protocol.ReplicaID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.conn, c.connTo = conn, id
	now := c.now()
	c.lastReply = now
	c.redirects = 0
	if len(c.ops) == 0 {
		return
	}
	seqs := make([]uint64, 0, len(c.ops))
	for s := range c.ops {
		seqs = append(seqs, s)
	}
	slices.Sort(seqs)
	for _, s := range seqs {
		o := c.ops[s]
		o.notBefore = time.Time{}
		if !c.sendLocked(conn, o, now) {
			return
		}
	}
}

// breakConnLocked abandons conn (if it is still the current one) and wakes the manager,
// which reconnects and resends. c.mu is held.
func (c *Client) breakConnLocked(conn *transport.ClientConn) {
	if c.conn != conn || conn == nil {
		return
	}
	c.conn, c.connTo = nil, 0
	c.dead = append(c.dead, conn)
	c.wake()
}

// sendLocked transmits o on conn. A send that fails on a healthy connection (its queue is
// full) is left to the timeout scan; a broken connection is abandoned.
func (c *Client) sendLocked(conn *transport.ClientConn, o *op, now int64) bool {
	o.sent = now
	if err := conn.Send(o.cmd); err != nil && conn.Err() != nil {
		c.breakConnLocked(conn)
		return false
	}
	return true
}

func (c *Client) wake() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// manage is the client's goroutine: it reads replies, retransmits what timed out or was
// redirected, and reconnects.
func (c *Client) manage() {
	defer c.wg.Done()
	scanEvery := min(c.timeout/4, 100*time.Millisecond)
	scan := time.NewTicker(scanEvery)
	defer scan.Stop()
	retry := time.NewTicker(redirectBackoff / 2)
	defer retry.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-c.stopC:
			cancel()
		case <-ctx.Done():
		}
	}()
	for {
		c.mu.Lock()
		conn, dead, sw := c.conn, c.dead, c.switchTo
		c.dead = nil
		c.mu.Unlock()
		for _, d := range dead {
			d.Close()
		}
		if conn == nil || sw != 0 {
			if !c.reconnect(ctx) {
				return
			}
			continue
		}
		select {
		case batch, ok := <-conn.Replies():
			if !ok {
				c.log.Debug("connection broken", "replica", c.Replica(), "err", conn.Err())
				c.mu.Lock()
				c.breakConnLocked(conn)
				c.mu.Unlock()
				continue
			}
			c.handle(batch)
		case <-retry.C:
			c.retryRedirected()
		case <-scan.C:
			c.scanTimeouts()
		case <-c.kick:
		case <-c.stopC:
			return
		}
	}
}

// completion is a reply ready for its callback.
type completion struct {
	o   *op
	rep protocol.Reply
}

// handle matches a batch of replies to outstanding commands. Callbacks run after the
// lock is released.
func (c *Client) handle(batch []protocol.Reply) {
	now := c.now()
	c.mu.Lock()
	c.lastReply = now
	done := c.doneBuf[:0]
	for i := range batch {
		rep := &batch[i]
		o, ok := c.ops[rep.Seq]
		if !ok || rep.ClientID != c.id {
			continue // a duplicate reply to a retried command, or not ours
		}
		if rep.Result == protocol.ResultRedirect {
			c.redirectAnswers.Add(1)
			c.redirected(o, rep.Leader, c.epoch.Add(time.Duration(now)))
			continue
		}
		c.redirects = 0
		delete(c.ops, rep.Seq)
		done = append(done, completion{o, *rep})
	}
	if c.waiters > 0 && len(done) > 0 {
		c.room.Broadcast()
	}
	c.mu.Unlock()
	if len(done) == 0 {
		return
	}
	for i := range done {
		done[i].o.done(done[i].rep, nil)
	}
	c.mu.Lock()
	for i := range done {
		*done[i].o = op{}
		c.free = append(c.free, done[i].o)
		done[i] = completion{}
	}
	c.mu.Unlock()
	c.doneBuf = done[:0] // only the manager goroutine touches doneBuf
}

// redirected handles a redirect for o: go to the named leader, or retry after a short
// backoff (no leader known, e.g. during an election), moving to another replica when
// redirects keep coming. c.mu is held.
func (c *Client) redirected(o *op, leader protocol.ReplicaID, now time.Time) {
	if _, known := c.addrs[leader]; known && leader != c.connTo {
		c.switchTo = leader // setConn resends everything, o included
		c.wake()
		return
	}
	o.notBefore = now.Add(redirectBackoff)
	c.delayed = append(c.delayed, o.cmd.Seq)
	c.redirects++
	if c.redirects >= redirectsBeforeRotate*max(1, len(c.ops)) {
		c.redirects = 0
		c.switchTo = c.order[c.next]
		if c.switchTo == c.connTo {
			c.next = (c.next + 1) % len(c.order)
			c.switchTo = c.order[c.next]
		}
		c.wake()
	}
}

// retryRedirected resends redirected commands whose backoff has passed.
func (c *Client) retryRedirected() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.delayed) == 0 || c.conn == nil {
		return
	}
	wall := time.Now()
	now := c.now()
	keep := c.delayed[:0]
	for _, s := range c.delayed {
		o, ok := c.ops[s]
		if !ok || o.notBefore.IsZero() {
			continue
		}
		if wall.Before(o.notBefore) {
			keep = append(keep, s)
			continue
		}
		o.notBefore = time.Time{}
		if !c.sendLocked(c.conn, o, now) {
			break
		}
	}
	c.delayed = keep
}

// scanTimeouts resends commands without a reply for Timeout on the same connection (the
// replica forgets nothing it can still answer, and the store executes a retry once). If
// nothing at all came back on this connection for Timeout, the replica is presumed stuck
// (cut off from the majority) and the client moves to another one.
func (c *Client) scanTimeouts() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil || len(c.ops) == 0 {
		return
	}
	now := c.now()
	timeout := int64(c.timeout)
	stale := false
	for _, o := range c.ops {
		if !o.notBefore.IsZero() || now-o.sent < timeout {
			continue
		}
		stale = true
		c.resends.Add(1) // sent now, or by setConn on the next connection if this one broke
		if !c.sendLocked(c.conn, o, now) {
			return
		}
	}
	if stale && now-c.lastReply >= timeout && len(c.order) > 1 {
		c.log.Debug("no reply within the timeout; trying another replica", "replica", c.connTo)
		c.switchTo = c.order[c.next]
		if c.switchTo == c.connTo {
			c.next = (c.next + 1) % len(c.order)
			c.switchTo = c.order[c.next]
		}
		c.wake()
	}
}

// reconnect closes the current connection and dials the replica a redirect asked for, or
// the next one in rotation, until one answers; it waits between full rounds. It returns
// false when the client is closed.
func (c *Client) reconnect(ctx context.Context) bool {
	wait := 10 * time.Millisecond
	failures := 0
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return false
		}
		target := c.switchTo
		c.switchTo = 0
		if target == 0 {
			target = c.order[c.next]
			c.next = (c.next + 1) % len(c.order)
		}
		old := c.conn
		c.conn, c.connTo = nil, 0
		c.mu.Unlock()
		if old != nil {
			old.Close()
		}
		conn, err := c.dial(ctx, target)
		if err == nil {
			c.mu.Lock()
			closed := c.closed
			c.mu.Unlock()
			if closed {
				conn.Close()
				return false
			}
			c.log.Debug("connected", "replica", target)
			c.setConn(conn, target)
			return true
		}
		c.log.Debug("cannot connect", "replica", target, "err", err)
		failures++
		if failures%len(c.order) == 0 {
			select {
			case <-time.After(wait):
			case <-c.stopC:
				return false
			}
			wait = min(2*wait, 500*time.Millisecond)
		}
	}
}
