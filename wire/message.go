package wire

import (
	"encoding/binary"

	"github.com/parliament-lab/parliament/protocol"
)

// Message: byte Type | uvarint field bitmap | each field whose bit is set, in bit order.
// A field's bit is set exactly when the field is non-zero (non-empty for slices), so a
// Heartbeat pays only for the four fields it uses. OK has no bytes: its bit is its value.
const (
	fFrom    = 1 << iota // uvarint
	fTo                  // uvarint
	fBallot              // uvarint Round, uvarint Replica
	fVBallot             // uvarint Round, uvarint Replica
	fInst                // uvarint Replica, uvarint Num
	fOK                  // no bytes: OK is true
	fStatus              // byte
	fSeq                 // uvarint
	fIndex               // uvarint
	fDeps                // uvarint count, count × (uvarint Replica, uvarint Num)
	fCmds                // uvarint count, count × Command
	fInsts               // uvarint count, count × Instance
	fData                // uvarint length, bytes
	fAll     = 1<<iota - 1
)

func messageBits(m *protocol.Message) uint64 {
	var f uint64
	if m.From != 0 {
		f |= fFrom
	}
	if m.To != 0 {
		f |= fTo
	}
	if !m.Ballot.IsZero() {
		f |= fBallot
	}
	if !m.VBallot.IsZero() {
		f |= fVBallot
	}
	if m.Inst != (protocol.InstanceID{}) {
		f |= fInst
	}
	if m.OK {
		f |= fOK
	}
	if m.Status != 0 {
		f |= fStatus
	}
	if m.Seq != 0 {
		f |= fSeq
	}
	if m.Index != 0 {
		f |= fIndex
	}
	if len(m.Deps) != 0 {
		f |= fDeps
	}
	if len(m.Cmds) != 0 {
		f |= fCmds
	}
	if len(m.Insts) != 0 {
		f |= fInsts
	}
	if len(m.Data) != 0 {
		f |= fData
	}
	return f
}

// AppendMessage appends the encoding of m (the frame payload, without a header) to dst.
func AppendMessage(dst []byte, m *protocol.Message) []byte {
	f := messageBits(m)
	dst = append(dst, byte(m.Type))
	dst = binary.AppendUvarint(dst, f)
	if f&fFrom != 0 {
		dst = binary.AppendUvarint(dst, uint64(m.From))
	}
	if f&fTo != 0 {
		dst = binary.AppendUvarint(dst, uint64(m.To))
	}
	if f&fBallot != 0 {
		dst = appendBallot(dst, m.Ballot)
	}
	if f&fVBallot != 0 {
		dst = appendBallot(dst, m.VBallot)
	}
	if f&fInst != 0 {
		dst = appendInstanceID(dst, m.Inst)
	}
	if f&fStatus != 0 {
		dst = append(dst, byte(m.Status))
	}
	if f&fSeq != 0 {
		dst = binary.AppendUvarint(dst, m.Seq)
	}
	if f&fIndex != 0 {
		dst = binary.AppendUvarint(dst, m.Index)
	}
	if f&fDeps != 0 {
		dst = appendDeps(dst, m.Deps)
	}
	if f&fCmds != 0 {
		dst = appendCommands(dst, m.Cmds)
	}
	if f&fInsts != 0 {
		dst = binary.AppendUvarint(dst, uint64(len(m.Insts)))
		for i := range m.Insts {
			dst = appendInstance(dst, &m.Insts[i])
		}
	}
	if f&fData != 0 {
		dst = appendBytes(dst, m.Data)
	}
	return dst
}

func appendBallot(dst []byte, b protocol.Ballot) []byte {
	dst = binary.AppendUvarint(dst, uint64(b.Round))
	return binary.AppendUvarint(dst, uint64(b.Replica))
}

func appendInstanceID(dst []byte, id protocol.InstanceID) []byte {
	dst = binary.AppendUvarint(dst, uint64(id.Replica))
	return binary.AppendUvarint(dst, id.Num)
}

func appendDeps(dst []byte, deps []protocol.InstanceID) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(deps)))
	for _, id := range deps {
		dst = appendInstanceID(dst, id)
	}
	return dst
}

func appendCommands(dst []byte, cmds []protocol.Command) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(cmds)))
	for i := range cmds {
		dst = AppendCommand(dst, &cmds[i])
	}
	return dst
}

