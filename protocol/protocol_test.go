package protocol

import "testing"

func TestBallotOrder(t *testing.T) {
	tests := []struct {
		a, b Ballot
		less bool
	}{
		{Ballot{}, Ballot{0, 1}, true},
		{Ballot{1, 3}, Ballot{2, 1}, true},
		{Ballot{2, 1}, Ballot{2, 2}, true},
		{Ballot{2, 2}, Ballot{2, 2}, false},
		{Ballot{3, 1}, Ballot{2, 5}, false},
	}
	for _, tt := range tests {
		if got := tt.a.Less(tt.b); got != tt.less {
			t.Errorf("%v.Less(%v) = %v, want %v", tt.a, tt.b, got, tt.less)
		}
	}
}

func TestBallotNext(t *testing.T) {
	for _, b := range []Ballot{{}, {0, 3}, {4, 2}, {4, 5}} {
		for r := ReplicaID(1); r <= 5; r++ {
			n := b.Next(r)
			if !b.Less(n) || n.Replica != r {
				t.Errorf("%v.Next(%d) = %v: not higher or not owned by %d", b, r, n, r)
			}
			// Smallest: no ballot of r with a lower round is above b.
			for round := uint32(0); round < n.Round; round++ {
				if c := (Ballot{round, r}); b.Less(c) {
					t.Errorf("%v.Next(%d) = %v, but %v is smaller and higher than %v", b, r, n, c, b)
				}
			}
		}
	}
}

func TestConflicts(t *testing.T) {
	get := func(k string) Command { return Command{Op: OpGet, Key: []byte(k)} }
	put := func(k string) Command { return Command{Op: OpPut, Key: []byte(k)} }
	cas := func(k string) Command { return Command{Op: OpCAS, Key: []byte(k)} }
	noop := Noop()
	tests := []struct {
		name string
		a, b Command
		want bool
	}{
		{"two reads", get("x"), get("x"), false},
		{"read write same key", get("x"), put("x"), true},
		{"write write same key", put("x"), put("x"), true},
		{"cas read", cas("x"), get("x"), true},
		{"different keys", put("x"), put("y"), false},
		{"noop", noop, put("x"), false},
		{"noop noop", noop, noop, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.a.Conflicts(&tt.b); got != tt.want {
				t.Errorf("Conflicts = %v, want %v", got, tt.want)
			}
			if got := tt.b.Conflicts(&tt.a); got != tt.want {
				t.Errorf("reverse Conflicts = %v, want %v (must be symmetric)", got, tt.want)
			}
		})
	}
}

func TestTypesValid(t *testing.T) {
	for ty := range msgNames {
		if !ty.Valid() {
			t.Errorf("%v named but not valid", ty)
		}
	}
	for _, ty := range []MsgType{MsgInvalid, 12, 31, 44, 63, 68, 255} {
		if ty.Valid() {
			t.Errorf("%d valid, want invalid", ty)
		}
	}
	if RecordInvalid.Valid() || !RecordInstance.Valid() || RecordType(9).Valid() {
		t.Error("record type validity wrong")
	}
}

func TestConfigValidate(t *testing.T) {
	good := Config{ID: 2, Replicas: []ReplicaID{1, 2, 3}}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []Config{
		{ID: 0, Replicas: []ReplicaID{1}},
		{ID: 4, Replicas: []ReplicaID{1, 2, 3}},
		{ID: 1, Replicas: []ReplicaID{2, 1}},
		{ID: 1, Replicas: nil},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("%+v: want error", c)
		}
	}
}
