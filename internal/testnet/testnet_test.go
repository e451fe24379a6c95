package testnet

import (
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
)

// The ports FreeBase returns can be bound, all n of them, and lie below the ephemeral
// range on Linux.
func TestFreeBase(t *testing.T) {
	base := FreeBase(t, 5)
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		low, _ := strconv.Atoi(strings.Fields(string(b))[0])
		if base < 10000 || base+5 > low {
			t.Fatalf("run %d..%d is not between 10000 and the ephemeral range (from %d)", base, base+4, low)
		}
	}
	for i := range 5 {
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(base+i))
		if err != nil {
			t.Fatalf("port %d of the run is not free: %v", base+i, err)
		}
		l.Close()
	}
}
