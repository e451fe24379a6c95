package transport

import (
	"testing"

	"github.com/parliament-lab/parliament/protocol"
)

func TestMemPartition(t *testing.T) {
	net := NewMemNetwork()
	a, b := net.Endpoint(1), net.Endpoint(2)
	defer a.Close()
	defer b.Close()
	net.SetLink(1, 2, false)
	a.Send(protocol.Message{Type: protocol.MsgAccept, From: 1, To: 2, Seq: 1})
	if a.Dropped() != 1 {
		t.Fatalf("dropped %d on a cut link", a.Dropped())
	}
	// The other direction still works.
	b.Send(protocol.Message{Type: protocol.MsgAccept, From: 2, To: 1, Seq: 2})
	if m := recvN(t, a, 1)[0]; m.Seq != 2 {
		t.Fatalf("got %v", m)
	}
	net.SetLink(1, 2, true)
	a.Send(protocol.Message{Type: protocol.MsgAccept, From: 1, To: 2, Seq: 3})
	if m := recvN(t, b, 1)[0]; m.Seq != 3 {
		t.Fatalf("got %v after healing", m)
	}
}

func TestMemRestart(t *testing.T) {
	net := NewMemNetwork()
	a := net.Transport(1)
	defer a.Close()
	b := net.Transport(2)
	if net.Transport(2) != b {
		t.Fatal("Transport returned a second endpoint for a live ID")
	}
	b.Close()
	b2 := net.Transport(2)
	defer b2.Close()
	if b2 == b {
		t.Fatal("closed endpoint reused")
	}
	a.Send(protocol.Message{Type: protocol.MsgAccept, From: 1, To: 2, Seq: 1})
	if m := recvN(t, b2, 1)[0]; m.Seq != 1 {
		t.Fatalf("got %v", m)
	}
}

func TestMemQueueBound(t *testing.T) {
	net := NewMemNetwork()
	net.QueueLen = 5
	a, b := net.Endpoint(1), net.Endpoint(2)
	defer a.Close()
	defer b.Close()
	// b's deliverer takes the inbox as a batch into Recv's buffer, so send in one burst
	// more than inbox+Recv buffer can hold... the inbox bound alone is what is checked:
	b.mu.Lock() // hold the inbox so the deliverer cannot drain it
	for i := 0; i < 5; i++ {
		b.inbox = append(b.inbox, protocol.Message{})
	}
	b.mu.Unlock()
	a.Send(protocol.Message{Type: protocol.MsgAccept, From: 1, To: 2})
	if a.Dropped() != 1 {
		t.Fatalf("dropped %d with a full inbox", a.Dropped())
	}
}
