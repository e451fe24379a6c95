package check

import "github.com/parliament-lab/parliament/internal/prefixset"

// numSet is the set of executed instance numbers of a row, or of executed sequence numbers
// of a client: almost contiguous, so the set stays small and copying it (a snapshot of what
// a replica executed) costs little.
type numSet = prefixset.Set

func cloneSets[K comparable](m map[K]*numSet) map[K]*numSet {
	out := make(map[K]*numSet, len(m))
	for k, s := range m {
		out[k] = s.Clone()
	}
	return out
}
