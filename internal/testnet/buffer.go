package testnet

import (
	"bytes"
	"sync"
)

// Buffer is a log sink that replicas (or processes) of one test write to concurrently;
// the test prints String when it fails.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *Buffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *Buffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
