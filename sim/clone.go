package sim

import "github.com/parliament-lab/parliament/protocol"

// Engines may reuse the memory of a Ready after Advance (protocol.Engine), and a message
// sent now is delivered later, a record is read back at a restart, a committed instance is
// kept by the executor. The simulator therefore deep-copies everything it keeps, so that a
// run depends only on what the engine said, never on what it later did to its buffers.

func cloneBytes(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte{}, b...)
}

func cloneCommand(c protocol.Command) protocol.Command {
	c.Key, c.Value, c.Old = cloneBytes(c.Key), cloneBytes(c.Value), cloneBytes(c.Old)
	return c
}

func cloneCommands(cs []protocol.Command) []protocol.Command {
	if cs == nil {
		return nil
	}
	out := make([]protocol.Command, len(cs))
	for i := range cs {
		out[i] = cloneCommand(cs[i])
	}
	return out
}

func cloneInstance(in protocol.Instance) protocol.Instance {
	if in.Deps != nil {
		in.Deps = append([]protocol.InstanceID{}, in.Deps...)
	}
	in.Cmds = cloneCommands(in.Cmds)
	return in
}

func cloneMessage(m protocol.Message) protocol.Message {
	if m.Deps != nil {
		m.Deps = append([]protocol.InstanceID{}, m.Deps...)
	}
	m.Cmds = cloneCommands(m.Cmds)
	if m.Insts != nil {
		insts := make([]protocol.Instance, len(m.Insts))
		for i := range m.Insts {
			insts[i] = cloneInstance(m.Insts[i])
		}
		m.Insts = insts
	}
	m.Data = cloneBytes(m.Data)
	return m
}

func cloneRecord(r protocol.Record) protocol.Record {
	r.Inst = cloneInstance(r.Inst)
	return r
}

func cloneRecords(rs []protocol.Record) []protocol.Record {
	out := make([]protocol.Record, len(rs))
	for i := range rs {
		out[i] = cloneRecord(rs[i])
	}
	return out
}
