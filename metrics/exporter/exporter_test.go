package exporter

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/parliament-lab/parliament/config"
	"github.com/parliament-lab/parliament/protocol"
	"github.com/parliament-lab/parliament/replica"
	"github.com/parliament-lab/parliament/transport"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type waiter chan protocol.Reply

func (w waiter) Reply(r protocol.Reply) { w <- r }

func TestServeReplicaCountsCommits(t *testing.T) {
	cl := &config.Cluster{ClusterID: 1, Protocol: "multipaxos", Replicas: []config.Replica{{ID: 1, Address: "127.0.0.1:1", Site: "CA"}}}
	cl.SetDefaults()
	net0 := transport.NewMemNetwork()
	r, err := replica.Start(replica.Options{Cluster: cl, ID: 1, Transport: net0.Transport(1)})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Stop()
	w := make(waiter, 1)
	for seq := uint64(1); seq <= 3; {
		r.Submit([]protocol.Command{{ClientID: 9, Seq: seq, Op: protocol.OpPut, Key: []byte("k"), Value: []byte("v")}}, w)
		select {
		case rep := <-w:
			if rep.Result == protocol.ResultRedirect {
				time.Sleep(10 * time.Millisecond) // no leader yet: the single replica elects itself after its timeout
				continue
			}
			seq++
		case <-time.After(10 * time.Second):
			t.Fatal("no reply")
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeReplica(ctx, addr, r, nil) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	var body string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		resp, err := client.Get("http://" + addr + "/metrics")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			body = string(b)
			break
		}
		time.Sleep(10 * time.Millisecond) // the server goroutine is starting
	}
	for _, want := range []string{
		`parliament_executed_total{protocol="",replica="1"} 3`,
		`parliament_replies_total{protocol="",replica="1"} 3`,
		`parliament_queue_depth{protocol="",queue="replies",replica="1"} 0`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if t.Failed() {
		t.Logf("%s", body)
	}
	if !strings.Contains(body, `parliament_commits_total{protocol="",replica="1"}`) {
		t.Errorf("no commits counter:\n%s", body)
	}
}
