package workloads

import (
	"fmt"
	"sort"
)

// Protocol names as used on the command line and in results.
const (
	EPaxos     = "epaxos"
	MultiPaxos = "multipaxos"
)

// FastQuorum returns the EPaxos fast-quorum size for n = 2F+1 replicas:
// F + ⌊(F+1)/2⌋ (EPaxos paper §4.3, the optimized fast quorum), the command leader
// included. For n = 3 it is 2, for n = 5 it is 3, for n = 7 it is 5.
func FastQuorum(n int) int {
	f := (n - 1) / 2
	return f + (f+1)/2
}

// Majority returns the classic quorum size F+1 for n = 2F+1 replicas.
func Majority(n int) int { return (n-1)/2 + 1 }

// quorumRTT returns the round trip from site i to the nearest quorum of size q that
// includes i itself: the (q-1)-th smallest RTT from i to the other replicas (0 when q is 1).
// Replica sites come from m in order; each matrix site hosts one replica.
func quorumRTT(m *Matrix, i, q int) float64 {
	others := make([]float64, 0, len(m.Sites)-1)
	for j := range m.Sites {
		if j != i {
			others = append(others, m.RTTMillis[i][j])
		}
	}
	sort.Float64s(others)
	if q <= 1 || len(others) == 0 {
		return 0
	}
	if q-1 > len(others) {
		q = len(others) + 1
	}
	return others[q-2]
}

// Optimum is the theoretical best commit latency, in milliseconds, of a command issued by
// a client at one site, ignoring processing time: only wide-area round trips count.
type Optimum struct {
	Site string
	// EPaxosFast: the client's round trip to its local replica (the matrix diagonal) plus
	// that replica's round trip to the nearest fast quorum including itself (EPaxos §4.3:
	// PreAccept and PreAcceptOK, then commit).
	EPaxosFast float64
	// EPaxosSlow: local round trip plus the round trip to the nearest majority for
	// PreAccept and one more to the nearest majority for Accept (EPaxos §4.3 slow path).
	EPaxosSlow float64
	// MultiPaxos: the client's round trip to the leader (the local RTT when the client is at
	// the leader's site: a follower forwards to the leader and the reply comes back the same
	// way, or the client talks to the leader directly; both cost RTT(site, leader)) plus the
	// leader's round trip to its nearest majority (phase 2 only; phase 1 is done once per
	// ballot).
	MultiPaxos float64
}

// Optimal computes Optimum for every site of m, one replica per site, with the
// Multi-Paxos leader at leaderSite (the first site when empty).
func Optimal(m *Matrix, leaderSite string) ([]Optimum, error) {
	if m == nil || len(m.Sites) == 0 {
		return nil, nil
	}
	n := len(m.Sites)
	leader := 0
	if leaderSite != "" {
		leader = m.Index(leaderSite)
		if leader < 0 {
			return nil, fmt.Errorf("workloads: leader site %q not in %v", leaderSite, m.Sites)
		}
	}
	leaderMaj := quorumRTT(m, leader, Majority(n))
	out := make([]Optimum, n)
	for i, s := range m.Sites {
		local := m.RTTMillis[i][i]
		maj := quorumRTT(m, i, Majority(n))
		out[i] = Optimum{
			Site:       s,
			EPaxosFast: local + quorumRTT(m, i, FastQuorum(n)),
			EPaxosSlow: local + 2*maj,
			MultiPaxos: m.RTTMillis[i][leader] + leaderMaj,
		}
	}
	return out, nil
}

// For returns the optimum commit latency for protocol at site: the EPaxos fast path
// (the best case, what a 0%-conflict run should reach) or Multi-Paxos.
func (o Optimum) For(protocol string) float64 {
	if protocol == MultiPaxos {
		return o.MultiPaxos
	}
	return o.EPaxosFast
}
