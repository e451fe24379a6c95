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

// Detach points every byte slice of the messages of batch (Data, and Key, Value and Old of
// their commands and of their instances' commands) into one fresh arena holding copies,
// so that the batch shares no bytes with the buffer it was decoded from and may be kept
// after that buffer is reused (see transport.Releaser). It allocates once per batch, and
// not at all when no message carries bytes. The Cmds, Deps and Insts arrays are left as
// they are: decoding allocates them.
func Detach(batch []Message) {
	n := 0
	for i := range batch {
		m := &batch[i]
		n += len(m.Data) + commandBytes(m.Cmds)
		for j := range m.Insts {
			n += commandBytes(m.Insts[j].Cmds)
		}
	}
	if n == 0 {
		return
	}
	arena := make([]byte, 0, n)
	for i := range batch {
		m := &batch[i]
		m.Data, arena = moveBytes(m.Data, arena)
		arena = moveCommandBytes(m.Cmds, arena)
		for j := range m.Insts {
			arena = moveCommandBytes(m.Insts[j].Cmds, arena)
		}
	}
}

func commandBytes(cs []Command) int {
	n := 0
	for i := range cs {
		n += len(cs[i].Key) + len(cs[i].Value) + len(cs[i].Old)
	}
	return n
}

func moveCommandBytes(cs []Command, arena []byte) []byte {
	for i := range cs {
		c := &cs[i]
		c.Key, arena = moveBytes(c.Key, arena)
		c.Value, arena = moveBytes(c.Value, arena)
		c.Old, arena = moveBytes(c.Old, arena)
	}
	return arena
}

// moveBytes appends b to arena (which has room) and returns the copy, capped so that
// appending to it cannot reach the next copy, and the grown arena. Empty slices are left
// as they are (nil stays nil).
func moveBytes(b, arena []byte) ([]byte, []byte) {
	if len(b) == 0 {
		return b, arena
	}
	start := len(arena)
	arena = append(arena, b...)
	return arena[start:len(arena):len(arena)], arena
}
