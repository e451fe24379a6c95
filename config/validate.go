package config

import (
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/parliament-lab/parliament/protocol"
)

// Bounds Validate enforces.
const (
	MinTick = time.Millisecond
	MaxTick = 10 * time.Second
)

// hostnameRE is the RFC 1123 host name rule (the one lni/goutils stringutil uses; that
// package is not imported because it drags in github.com/pkg/errors, which is not in go.sum).
var hostnameRE = regexp.MustCompile(`^(([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9\-]*[a-zA-Z0-9])\.)*([A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9\-]*[A-Za-z0-9])$`)

// fieldError builds the one-line validation error: field, value, fix.
func fieldError(field string, value any, problem, fix string) error {
	return fmt.Errorf("%w: %s: %v %s; %s", ErrInvalid, field, value, problem, fix)
}

// Bounds of max_frame: below 64 KiB ordinary batches would not fit; a frame length is a
// uint32 on the wire, and a GiB is already more than a replica should hold twice.
const (
	MinMaxFrame = 64 << 10
	MaxMaxFrame = 1 << 30
)

// CheckAddress reports why addr is not a usable host:port, or nil.
func CheckAddress(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("is not host:port (%v)", strings.TrimPrefix(err.Error(), "address "+addr+": "))
	}
	if host == "" {
		return fmt.Errorf("has no host")
	}
	if net.ParseIP(host) == nil && !hostnameRE.MatchString(host) {
		return fmt.Errorf("has host %q, which is neither an IP address nor a host name", host)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("has port %q, which is not a number in 1..65535", port)
	}
	return nil
}

// Validate checks every field and returns the first problem as one line naming the field,
// the value and the fix. It wraps ErrInvalid.
func (c *Cluster) Validate() error {
	if c.ClusterID == 0 {
		return fieldError("cluster_id", 0, "is not allowed",
			"set any nonzero number (replicas and clients of different clusters refuse each other by it); 'parliament config' picks a random one")
	}
	n := len(c.Replicas)
	switch c.Protocol {
	case EPaxos:
		if n < 3 || n%2 == 0 {
			return fieldError("replicas", fmt.Sprintf("%d replicas", n), "cannot run epaxos",
				"epaxos needs an odd number of replicas, at least 3 (N = 2F+1)")
		}
	case MultiPaxos:
		if n < 1 {
			return fieldError("replicas", "an empty list", "cannot run multipaxos", "list at least one replica (3 or more to tolerate a failure)")
		}
	case "":
		return fieldError("protocol", `""`, "is missing", "set protocol: epaxos or protocol: multipaxos")
	default:
		return fieldError("protocol", strconv.Quote(c.Protocol), "is not a known protocol", "use epaxos or multipaxos")
	}

	seen := make(map[protocol.ReplicaID]int, n)
	addrs := make(map[string]string, 2*n)
	for i, r := range c.Replicas {
		f := fmt.Sprintf("replicas[%d]", i)
		if r.ID < 1 || int(r.ID) > n {
			return fieldError(f+".id", r.ID, "is out of range", fmt.Sprintf("number the %d replicas 1..%d", n, n))
		}
		if j, dup := seen[r.ID]; dup {
			return fieldError(f+".id", r.ID, fmt.Sprintf("is also the id of replicas[%d]", j), fmt.Sprintf("give each replica its own id in 1..%d", n))
		}
		seen[r.ID] = i
		if r.Address == "" {
			return fieldError(f+".address", `""`, "is missing", "set host:port, like 127.0.0.1:7000")
		}
		if err := CheckAddress(r.Address); err != nil {
			return fieldError(f+".address", strconv.Quote(r.Address), err.Error(), "write host:port, like 127.0.0.1:7000")
		}
		if other, dup := addrs[r.Address]; dup {
			return fieldError(f+".address", strconv.Quote(r.Address), "is also used by "+other, "give each replica its own port")
		}
		addrs[r.Address] = f + ".address"
		if strings.TrimSpace(r.Site) == "" {
			return fieldError(f+".site", `""`, "is missing",
				"name the replica's site: one of "+strings.Join(DefaultSites, ", ")+" (the built-in WAN matrix) or your own name")
		}
		if r.Metrics != "" {
			if err := CheckAddress(r.Metrics); err != nil {
				return fieldError(f+".metrics", strconv.Quote(r.Metrics), err.Error(), "write host:port, like 127.0.0.1:9000, or remove it")
			}
			if other, dup := addrs[r.Metrics]; dup {
				return fieldError(f+".metrics", strconv.Quote(r.Metrics), "is also used by "+other, "pick a free port")
			}
			addrs[r.Metrics] = f + ".metrics"
		}
	}

	if t := c.Tick.D(); t < MinTick || t > MaxTick {
		return fieldError("tick", c.Tick, "is out of range", fmt.Sprintf("use a duration between %v and %v (default %v)", MinTick, MaxTick, DefaultTick))
	}
	for _, k := range []struct {
		name string
		v    int
	}{
		{"batch", c.Batch}, {"window", c.Window}, {"election_ticks", c.ElectionTicks},
		{"heartbeat_ticks", c.HeartbeatTicks}, {"recovery_ticks", c.RecoveryTicks},
	} {
		if k.v < 0 {
			return fieldError(k.name, k.v, "is negative", "use a positive number, or leave it out for the engine default")
		}
	}
	if c.MaxFrame != 0 && (c.MaxFrame < MinMaxFrame || c.MaxFrame > MaxMaxFrame) {
		return fieldError("max_frame", c.MaxFrame, fmt.Sprintf("is outside %d (64 KiB) to %d (1 GiB)", MinMaxFrame, MaxMaxFrame),
			"give the largest message in bytes, e.g. 268435456 for 256 MiB, or leave it out for 16 MiB")
	}
	if c.TruncateBytes < 0 {
		return fieldError("truncate_bytes", c.TruncateBytes, "is negative", "use a number of bytes (1 = truncate at every snapshot), or leave it out for 64 MiB")
	}
	if c.ElectionTicks > 0 && c.HeartbeatTicks > 0 && c.HeartbeatTicks >= c.ElectionTicks {
		return fieldError("heartbeat_ticks", c.HeartbeatTicks, fmt.Sprintf("is not below election_ticks (%d)", c.ElectionTicks),
			"send heartbeats several times per election timeout, e.g. heartbeat_ticks: 2 with election_ticks: 10")
	}
	if c.ElectionTicks == 1 {
		return fieldError("election_ticks", 1, "leaves no room for heartbeats", "use at least 2 (default 10)")
	}
	return nil
}
