package wal

import (
	"errors"
	"os"
	"testing"
)

// FuzzRecover appends arbitrary bytes to a valid last segment. Open must never panic; it
// either keeps every valid record (and the tail it cut is gone for good), or refuses with
// ErrCorrupt.
func FuzzRecover(f *testing.F) {
	valid := records(0, 4)
	var prefix []byte
	for i := range valid {
		prefix, _ = appendFrame(prefix, &valid[i])
	}
	more, _ := appendFrame(nil, &records(10, 1)[0])
	f.Add([]byte{})
	f.Add(make([]byte, 100))
	f.Add(more[:len(more)-3])
	f.Add(append(append([]byte{1, 2, 3}, more...), 0))
	f.Add(more)
	f.Fuzz(func(t *testing.T, tail []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(segmentPath(dir, 1), append(append([]byte(nil), prefix...), tail...), 0o644); err != nil {
			t.Fatal(err)
		}
		l, got, rep, err := Open(dir, Options{NoSync: true})
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error is not ErrCorrupt: %v", err)
			}
			return
		}
		if len(got) < len(valid) {
			t.Fatalf("lost valid records: %d of %d (report %v)", len(got), len(valid), rep)
		}
		diffRecords(t, valid, got[:len(valid)])
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		l2, again, rep2, err := Open(dir, Options{NoSync: true})
		if err != nil {
			t.Fatalf("second Open: %v", err)
		}
		l2.Close()
		if rep2.Torn || len(again) != len(got) {
			t.Fatalf("second Open: %v, torn %v, %d records, want %d", err, rep2.Torn, len(again), len(got))
		}
	})
}
