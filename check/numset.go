package check

import "slices"

// numSet is a set of positive integers kept as a contiguous prefix 1..prefix plus the
// sorted numbers above it. Executed instance numbers of a row, and executed sequence
// numbers of a client, are almost contiguous, so the set stays small and copying it (a
// snapshot of what a replica executed) costs little.
type numSet struct {
	prefix uint64
	above  []uint64 // sorted, every element > prefix+1
}

func (s *numSet) has(n uint64) bool {
	if n <= s.prefix {
		return true
	}
	_, ok := slices.BinarySearch(s.above, n)
	return ok
}

// add inserts n and reports whether it was new.
func (s *numSet) add(n uint64) bool {
	if s.has(n) {
		return false
	}
	if n == s.prefix+1 {
		s.prefix = n
		i := 0
		for i < len(s.above) && s.above[i] == s.prefix+1 {
			s.prefix++
			i++
		}
		if i > 0 {
			s.above = append(s.above[:0], s.above[i:]...)
		}
		return true
	}
	i, _ := slices.BinarySearch(s.above, n)
	s.above = slices.Insert(s.above, i, n)
	return true
}

func (s *numSet) len() int { return int(s.prefix) + len(s.above) }

func (s *numSet) clone() *numSet {
	return &numSet{prefix: s.prefix, above: slices.Clone(s.above)}
}

func cloneSets[K comparable](m map[K]*numSet) map[K]*numSet {
	out := make(map[K]*numSet, len(m))
	for k, s := range m {
		out[k] = s.clone()
	}
	return out
}
