package transport

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/parliament-lab/parliament/protocol"
	"github.com/parliament-lab/parliament/wire"
)

// echoServer starts replica 1 accepting clients; every request is answered with a reply
// carrying the request's key as value.
func echoServer(t *testing.T, mutate func(*Config)) *TCP {
	t.Helper()
	return tcpCluster(t, 1, func(c *Config) {
		c.OnClient = func(s *ServerConn) {
			s.SetHandler(func(cmds []protocol.Command) {
				for _, cmd := range cmds {
					s.Reply(protocol.Reply{ClientID: cmd.ClientID, Seq: cmd.Seq, Result: protocol.ResultOK, Value: cmd.Key})
				}
			})
		}
		if mutate != nil {
			mutate(c)
		}
	})[0]
}

func TestClientRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name     string
		compress bool
		secret   []byte
	}{{"plain", false, nil}, {"s2", true, nil}, {"secret", false, []byte("k")}, {"s2+secret", true, []byte("k")}} {
		t.Run(tc.name, func(t *testing.T) {
			srv := echoServer(t, func(c *Config) { c.Compress = tc.compress; c.Secret = tc.secret })
			cc, err := DialClient(ctxTimeout(t), srv.Addr().String(), ClientConfig{ClusterID: 7, Compress: tc.compress, Secret: tc.secret})
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			if cc.c.s2w != nil != tc.compress {
				t.Fatalf("compression on = %v, want %v", cc.c.s2w != nil, tc.compress)
			}
			const n = 3000
			for i := uint64(1); i <= n; i++ {
				if err := cc.Send(protocol.Command{ClientID: 5, Seq: i, Op: protocol.OpGet, Key: []byte(fmt.Sprint("key", i))}); err != nil {
					t.Fatal(err)
				}
			}
			next := uint64(1)
			timer := time.NewTimer(waitTimeout)
			defer timer.Stop()
			for next <= n {
				select {
				case b, ok := <-cc.Replies():
					if !ok {
						t.Fatalf("replies closed: %v", cc.Err())
					}
					for _, r := range b {
						if r.Seq != next || string(r.Value) != fmt.Sprint("key", next) {
							t.Fatalf("reply Seq %d value %q, want Seq %d", r.Seq, r.Value, next)
						}
						next++
					}
				case <-timer.C:
					t.Fatalf("timed out at reply %d", next)
				}
			}
			if err := cc.Close(); err != nil {
				t.Fatal(err)
			}
			cc.Close()
			if !errors.Is(cc.Err(), ErrClosed) {
				t.Fatalf("Err after Close = %v", cc.Err())
			}
			if err := cc.Send(protocol.Command{}); !errors.Is(err, ErrClosed) {
				t.Fatalf("Send after Close = %v", err)
			}
		})
	}
}

// When the replica goes away the client learns it: Replies closes, Err says why.
func TestClientSeesServerClose(t *testing.T) {
	var sc *ServerConn
	got := make(chan struct{})
	srv := tcpCluster(t, 1, func(c *Config) {
		c.OnClient = func(s *ServerConn) { sc = s; close(got) }
	})[0]
	cc, err := DialClient(ctxTimeout(t), srv.Addr().String(), ClientConfig{ClusterID: 7})
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	<-got
	srv.Close()
	select {
	case <-sc.Done():
	case <-time.After(waitTimeout):
		t.Fatal("ServerConn not done after the transport closed")
	}
	for range cc.Replies() {
	}
	if cc.Err() == nil {
		t.Fatal("Err is nil after the replica closed")
	}
	if err := cc.Send(protocol.Command{}); err == nil {
		t.Fatal("Send succeeded on a broken connection")
	}
}

// A client that closes is noticed by the replica (ServerConn.Done).
func TestServerSeesClientClose(t *testing.T) {
	conns := make(chan *ServerConn, 1)
	srv := tcpCluster(t, 1, func(c *Config) {
		c.OnClient = func(s *ServerConn) { conns <- s }
	})[0]
	cc, err := DialClient(ctxTimeout(t), srv.Addr().String(), ClientConfig{ClusterID: 7})
	if err != nil {
		t.Fatal(err)
	}
	sc := <-conns
	cc.Close()
	select {
	case <-sc.Done():
	case <-time.After(waitTimeout):
		t.Fatal("ServerConn not done after the client closed")
	}
	sc.Reply(protocol.Reply{}) // to a gone client: dropped, no panic
}

