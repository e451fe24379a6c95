package transport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/lni/goutils/syncutil"
	"github.com/parliament-lab/parliament/protocol"
	"github.com/parliament-lab/parliament/wire"
)

// ServerConn is the replica side of one client connection. Its reader and writer are
// workers of the TCP transport, so closing the transport closes it.
type ServerConn struct {
	t       *TCP
	c       *conn
	q       *sendQueue
	handler func(cmds []protocol.Command)
}

// SetHandler sets the function that receives the client's requests, in batches (every
// request one read decoded), from the connection's reader goroutine; the handler owns
// the commands. It must be called inside Config.OnClient; requests arriving while no
// handler is set are dropped.
func (s *ServerConn) SetHandler(h func(cmds []protocol.Command)) { s.handler = h }

// Reply queues r for the client. It never blocks: when the queue is full or the
// connection is gone the reply is dropped (the client retries after its timeout).
func (s *ServerConn) Reply(r protocol.Reply) {
	err := s.q.push(s.t.maxFrame, func(b []byte) []byte { return wire.AppendReplyFrame(b, &r) })
	if err != nil && !errors.Is(err, errQueueFull) && !errors.Is(err, ErrClosed) {
		s.t.log.Warn("transport: dropped reply", "client", r.ClientID, "err", err)
	}
}

// Close closes the connection.
func (s *ServerConn) Close() { s.c.fail(ErrClosed) }

// Done is closed when the connection is gone (either side closed it, or it broke).
func (s *ServerConn) Done() <-chan struct{} { return s.c.done }

// RemoteAddr returns the client's address.
func (s *ServerConn) RemoteAddr() string { return s.c.remote }

// serveClient runs in the accepting worker: OnClient, then the reader loop; the writer is
// another worker.
func (t *TCP) serveClient(c *conn) {
	s := &ServerConn{t: t, c: c, q: newSendQueue(t.cfg.QueueLen, t.cfg.QueueBytes)}
	defer func() {
		s.q.close()
		t.untrack(c.nc)
	}()
	t.cfg.OnClient(s)
	t.log.Debug("transport: client connected", "remote", c.remote)
	stop := t.stopper.ShouldStop()
	t.stopper.RunWorker(func() {
		if err := writeLoop(c, s.q, stop); err != nil {
			c.fail(err)
		}
	})
	err := c.readLoop(t.maxFrame, func(n int, frames []byte) error {
		batch := make([]protocol.Command, 0, n)
		err := forFrames(frames, func(ft wire.FrameType, payload []byte) error {
			if ft != wire.FrameRequest {
				return fmt.Errorf("client sent a %v frame: %w", ft, errProtocol)
			}
			batch = append(batch, protocol.Command{})
			return wire.DecodeCommand(payload, &batch[len(batch)-1])
		})
		if err != nil {
			return err
		}
		if h := s.handler; h != nil {
			h(batch)
		}
		if t.stopped() {
			return ErrClosed
		}
		return nil
	})
	if !c.failed() && !t.stopped() {
		t.logReadError(c, "client", 0, err)
	}
	c.fail(err)
}

// writeLoop writes whatever q holds whenever it holds something, until c fails or stop.
func writeLoop(c *conn, q *sendQueue, stop <-chan struct{}) error {
	var out []byte
	var sp spare
	for {
		select {
		case <-q.signal:
		case <-c.done:
			return nil
		case <-stop:
			return ErrClosed
		}
		var n int
		out, n = q.take(out)
		if n == 0 {
			continue
		}
		if err := c.write(out); err != nil {
			return err
		}
		out = sp.keep(out)
	}
}

// ClientConfig configures DialClient.
type ClientConfig struct {
	ClusterID   uint64
	Secret      []byte
	Compress    bool
	MaxFrame    int           // 0 = wire.DefaultMaxFrame
	DialTimeout time.Duration // connect and handshake; 0 = DefaultHandshakeTimeout
	QueueLen    int           // requests queued before Send fails, 0 = DefaultQueueLen
}