// Instance: uvarint ID.Replica | uvarint ID.Num | byte Status | Ballot | VBallot |
// uvarint Seq | uvarint #Deps | Deps | uvarint #Cmds | Cmds.
func appendInstance(dst []byte, inst *protocol.Instance) []byte {
	dst = appendInstanceID(dst, inst.ID)
	dst = append(dst, byte(inst.Status))
	dst = appendBallot(dst, inst.Ballot)
	dst = appendBallot(dst, inst.VBallot)
	dst = binary.AppendUvarint(dst, inst.Seq)
	dst = appendDeps(dst, inst.Deps)
	return appendCommands(dst, inst.Cmds)
}

// DecodeMessage decodes exactly one message from src into m. Byte slices in m alias src;
// the Commands of all Insts share one allocation, as do their Deps. On error *m is
// unspecified.
func DecodeMessage(src []byte, m *protocol.Message) error {
	*m = protocol.Message{}
	d := decoder{src: src}
	err := d.message(m)
	if err == nil {
		err = d.end("message")
	}
	if err != nil && m.Type.Valid() {
		return wrap("message "+m.Type.String(), err)
	}
	return wrap("message", err)
}

// MessageAliases reports whether decoding payload (a message frame's payload) may yield a
// message whose byte slices point into payload: one that carries commands, instances or
// data. It reads only the type and the field bitmap, so that a receiver can decide cheaply
// whether the bytes it read must outlive their buffer; a payload too short to tell reports
// true (decoding it then says what is wrong).
func MessageAliases(payload []byte) bool {
	if len(payload) < 2 {
		return true
	}
	f, n := binary.Uvarint(payload[1:])
	return n <= 0 || f&(fCmds|fInsts|fData) != 0
}

func (d *decoder) message(m *protocol.Message) error {
	t, err := d.byte("type")
	if err != nil {
		return err
	}
	if !protocol.MsgType(t).Valid() {
		d.off--
		return d.errf(ErrUnknownType, "message type %d", t)
	}
	m.Type = protocol.MsgType(t)
	f, err := d.uvarint("field bitmap")
	if err != nil {
		return err
	}
	if f&^fAll != 0 {
		return d.errf(ErrMalformed, "unknown fields in bitmap %#x", f)
	}
	if f&fFrom != 0 {
		v, err := d.nonZero32("from")
		if err != nil {
			return err
		}
		m.From = protocol.ReplicaID(v)
	}
	if f&fTo != 0 {
		v, err := d.nonZero32("to")
		if err != nil {
			return err
		}
		m.To = protocol.ReplicaID(v)
	}
	if f&fBallot != 0 {
		if m.Ballot, err = d.nonZeroBallot("ballot"); err != nil {
			return err
		}
	}
	if f&fVBallot != 0 {
		if m.VBallot, err = d.nonZeroBallot("vballot"); err != nil {
			return err
		}
	}
	if f&fInst != 0 {
		if m.Inst, err = d.instanceID("inst"); err != nil {
			return err
		}
		if m.Inst == (protocol.InstanceID{}) {
			return d.errf(ErrMalformed, "inst present but zero")
		}
	}
	m.OK = f&fOK != 0
	if f&fStatus != 0 {
		if m.Status, err = d.status(); err != nil {
			return err
		}
		if m.Status == 0 {
			return d.errf(ErrMalformed, "status present but zero")
		}
	}
	if f&fSeq != 0 {
		if m.Seq, err = d.nonZero64("seq"); err != nil {
			return err
		}
	}
	if f&fIndex != 0 {
		if m.Index, err = d.nonZero64("index"); err != nil {
			return err
		}
	}
	if f&fDeps != 0 {
		n, err := d.count("deps", minDepSize)
		if err != nil {
			return err
		}
		if n == 0 {
			return d.errf(ErrMalformed, "deps present but empty")
		}
		m.Deps = make([]protocol.InstanceID, n)
		if err := d.deps(m.Deps); err != nil {
			return err
		}
	}
	if f&fCmds != 0 {
		n, err := d.count("cmds", minCommandSize)
		if err != nil {
			return err
		}
		if n == 0 {
			return d.errf(ErrMalformed, "cmds present but empty")
		}
		m.Cmds = make([]protocol.Command, n)
		for i := range m.Cmds {
			if err := d.command(&m.Cmds[i]); err != nil {
				return err
			}
		}
	}
	if f&fInsts != 0 {
		if m.Insts, err = d.instances(); err != nil {
			return err
		}
	}
	if f&fData != 0 {
		if m.Data, err = d.bytes("data"); err != nil {
			return err
		}
		if m.Data == nil {
			return d.errf(ErrMalformed, "data present but empty")
		}
	}
	return nil
}

