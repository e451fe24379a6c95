package replica

import (
	"fmt"
	"math"
	"sort"

	"github.com/parliament-lab/parliament/config"
	"github.com/parliament-lab/parliament/multipaxos"
	"github.com/parliament-lab/parliament/protocol"
	"github.com/parliament-lab/parliament/transport"
)

// NewEngine builds the engine the cluster file names, with its knobs (zero = the engine's
// default).
func NewEngine(cl *config.Cluster, pc protocol.Config) (protocol.Engine, error) {
	return NewEngineWith(cl, pc, EngineChoices{})
}

// EngineChoices are what a caller may decide beyond the cluster file (the benchmark does).
type EngineChoices struct {
	// LatencyRank orders the EPaxos peers closest first; nil = LatencyRank(cl, id), by the
	// built-in WAN matrix.
	LatencyRank []protocol.ReplicaID
	// PreferredLeader campaigns first for Multi-Paxos leadership; 0 = none.
	PreferredLeader protocol.ReplicaID
}

// NewEngineWith is NewEngine with ch.
func NewEngineWith(cl *config.Cluster, pc protocol.Config, ch EngineChoices) (protocol.Engine, error) {
	if mk, ok := engines[cl.Protocol]; ok {
		return mk(cl, pc, ch)
	}
	return nil, fmt.Errorf("unknown protocol %q", cl.Protocol)
}

// engines builds an engine per protocol name (one file per protocol).
var engines = map[string]func(cl *config.Cluster, pc protocol.Config, ch EngineChoices) (protocol.Engine, error){
	config.MultiPaxos: newMultiPaxos,
}

func newMultiPaxos(cl *config.Cluster, pc protocol.Config, ch EngineChoices) (protocol.Engine, error) {
	c := multipaxos.DefaultConfig()
	c.Config = pc
	setIf(&c.ElectionTicks, cl.ElectionTicks)
	setIf(&c.HeartbeatTicks, cl.HeartbeatTicks)
	setIf(&c.Window, cl.Window)
	setIf(&c.MaxBatch, cl.Batch)
	c.PreferredLeader = ch.PreferredLeader
	e, err := multipaxos.New(c)
	if err != nil {
		return nil, err
	}
	return e, nil
}

func setIf(dst *int, v int) {
	if v > 0 {
		*dst = v
	}
}

// LatencyRank orders id's peers closest first by the built-in WAN matrix, for EPaxos
// thrifty quorums (RankByLatency).
func LatencyRank(cl *config.Cluster, id protocol.ReplicaID) []protocol.ReplicaID {
	return RankByLatency(transport.DefaultMatrix(), cl.Sites(), cl.IDs(), id)
}

// RankByLatency orders id's peers (ids without id) closest first by the round-trip times
// of m between their sites; ties, sites m lacks and a nil m go by ID distance, then ID.
// The runtime and the bench harness both rank with it, so that a benchmark's EPaxos
// quorums are the ones a deployment on the same matrix would pick.
func RankByLatency(m *transport.Matrix, sites map[protocol.ReplicaID]string, ids []protocol.ReplicaID, id protocol.ReplicaID) []protocol.ReplicaID {
	rtt := func(p protocol.ReplicaID) float64 {
		if m == nil {
			return 0
		}
		d, err := m.RTT(sites[id], sites[p])
		if err != nil {
			return math.Inf(1)
		}
		return float64(d)
	}
	dist := func(p protocol.ReplicaID) int {
		if p > id {
			return int(p - id)
		}
		return int(id - p)
	}
	var peers []protocol.ReplicaID
	for _, p := range ids {
		if p != id {
			peers = append(peers, p)
		}
	}
	sort.SliceStable(peers, func(i, j int) bool {
		a, b := rtt(peers[i]), rtt(peers[j])
		if a != b {
			return a < b
		}
		if dist(peers[i]) != dist(peers[j]) {
			return dist(peers[i]) < dist(peers[j])
		}
		return peers[i] < peers[j]
	})
	return peers
}