// ClientConn is the client side of a connection to one replica.
type ClientConn struct {
	c        *conn
	q        *sendQueue
	maxFrame int
	replies  chan []protocol.Reply
	stopper  *syncutil.Stopper
	once     sync.Once
}

// DialClient connects to the replica at addr and runs the handshake. A refusal comes back
// as an error saying why (for example "cluster ID mismatch: replica has 7, we have 9"),
// matching ErrWrongCluster and friends with errors.Is.
func DialClient(ctx context.Context, addr string, cfg ClientConfig) (*ClientConn, error) {
	timeout := cfg.DialTimeout
	if timeout <= 0 {
		timeout = DefaultHandshakeTimeout
	}
	if cfg.Secret != nil && len(cfg.Secret) == 0 {
		return nil, fmt.Errorf("transport: client config: Secret is empty; use nil for no secret")
	}
	d := net.Dialer{Timeout: timeout}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("transport: dial %s: %w", addr, err)
	}
	deadline := time.Now().Add(timeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	nc.SetDeadline(deadline)
	// A cancelled ctx interrupts the handshake too.
	stopWatch := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	res, err := dialHandshake(nc, &dialParams{cluster: cfg.ClusterID, secret: cfg.Secret, compress: cfg.Compress})
	if !stopWatch() && err == nil {
		err = ctx.Err()
	}
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("transport: connect to replica at %s: %w", addr, err)
	}
	nc.SetDeadline(time.Time{})
	ql := cfg.QueueLen
	if ql <= 0 {
		ql = DefaultQueueLen
	}
	maxFrame := cfg.MaxFrame
	if maxFrame <= 0 {
		maxFrame = wire.DefaultMaxFrame
	}
	cc := &ClientConn{
		c:        newConn(nc, res.compress),
		q:        newSendQueue(ql, DefaultQueueBytes),
		maxFrame: maxFrame,
		replies:  make(chan []protocol.Reply, recvChanLen),
		stopper:  syncutil.NewStopper(),
	}
	stop := cc.stopper.ShouldStop()
	cc.stopper.RunWorker(func() {
		if err := writeLoop(cc.c, cc.q, stop); err != nil {
			cc.c.fail(err)
		}
	})
	cc.stopper.RunWorker(cc.readLoop)
	return cc, nil
}

// Send queues cmd; the writer goroutine flushes whenever its queue empties. It fails when
// the connection is broken (Err says why) or the queue is full.
func (c *ClientConn) Send(cmd protocol.Command) error {
	if c.c.failed() {
		return c.Err()
	}
	err := c.q.push(c.maxFrame, func(b []byte) []byte { return wire.AppendCommandFrame(b, &cmd) })
	if errors.Is(err, ErrClosed) {
		return c.Err()
	}
	return err
}

// Replies returns the channel of reply batches; it is closed when the connection breaks.
func (c *ClientConn) Replies() <-chan []protocol.Reply { return c.replies }

// Err returns why the connection broke (nil while it works; ErrClosed after Close).
func (c *ClientConn) Err() error {
	if !c.c.failed() {
		return nil
	}
	return c.c.err
}

// Close closes the connection and waits for its goroutines. Safe twice.
func (c *ClientConn) Close() error {
	c.once.Do(func() {
		c.c.fail(ErrClosed)
		c.stopper.Stop()
		c.q.close()
	})
	return nil
}

func (c *ClientConn) readLoop() {
	defer close(c.replies)
	stop := c.stopper.ShouldStop()
	err := c.c.readLoop(c.maxFrame, func(n int, frames []byte) error {
		batch := make([]protocol.Reply, 0, n)
		err := forFrames(frames, func(ft wire.FrameType, payload []byte) error {
			if ft != wire.FrameReply {
				return fmt.Errorf("replica sent a %v frame: %w", ft, errProtocol)
			}
			batch = append(batch, protocol.Reply{})
			return wire.DecodeReply(payload, &batch[len(batch)-1])
		})
		if err != nil {
			return err
		}
		select {
		case c.replies <- batch:
			return nil
		case <-c.c.done:
		case <-stop:
		}
		return ErrClosed
	})
	c.c.fail(fmt.Errorf("transport: connection to replica %s: %w", c.c.remote, err))
}
