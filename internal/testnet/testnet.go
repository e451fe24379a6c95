// Package testnet helps tests that run replicas on loopback: it finds free ports for tests
// that must know a replica's address before it listens (a cluster file names every address
// up front), and gives them a log sink safe for concurrent writers (Buffer).
package testnet

import (
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
)

// FreeBase returns a port p such that p..p+n-1 are free on 127.0.0.1. It looks below the
// kernel's ephemeral range (ip_local_port_range): a port there is never handed out to a
// listener or dialer of another test asking for port 0, which could otherwise take it
// between this check and the replica's own bind (packages test in parallel), or while a
// test restarts a replica on its old address.
func FreeBase(tb testing.TB, n int) int {
	tb.Helper()
	lo, hi := 10000, 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if v, err := strconv.Atoi(f[0]); err == nil && v-n > lo {
				hi = v
			}
		}
	}
	for range 200 {
		base := lo + rand.IntN(hi-lo-n)
		ok := true
		var ls []net.Listener
		for i := 0; i < n && ok; i++ {
			l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(base+i))
			if err != nil {
				ok = false
				break
			}
			ls = append(ls, l)
		}
		for _, l := range ls {
			l.Close()
		}
		if ok {
			return base
		}
	}
	tb.Fatal("testnet: no run of free loopback ports")
	return 0
}
