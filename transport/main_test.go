package transport

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/parliament-lab/parliament/protocol"
)

// TestMain fails the package if any test leaves a goroutine behind.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// waitTimeout bounds every wait on a channel in these tests; nothing sleeps.
const waitTimeout = 10 * time.Second

// logBuffer is a goroutine-safe slog sink for asserting on log lines.
type logBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{} // closed and replaced on every write
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.changed != nil {
		close(l.changed)
		l.changed = nil
	}
	return l.buf.Write(p)
}

// waitFor waits until cond holds for the log, re-checking on every write.
func (l *logBuffer) waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	timer := time.NewTimer(waitTimeout)
	defer timer.Stop()
	for {
		l.mu.Lock()
		if l.changed == nil {
			l.changed = make(chan struct{})
		}
		ch := l.changed
		l.mu.Unlock()
		if cond() {
			return
		}
		select {
		case <-ch:
		case <-timer.C:
			t.Fatalf("timed out waiting for %s; log:\n%s", what, l.String())
		}
	}
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// lines returns the log lines containing every one of subs.
func (l *logBuffer) lines(subs ...string) []string {
	var out []string
	for _, line := range strings.Split(l.String(), "\n") {
		ok := line != ""
		for _, s := range subs {
			ok = ok && strings.Contains(line, s)
		}
		if ok {
			out = append(out, line)
		}
	}
	return out
}

// tcpCluster starts n TCP transports with IDs 1..n on 127.0.0.1:0. They start in
// descending ID order so that each knows the addresses of the replicas it dials (higher
// IDs); lower IDs are known with no address (they dial us).
func tcpCluster(t testing.TB, n int, mutate func(*Config)) []*TCP {
	t.Helper()
	out := make([]*TCP, n)
	addrs := make(map[protocol.ReplicaID]string)
	for i := n; i >= 1; i-- {
		id := protocol.ReplicaID(i)
		peers := make(map[protocol.ReplicaID]string)
		for j := 1; j <= n; j++ {
			peers[protocol.ReplicaID(j)] = addrs[protocol.ReplicaID(j)]
		}
		cfg := Config{ID: id, ClusterID: 7, Listen: "127.0.0.1:0", Peers: peers}
		if mutate != nil {
			mutate(&cfg)
		}
		tr, err := NewTCP(cfg)
		if err != nil {
			t.Fatalf("NewTCP(%d): %v", id, err)
		}
		t.Cleanup(func() { tr.Close() })
		addrs[id] = tr.Addr().String()
		out[i-1] = tr
	}
	return out
}

// recvN collects messages from tr until n arrived.
func recvN(t testing.TB, tr Transport, n int) []protocol.Message {
	t.Helper()
	var got []protocol.Message
	timer := time.NewTimer(waitTimeout)
	defer timer.Stop()
	for len(got) < n {
		select {
		case b, ok := <-tr.Recv():
			if !ok {
				t.Fatalf("Recv closed after %d of %d messages", len(got), n)
			}
			got = append(got, b...)
		case <-timer.C:
			t.Fatalf("timed out after %d of %d messages", len(got), n)
		}
	}
	return got
}

// waitClosed waits until the peer closes c (read returns an error).
func waitClosed(t testing.TB, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(waitTimeout))
	buf := make([]byte, 4096)
	for {
		if _, err := c.Read(buf); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("connection from %s was not closed by the acceptor", c.LocalAddr())
			}
			return
		}
	}
}

func ctxTimeout(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	t.Cleanup(cancel)
	return ctx
}
