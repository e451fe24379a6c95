package check

import (
	"fmt"
	"strings"
)

// CheckLiveness checks that every operation of h completed within bound of virtual time
// once faults healed at healTime: an operation invoked before the heal must complete by
// healTime+bound, one invoked later by its invocation+bound. end is when the run stopped
// observing; an operation still unanswered at end is a violation only if its deadline
// had passed (a run that stops early on success never blames an operation it cut short).
func CheckLiveness(h []Op, healTime, bound, end int64) *Violation {
	var late []string
	for i := range h {
		o := &h[i]
		deadline := max(o.Call, healTime) + bound
		switch {
		case o.Known && o.Return > deadline:
			late = append(late, fmt.Sprintf("%s invoked at %s completed at %s",
				o.Tag(), FormatTime(o.Call), FormatTime(o.Return)))
		case !o.Known && end >= deadline:
			late = append(late, fmt.Sprintf("%s invoked at %s never completed",
				o.Tag(), FormatTime(o.Call)))
		}
	}
	if len(late) == 0 {
		return nil
	}
	n := len(late)
	if n > 5 {
		late = append(late[:5], fmt.Sprintf("and %d more", n-5))
	}
	return &Violation{Property: Liveness, Time: end, Detail: fmt.Sprintf(
		"%d operations missed the bound of %s after the heal at %s: %s",
		n, FormatTime(bound), FormatTime(healTime), strings.Join(late, "; "))}
}

// Tag names an operation as "c<client id>#<seq> get(k)".
func (o *Op) Tag() string {
	return fmt.Sprintf("c%d#%d %s", o.ClientID, o.Seq, o.String())
}

// FormatTime renders virtual nanoseconds as milliseconds with microsecond precision, the
// unit of the simulator's traces.
func FormatTime(ns int64) string {
	return fmt.Sprintf("%d.%03dms", ns/1e6, (ns%1e6)/1e3)
}