func (d *decoder) nonZero64(what string) (uint64, error) {
	v, err := d.uvarint(what)
	if err == nil && v == 0 {
		return 0, d.errf(ErrMalformed, "%s present but zero", what)
	}
	return v, err
}

func (d *decoder) nonZero32(what string) (uint32, error) {
	v, err := d.uint32(what)
	if err == nil && v == 0 {
		return 0, d.errf(ErrMalformed, "%s present but zero", what)
	}
	return v, err
}

func (d *decoder) nonZeroBallot(what string) (protocol.Ballot, error) {
	b, err := d.ballot(what)
	if err == nil && b.IsZero() {
		return b, d.errf(ErrMalformed, "%s present but zero", what)
	}
	return b, err
}

func (d *decoder) status() (protocol.Status, error) {
	s, err := d.byte("status")
	if err != nil {
		return 0, err
	}
	if !protocol.Status(s).Valid() {
		d.off--
		return 0, d.errf(ErrUnknownType, "status %d", s)
	}
	return protocol.Status(s), nil
}

func (d *decoder) deps(deps []protocol.InstanceID) error {
	for i := range deps {
		id, err := d.instanceID("dep")
		if err != nil {
			return err
		}
		deps[i] = id
	}
	return nil
}

// arena hands out the Deps and Cmds of several instances from one allocation each.
type arena struct {
	deps []protocol.InstanceID
	cmds []protocol.Command
}

func (a *arena) takeDeps(n int) []protocol.InstanceID {
	if n == 0 {
		return nil
	}
	if len(a.deps) < n {
		return make([]protocol.InstanceID, n)
	}
	s := a.deps[:n:n]
	a.deps = a.deps[n:]
	return s
}

func (a *arena) takeCmds(n int) []protocol.Command {
	if n == 0 {
		return nil
	}
	if len(a.cmds) < n {
		return make([]protocol.Command, n)
	}
	s := a.cmds[:n:n]
	a.cmds = a.cmds[n:]
	return s
}

// instances decodes the Insts field in two passes: the first validates and counts the
// Deps and Cmds of all instances (allocating nothing), the second decodes into one
// allocation of each.
func (d *decoder) instances() ([]protocol.Instance, error) {
	n, err := d.count("insts", minInstanceSize)
	if err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, d.errf(ErrMalformed, "insts present but empty")
	}
	start := d.off
	var c counts
	var scratch protocol.Instance
	for i := 0; i < n; i++ {
		if err := d.instance(&scratch, nil, &c); err != nil {
			return nil, err
		}
	}
	d.off = start
	insts := make([]protocol.Instance, n)
	var a arena
	if c.deps > 0 {
		a.deps = make([]protocol.InstanceID, c.deps)
	}
	if c.cmds > 0 {
		a.cmds = make([]protocol.Command, c.cmds)
	}
	for i := range insts {
		if err := d.instance(&insts[i], &a, nil); err != nil {
			return nil, err
		}
	}
	return insts, nil
}

type counts struct{ deps, cmds int }

// instance decodes one Instance. With a nil arena it only validates and adds the numbers
// of Deps and Cmds to c (dry run); otherwise it stores into inst, taking slices from a.
func (d *decoder) instance(inst *protocol.Instance, a *arena, c *counts) (err error) {
	if inst.ID, err = d.instanceID("instance id"); err != nil {
		return err
	}
	if inst.Status, err = d.status(); err != nil {
		return err
	}
	if inst.Ballot, err = d.ballot("instance ballot"); err != nil {
		return err
	}
	if inst.VBallot, err = d.ballot("instance vballot"); err != nil {
		return err
	}
	if inst.Seq, err = d.uvarint("instance seq"); err != nil {
		return err
	}
	nd, err := d.count("instance deps", minDepSize)
	if err != nil {
		return err
	}
	if a == nil {
		c.deps += nd
		for range nd {
			if _, err := d.instanceID("dep"); err != nil {
				return err
			}
		}
	} else {
		inst.Deps = a.takeDeps(nd)
		if err := d.deps(inst.Deps); err != nil {
			return err
		}
	}
	nc, err := d.count("instance cmds", minCommandSize)
	if err != nil {
		return err
	}
	if a == nil {
		c.cmds += nc
		var cmd protocol.Command
		for range nc {
			if err := d.command(&cmd); err != nil {
				return err
			}
		}
		return nil
	}
	inst.Cmds = a.takeCmds(nc)
	for i := range inst.Cmds {
		if err := d.command(&inst.Cmds[i]); err != nil {
			return err
		}
	}
	return nil
}
