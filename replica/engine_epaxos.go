package replica

import (
	"github.com/parliament-lab/parliament/config"
	"github.com/parliament-lab/parliament/epaxos"
	"github.com/parliament-lab/parliament/protocol"
)

func init() { engines[config.EPaxos] = newEPaxos }

func newEPaxos(cl *config.Cluster, pc protocol.Config, ch EngineChoices) (protocol.Engine, error) {
	c := epaxos.DefaultConfig()
	c.Config = pc
	c.Thrifty = cl.Thrifty
	setIf(&c.RecoveryTicks, cl.RecoveryTicks)
	setIf(&c.MaxBatch, cl.Batch)
	c.LatencyRank = ch.LatencyRank
	if c.LatencyRank == nil {
		c.LatencyRank = LatencyRank(cl, pc.ID)
	}
	e, err := epaxos.New(c)
	if err != nil {
		return nil, err
	}
	return e, nil
}