// A restarted peer is reached again: the dialer reconnects with backoff, the queue
// survives the broken link, the restarted replica gets messages again.
func TestReconnect(t *testing.T) {
	trs := tcpCluster(t, 2, func(c *Config) { c.MinBackoff = time.Millisecond; c.MaxBackoff = 10 * time.Millisecond })
	one, two := trs[0], trs[1]
	one.Send(protocol.Message{Type: protocol.MsgAccept, From: 1, To: 2, Seq: 1})
	recvN(t, two, 1)
	addr := two.Addr().String()
	two.Close()
	two2, err := NewTCP(Config{ID: 2, ClusterID: 7, Listen: addr, Peers: map[protocol.ReplicaID]string{1: ""}})
	if err != nil {
		t.Fatal(err)
	}
	defer two2.Close()
	// The first messages after the restart may go into the dead connection (the
	// transport may drop on a broken link); like the protocol, retransmit until through.
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	timeout := time.After(waitTimeout)
	for seq := uint64(2); ; seq++ {
		one.Send(protocol.Message{Type: protocol.MsgAccept, From: 1, To: 2, Seq: seq})
		select {
		case b := <-two2.Recv():
			if b[0].From != 1 || b[0].Seq < 2 {
				t.Fatalf("got %v", b[0])
			}
			// And the other direction works over the new connection.
			two2.Send(protocol.Message{Type: protocol.MsgAccept, From: 2, To: 1, Seq: 99})
			if m := recvN(t, one, 1)[0]; m.Seq != 99 {
				t.Fatalf("reverse direction got %v", m)
			}
			return
		case <-tick.C:
		case <-timeout:
			t.Fatal("no message after the peer restarted")
		}
	}
}

// When a peer connects again while its old connection still looks alive (a restarted
// replica whose old socket has not timed out yet), the newest connection wins: the old
// one is closed and replies go to the new one.
func TestNewestConnectionWins(t *testing.T) {
	two, err := NewTCP(Config{ID: 2, ClusterID: 7, Listen: "127.0.0.1:0", Peers: map[protocol.ReplicaID]string{1: ""}})
	if err != nil {
		t.Fatal(err)
	}
	defer two.Close()
	addr := two.Addr().String()
	// Two raw incarnations of replica 1.
	var raws [2]net.Conn
	for i := range raws {
		raws[i] = rawDial(t, addr)
		if _, err := dialHandshake(raws[i], &dialParams{self: 1, cluster: 7, expect: 2}); err != nil {
			t.Fatal(err)
		}
		// Receiving this proves the acceptor handed the connection over to the writer.
		raws[i].Write(wire.AppendMessageFrame(nil, &protocol.Message{Type: protocol.MsgAccept, From: 1, To: 2, Seq: uint64(i)}))
		if m := recvN(t, two, 1)[0]; m.Seq != uint64(i) {
			t.Fatalf("got %v", m)
		}
	}
	waitClosed(t, raws[0]) // the old connection is closed by the acceptor
	two.Send(protocol.Message{Type: protocol.MsgAccept, From: 2, To: 1, Seq: 3})
	ft, payload, err := wire.ReadFrame(bufio.NewReader(raws[1]), nil, 0)
	if err != nil || ft != wire.FrameMessage {
		t.Fatalf("reading from the newest connection: %v %v", ft, err)
	}
	var m protocol.Message
	if err := wire.DecodeMessage(payload, &m); err != nil || m.Seq != 3 {
		t.Fatalf("newest connection got %v, %v", m, err)
	}
}

