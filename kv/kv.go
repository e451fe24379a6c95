// Package kv is the key-value state machine both protocols apply: GET, PUT and CAS on
// byte-string keys and values, with per-client sessions that make writes exactly-once.
//
// # Exactly-once, independent of execution order
//
// EPaxos executes a pipelined client's non-conflicting commands in different orders at
// different replicas, so the session state must depend only on the set of commands
// executed, never on their order. Per client the store keeps the contiguous prefix P of
// executed sequence numbers (1..P all executed) and the set of executed numbers above P.
// A command whose number is in that set is a duplicate (a retry that was committed twice):
//   - a duplicate write (PUT, CAS) is not applied again. A PUT always answers ResultOK, so
//     its duplicate answers ResultOK too. A CAS answers from the reply cache, which holds
//     the replies of the client's MaxCachedReplies highest-numbered CAS commands (chosen by
//     number, not by arrival, so every replica caches the same ones); an older duplicate
//     CAS answers ResultError "duplicate; result expired" - the client has long moved on.
//   - a duplicate GET is executed again: it reads the current value, which is still a
//     linearizable answer because the duplicate executes at a point of the agreed order.
//
// Sequence numbers must be gap-free per client (the client library retries a command
// until it succeeds), otherwise the set above P grows. Client ID 0 has no session: its
// commands are applied every time.
//
// A Store is not safe for concurrent use.
package kv

import (
	"cmp"
	"slices"

	"github.com/parliament-lab/parliament/internal/prefixset"
	"github.com/parliament-lab/parliament/protocol"
)

// MaxCachedReplies is how many CAS replies a session keeps for duplicates.
const MaxCachedReplies = 64

// Store is the key-value state machine.
type Store struct {
	data     map[string]*entry
	sessions map[uint64]*session
}

// entry boxes a value so that overwriting an existing key does not allocate a new key
// string (a map assignment with string(key) would).
type entry struct{ v []byte }

type session struct {
	executed prefixset.Set // the executed sequence numbers
	cache    []cached      // CAS replies of the highest-numbered CAS commands, sorted by seq
}

type cached struct {
	seq    uint64
	result protocol.Result
	value  []byte // aliases a stored value (never modified in place)
}

// New returns an empty store.
func New() *Store {
	return &Store{data: make(map[string]*entry), sessions: make(map[uint64]*session)}
}

// cacheReply keeps the reply of CAS seq if it is among the MaxCachedReplies highest CAS
// numbers executed. The slice may hold up to twice that many (sorted by seq), so that
// evicting costs one copy per MaxCachedReplies replies; only its last MaxCachedReplies
// entries count (see live).
func (s *session) cacheReply(seq uint64, r protocol.Result, v []byte) {
	live := s.live()
	if len(live) == MaxCachedReplies && seq < live[0].seq {
		return // older than everything kept
	}
	i, _ := slices.BinarySearchFunc(s.cache, seq, func(c cached, seq uint64) int {
		return cmp.Compare(c.seq, seq)
	})
	s.cache = slices.Insert(s.cache, i, cached{seq: seq, result: r, value: v})
	if len(s.cache) >= 2*MaxCachedReplies {
		n := copy(s.cache, s.cache[len(s.cache)-MaxCachedReplies:])
		clear(s.cache[n:])
		s.cache = s.cache[:n]
	}
}

// live returns the cached replies that count: the MaxCachedReplies highest seqs.
func (s *session) live() []cached {
	if len(s.cache) > MaxCachedReplies {
		return s.cache[len(s.cache)-MaxCachedReplies:]
	}
	return s.cache
}

func (s *session) cachedReply(seq uint64) (cached, bool) {
	live := s.live()
	i, ok := slices.BinarySearchFunc(live, seq, func(c cached, seq uint64) int {
		return cmp.Compare(c.seq, seq)
	})
	if !ok {
		return cached{}, false
	}
	return live[i], true
}

var errExpired = []byte("duplicate; result expired")

// Apply executes cmd and returns its reply. Byte slices of cmd are copied when kept (they
// may alias network buffers). Reply.Value aliases the store's memory: the caller must not
// modify it (stored values are never modified in place, so it stays valid). A no-op
// returns the zero Reply.
func (s *Store) Apply(cmd *protocol.Command) protocol.Reply {
	if cmd.Op == protocol.OpNoop {
		return protocol.Reply{}
	}
	rep := protocol.Reply{ClientID: cmd.ClientID, Seq: cmd.Seq}
	if !cmd.Op.Valid() {
		rep.Result, rep.Value = protocol.ResultError, []byte("unknown operation")
		return rep
	}
	var sess *session
	if cmd.ClientID != 0 {
		sess = s.sessions[cmd.ClientID]
		if sess == nil {
			sess = &session{}
			s.sessions[cmd.ClientID] = sess
		}
		if !sess.executed.Add(cmd.Seq) { // a duplicate: executed before
			switch cmd.Op {
			case protocol.OpGet:
				s.get(cmd, &rep) // re-executed: still linearizable
			case protocol.OpPut:
				rep.Result = protocol.ResultOK
			case protocol.OpCAS:
				if c, ok := sess.cachedReply(cmd.Seq); ok {
					rep.Result, rep.Value = c.result, c.value
				} else {
					rep.Result, rep.Value = protocol.ResultError, errExpired
				}
			}
			return rep
		}
	}
	switch cmd.Op {
	case protocol.OpGet:
		s.get(cmd, &rep)
	case protocol.OpPut:
		s.put(cmd.Key, cmd.Value)
		rep.Result = protocol.ResultOK
	case protocol.OpCAS:
		var cur []byte
		e, ok := s.data[string(cmd.Key)]
		if ok {
			cur = e.v
		}
		if (ok && string(cur) == string(cmd.Old)) || (!ok && len(cmd.Old) == 0) {
			s.put(cmd.Key, cmd.Value)
			rep.Result = protocol.ResultOK
		} else {
			rep.Result, rep.Value = protocol.ResultCASFailed, cur
		}
		if sess != nil {
			sess.cacheReply(cmd.Seq, rep.Result, rep.Value)
		}
	}
	return rep
}

func (s *Store) get(cmd *protocol.Command, rep *protocol.Reply) {
	if e, ok := s.data[string(cmd.Key)]; ok {
		rep.Result, rep.Value = protocol.ResultOK, e.v
	} else {
		rep.Result = protocol.ResultNotFound
	}
}

// put stores a fresh copy of value: values handed out in earlier replies stay unchanged.
func (s *Store) put(key, value []byte) {
	v := make([]byte, len(value))
	copy(v, value)
	if e, ok := s.data[string(key)]; ok {
		e.v = v
		return
	}
	s.data[string(key)] = &entry{v: v}
}

// Get reads key directly (tests, diagnostics); the result must not be modified.
func (s *Store) Get(key []byte) ([]byte, bool) {
	if e, ok := s.data[string(key)]; ok {
		return e.v, true
	}
	return nil, false
}

// Len returns the number of keys.
func (s *Store) Len() int { return len(s.data) }

// Sessions returns the number of client sessions: the distinct client IDs whose commands
// it executed (tests, diagnostics).
func (s *Store) Sessions() int { return len(s.sessions) }
