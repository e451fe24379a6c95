package protocol

// Deep copies. Engines may reuse a Ready's memory after Advance, senders may reuse a
// message after Send, and decoded messages may alias a network buffer: whoever keeps one
// of these values beyond that point (the in-memory and WAN transports, the runtime's
// in-memory log, the simulator) keeps a Clone, whose slices share no memory with the
// original. nil slices stay nil and empty ones stay empty.

// Clone returns a copy of c that shares no memory with it.
func (c *Command) Clone() Command {
	out := *c
	out.Key, out.Value, out.Old = cloneBytes(c.Key), cloneBytes(c.Value), cloneBytes(c.Old)
	return out
}

// CloneCommands returns a deep copy of cs.
func CloneCommands(cs []Command) []Command {
	if cs == nil {
		return nil
	}
	out := make([]Command, len(cs))
	for i := range cs {
		out[i] = cs[i].Clone()
	}
	return out
}

// Clone returns a copy of inst that shares no memory with it.
func (inst *Instance) Clone() Instance {
	out := *inst
	out.Deps = cloneDeps(inst.Deps)
	out.Cmds = CloneCommands(inst.Cmds)
	return out
}

// Clone returns a copy of m that shares no memory with it.
func (m *Message) Clone() Message {
	out := *m
	out.Deps = cloneDeps(m.Deps)
	out.Cmds = CloneCommands(m.Cmds)
	if m.Insts != nil {
		out.Insts = make([]Instance, len(m.Insts))
		for i := range m.Insts {
			out.Insts[i] = m.Insts[i].Clone()
		}
	}
	out.Data = cloneBytes(m.Data)
	return out
}

// Clone returns a copy of r that shares no memory with it.
func (r *Record) Clone() Record {
	out := *r
	out.Inst = r.Inst.Clone()
	return out
}

// CloneRecords returns a deep copy of rs.
func CloneRecords(rs []Record) []Record {
	if rs == nil {
		return nil
	}
	out := make([]Record, len(rs))
	for i := range rs {
		out[i] = rs[i].Clone()
	}
	return out
}

// CloneBytes returns a copy of b (nil for nil).
func CloneBytes(b []byte) []byte { return cloneBytes(b) }

func cloneBytes(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append(make([]byte, 0, len(b)), b...)
}

func cloneDeps(d []InstanceID) []InstanceID {
	if d == nil {
		return nil
	}
	return append(make([]InstanceID, 0, len(d)), d...)
}