// Send never blocks: with the peer unreachable, a full queue drops and counts.
func TestSendNeverBlocksAndCountsDrops(t *testing.T) {
	tr, err := NewTCP(Config{
		ID: 1, ClusterID: 7, QueueLen: 10,
		Peers:      map[protocol.ReplicaID]string{2: "127.0.0.1:1"}, // nothing listens
		MinBackoff: time.Hour, MaxBackoff: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	done := make(chan struct{})
	go func() {
		for i := 0; i < 1000; i++ {
			tr.Send(protocol.Message{Type: protocol.MsgAccept, From: 1, To: 2})
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(waitTimeout):
		t.Fatal("Send blocked")
	}
	if s := tr.Stats(); s.Dropped != 990 {
		t.Fatalf("dropped %d, want 990", s.Dropped)
	}
}

// A message larger than MaxFrame is dropped at the sender (the receiver would refuse it
// and drop the whole connection); the link keeps working.
func TestOversizeSendDropped(t *testing.T) {
	trs := tcpCluster(t, 2, func(c *Config) { c.MaxFrame = 1024 })
	trs[0].Send(protocol.Message{Type: protocol.MsgAccept, From: 1, To: 2, Seq: 1, Data: make([]byte, 2000)})
	trs[0].Send(protocol.Message{Type: protocol.MsgAccept, From: 1, To: 2, Seq: 2})
	if m := recvN(t, trs[1], 1)[0]; m.Seq != 2 {
		t.Fatalf("got %v", m)
	}
	if s := trs[0].Stats(); s.Dropped != 1 {
		t.Fatalf("dropped %d, want 1", s.Dropped)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, cfg := range []Config{
		{ID: 0},
		{ID: 1, Peers: map[protocol.ReplicaID]string{0: "x"}},
		{ID: 1, Secret: []byte{}},
		{ID: 1, Listen: "256.0.0.1:99999"},
	} {
		if tr, err := NewTCP(cfg); err == nil {
			tr.Close()
			t.Errorf("NewTCP(%+v) accepted", cfg)
		}
	}
}

// Close while every goroutine is busy (writers blocked on a consumer that does not read,
// readers blocked on a full Recv channel) returns and leaves nothing behind (TestMain
// checks for leaks).
func TestCloseUnderLoad(t *testing.T) {
	trs := tcpCluster(t, 3, nil)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for i, tr := range trs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for s := uint64(0); ; s++ {
				select {
				case <-stop:
					return
				default:
				}
				tr.Send(protocol.Message{Type: protocol.MsgAccept, From: protocol.ReplicaID(i + 1), To: protocol.ReplicaID(1 + (i+1)%3), Seq: s, Data: make([]byte, 512)})
			}
		}()
	}
	// Nobody reads Recv: the channels fill, readers block, TCP pushes back, queues drop.
	recvN(t, trs[1], 1)
	close(stop)
	wg.Wait()
	done := make(chan struct{})
	go func() {
		for _, tr := range trs {
			tr.Close()
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(waitTimeout):
		t.Fatal("Close hung under load")
	}
}

// Messages of every size, including ones larger than the read buffer (they get a buffer
// of their own that grows with the bytes received) arrive intact and in order.
func TestLargeAndMixedSizes(t *testing.T) {
	for _, compress := range []bool{false, true} {
		t.Run(fmt.Sprint("s2=", compress), func(t *testing.T) {
			trs := tcpCluster(t, 2, func(c *Config) { c.Compress = compress })
			sizes := []int{0, 1, 100, readBuffer - 9, readBuffer - 5, readBuffer - 4, readBuffer, readBuffer + 1, 2*readBuffer - 5, 2*readBuffer + 1, 70000, 1 << 20, 3<<20 + 7, 5, 4000}
			var want []protocol.Message
			for round := 0; round < 3; round++ {
				for i, size := range sizes {
					data := make([]byte, size)
					for j := range data {
						data[j] = byte(i*31 + j*7 + round)
					}
					m := protocol.Message{Type: protocol.MsgSnapshot, From: 1, To: 2, Seq: uint64(len(want)), Data: data}
					want = append(want, m)
					trs[0].Send(m)
				}
			}
			got := recvN(t, trs[1], len(want))
			for i := range want {
				if got[i].Seq != want[i].Seq || !bytes.Equal(got[i].Data, want[i].Data) {
					t.Fatalf("message %d (size %d) differs", i, len(want[i].Data))
				}
			}
		})
	}
}

// releaseRounds sends 50 rounds of 20 messages from trs[0] to trs[1]; the receiver hands
// each batch to keep, then releases it. It returns what each message's Data must read.
//
// Each payload is over lendMin bytes, so every read that completes a frame is a large one
// (lent with Config.Lend) however the sender's writes and the receiver's reads happen to
// split the stream: with small payloads a fast reader may see only small reads. A round
// (about 160 KiB) fits the send queue, so the sender never waits on this goroutine.
func releaseRounds(t *testing.T, trs []*TCP, keep func(b []protocol.Message)) (want []string) {
	t.Helper()
	data := func(round int, seq uint64) string { return fmt.Sprintf("r%d-m%d-%0*d", round, seq, lendMin, 0) }
	for round := 0; round < 50; round++ {
		for i := 0; i < 20; i++ {
			m := protocol.Message{Type: protocol.MsgAccept, From: 1, To: 2, Seq: uint64(i), Data: []byte(data(round, uint64(i)))}
			if err := trs[0].sendWait(&m); err != nil {
				t.Fatalf("round %d: send: %v", round, err)
			}
		}
		for got := 0; got < 20; {
			var b []protocol.Message
			select {
			case b = <-trs[1].Recv():
			case <-time.After(waitTimeout):
				t.Fatalf("round %d: timed out after %d messages", round, got)
			}
			for _, m := range b {
				want = append(want, data(round, m.Seq))
			}
			keep(b)
			got += len(b)
			trs[1].Release(b)
		}
	}
	return want
}

// With Lend, a receiver takes batches on loan (those of large reads): their read buffers
// are read into again after Release, so bytes kept without Detach change, and bytes
// detached before Release stay intact.
func TestReleaseLoansReadBuffers(t *testing.T) {
	trs := tcpCluster(t, 2, func(c *Config) { c.Lend = true })
	var detached, borrowed [][]byte
	want := releaseRounds(t, trs, func(b []protocol.Message) {
		for _, m := range b {
			borrowed = append(borrowed, m.Data) // kept wrongly: not detached
		}
		protocol.Detach(b)
		for _, m := range b {
			detached = append(detached, m.Data) // an engine keeping a slice beyond Step
		}
	})
	changed := 0
	for i := range detached {
		if string(detached[i]) != want[i] {
			t.Fatalf("detached payload %d is %q, want %q: released memory was reused", i, detached[i], want[i])
		}
		if string(borrowed[i]) != want[i] {
			changed++
		}
	}
	if n := trs[1].bufs.reused.Load(); n == 0 || changed == 0 {
		t.Fatalf("read buffers reused %d times, %d borrowed payloads changed: released batches were not lent", n, changed)
	}
}

// Without Lend, Release recycles the Message slots of a batch, never the bytes a receiver
// kept.
func TestReleaseKeepsPayloads(t *testing.T) {
	trs := tcpCluster(t, 2, nil)
	var kept [][]byte
	want := releaseRounds(t, trs, func(b []protocol.Message) {
		for _, m := range b {
			kept = append(kept, m.Data) // an engine keeping a slice beyond Step
		}
	})
	for i := range kept {
		if string(kept[i]) != want[i] {
			t.Fatalf("kept payload %d is %q, want %q: released memory was reused", i, kept[i], want[i])
		}
	}
}

// keepAll sends n messages made by msg from trs[0] to trs[1] (waiting for queue room), and
// returns every batch received, none released, after checking there were several.
func keepAll(t *testing.T, trs []*TCP, n int, msg func(i int) protocol.Message) [][]protocol.Message {
	t.Helper()
	go func() {
		for i := range n {
			m := msg(i)
			if err := trs[0].sendWait(&m); err != nil {
				return
			}
		}
	}()
	var kept [][]protocol.Message
	for got := 0; got < n; {
		select {
		case b := <-trs[1].Recv():
			kept = append(kept, b)
			got += len(b)
		case <-time.After(waitTimeout):
			t.Fatalf("timed out after %d messages", got)
		}
	}
	if len(kept) < 2 {
		t.Fatalf("all %d messages came in %d batch: the test needs several reads", n, len(kept))
	}
	return kept
}

// Messages without bytes (acknowledgements) are decoded straight from the read buffer,
// which is read into again at once: what they hold (Deps here) must not point into it. A
// receiver keeping every batch over many reads sees them all intact at the end.
func TestInPlaceDecodeKeepsNothingOfTheBuffer(t *testing.T) {
	trs := tcpCluster(t, 2, func(c *Config) { c.QueueLen = 1 << 16 })
	kept := keepAll(t, trs, 20000, func(i int) protocol.Message {
		return protocol.Message{Type: protocol.MsgPreAcceptOK, From: 1, To: 2, Seq: uint64(i),
			Deps: []protocol.InstanceID{{Replica: 1, Num: uint64(i)}, {Replica: 3, Num: uint64(2 * i)}}}
	})
	if trs[1].bufs.reused.Load() == 0 {
		t.Fatalf("no read buffer was read into again: the test did not exercise reuse")
	}
	i := 0
	for _, b := range kept {
		for _, m := range b {
			if m.Seq != uint64(i) || len(m.Deps) != 2 || m.Deps[0].Num != uint64(i) || m.Deps[1].Num != uint64(2*i) {
				t.Fatalf("kept message %d is seq %d deps %v: it shares memory with a reused buffer", i, m.Seq, m.Deps)
			}
			i++
		}
	}
}

// The reader reuses its read buffers: what it delivered must be a copy. A receiver that
// keeps every batch (no Release) over many reads still sees every message intact at the
// end.
func TestReceiverKeepsEverything(t *testing.T) {
	trs := tcpCluster(t, 2, func(c *Config) { c.QueueLen = 1 << 16 })
	data := func(i int) []byte { return []byte(fmt.Sprintf("message %d %0100d", i, i)) }
	kept := keepAll(t, trs, 20000, func(i int) protocol.Message { // about 30 read buffers' worth
		return protocol.Message{Type: protocol.MsgAccept, From: 1, To: 2, Seq: uint64(i), Data: data(i)}
	})
	i := 0
	for _, b := range kept {
		for _, m := range b {
			if m.Seq != uint64(i) || !bytes.Equal(m.Data, data(i)) {
				t.Fatalf("kept message %d is seq %d data %q: delivered memory was reused", i, m.Seq, m.Data)
			}
			i++
		}
	}
}

// The slot pool hands out exactly n zeroed slots, and reuses released slices (cleared)
// for batches of about their size.
func TestBatchPool(t *testing.T) {
	p := newBatchPool()
	b := p.get(100)
	if len(b) != 100 || cap(b) != 100 {
		t.Fatalf("before any release: len %d cap %d, want exactly 100", len(b), cap(b))
	}
	for i := range b {
		b[i] = protocol.Message{Seq: 7, Data: []byte("x")}
	}
	p.put(b)
	if c := p.get(64); &c[0] != &b[0] || len(c) != 64 || c[0].Seq != 0 || c[0].Data != nil {
		t.Fatalf("a released slice of 100 slots was not reused, cleared, for 64")
	}
	if c := p.get(100); cap(c) != 128 || len(c) != 100 {
		t.Fatalf("once receivers release, get(100) = len %d cap %d, want a whole class (128)", len(c), cap(c))
	}
	p.put(make([]protocol.Message, 4096))
	if p.slots != 4096 {
		t.Fatalf("pool holds %d slots, want 4096", p.slots)
	}
	for range poolSlots / 4096 * 2 {
		p.put(make([]protocol.Message, 4096))
	}
	if p.slots > poolSlots {
		t.Fatalf("pool holds %d slots, more than its bound %d", p.slots, poolSlots)
	}
}

// TestTCPListener: transports serve listeners bound beforehand, whose addresses every
// replica knows from the start; Close closes them; a config that gives both Listen and a
// Listener is refused, and the listener is closed all the same.
func TestTCPListener(t *testing.T) {
	var lns []net.Listener
	peers := map[protocol.ReplicaID]string{}
	for id := protocol.ReplicaID(1); id <= 3; id++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		peers[id] = ln.Addr().String()
	}
	var trs []*TCP
	for i, ln := range lns {
		tr, err := NewTCP(Config{ID: protocol.ReplicaID(i + 1), ClusterID: 7, Listener: ln, Peers: peers})
		if err != nil {
			t.Fatal(err)
		}
		defer tr.Close()
		if got := tr.Addr().String(); got != peers[protocol.ReplicaID(i+1)] {
			t.Fatalf("Addr %s, want the listener's %s", got, peers[protocol.ReplicaID(i+1)])
		}
		trs = append(trs, tr)
	}
	// Every pair, both ways.
	for _, from := range trs {
		for _, to := range trs {
			if from != to {
				from.Send(protocol.Message{Type: protocol.MsgHeartbeat, From: from.cfg.ID, To: to.cfg.ID})
			}
		}
	}
	for _, tr := range trs {
		if got := recvN(t, tr, 2); len(got) != 2 {
			t.Fatalf("replica %d received %d messages", tr.cfg.ID, len(got))
		}
	}
	trs[2].Close()
	if c, err := net.DialTimeout("tcp", peers[3], time.Second); err == nil {
		c.Close()
		t.Fatalf("%s still accepts after Close", peers[3])
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewTCP(Config{ID: 1, Listen: "127.0.0.1:0", Listener: ln}); err == nil {
		t.Fatal("Listen and Listener both set: no error")
	}
	if c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Fatal("the refused config's listener was left open")
	}
}
