package epaxos

import (
	"math/bits"
	"testing"

	"pgregory.net/rapid"
)

func TestQuorumSizes(t *testing.T) {
	tests := []struct{ n, f, slow, fast int }{
		{3, 1, 2, 2},
		{5, 2, 3, 3},
		{7, 3, 4, 5},
		{9, 4, 5, 6},
		{11, 5, 6, 8},
		{13, 6, 7, 9},
	}
	for _, tt := range tests {
		if got := MaxFailures(tt.n); got != tt.f {
			t.Errorf("MaxFailures(%d) = %d, want %d", tt.n, got, tt.f)
		}
		if got := SlowQuorum(tt.n); got != tt.slow {
			t.Errorf("SlowQuorum(%d) = %d, want %d", tt.n, got, tt.slow)
		}
		if got := FastQuorum(tt.n); got != tt.fast {
			t.Errorf("FastQuorum(%d) = %d, want %d", tt.n, got, tt.fast)
		}
	}
}

// referenceFastQuorum is the brute-force reference: the smallest fast quorum n - e over
// every e the optimal bound of Ryabinin, Gotsman, Sutra (OPODIS'25) allows for
// n = 2f+1, i.e. n >= max(2e+f-1, 2f+1).
func referenceFastQuorum(n int) int {
	f := (n - 1) / 2
	best := n
	for e := 0; e <= n; e++ {
		if n >= max(2*e+f-1, 2*f+1) {
			best = min(best, n-e)
		}
	}
	return best
}

// recoverable checks by enumeration (small n) the property recovery relies on: for a
// fast quorum S of size q containing the leader (replica 0) and ANY recovery quorum R of
// f+1 replicas without the leader, S and R share at least q-f replicas, the bound
// decideRecovery uses; and any two fast quorums intersect.
func recoverable(n, q int) bool {
	f := (n - 1) / 2
	if 2*q <= n {
		return false
	}
	all := uint32(1)<<n - 1
	for s := uint32(0); s <= all; s++ {
		if s&1 == 0 || bits.OnesCount32(s) != q {
			continue
		}
		for r := uint32(0); r <= all; r++ {
			if r&1 != 0 || bits.OnesCount32(r) != f+1 {
				continue
			}
			if bits.OnesCount32(s&r) < q-f || bits.OnesCount32(s&r) < 1 {
				return false
			}
		}
	}
	return true
}

func TestFastQuorumProperties(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		n := 2*rapid.IntRange(1, 200).Draw(t, "f") + 1
		q := FastQuorum(n)
		if want := referenceFastQuorum(n); q != want {
			t.Fatalf("FastQuorum(%d) = %d, reference %d", n, q, want)
		}
		if q < SlowQuorum(n) || q > n {
			t.Fatalf("FastQuorum(%d) = %d outside [majority %d, n]", n, q, SlowQuorum(n))
		}
		if n >= 7 && q == SlowQuorum(n) {
			t.Fatalf("FastQuorum(%d) is a plain majority", n)
		}
	})
	for n := 3; n <= 11; n += 2 {
		if !recoverable(n, FastQuorum(n)) {
			t.Errorf("n=%d: fast quorum %d fails the enumerated recovery property", n, FastQuorum(n))
		}
	}
}
