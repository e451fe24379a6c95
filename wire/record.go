package wire

import (
	"encoding/binary"

	"github.com/parliament-lab/parliament/protocol"
)

// Record: byte Type | Ballot | uvarint Index | Instance. Records are written once per
// state change and read only at recovery, so they use a flat layout without a bitmap.

// AppendRecord appends the encoding of r to dst.
func AppendRecord(dst []byte, r *protocol.Record) []byte {
	dst = append(dst, byte(r.Type))
	dst = appendBallot(dst, r.Ballot)
	dst = binary.AppendUvarint(dst, r.Index)
	return appendInstance(dst, &r.Inst)
}

// DecodeRecord decodes exactly one record from src into r. Byte slices alias src. On error
// *r is unspecified.
func DecodeRecord(src []byte, r *protocol.Record) error {
	*r = protocol.Record{}
	d := decoder{src: src}
	err := d.record(r)
	if err == nil {
		err = d.end("record")
	}
	return wrap("record", err)
}

func (d *decoder) record(r *protocol.Record) (err error) {
	t, err := d.byte("type")
	if err != nil {
		return err
	}
	if !protocol.RecordType(t).Valid() {
		d.off--
		return d.errf(ErrUnknownType, "record type %d", t)
	}
	r.Type = protocol.RecordType(t)
	if r.Ballot, err = d.ballot("ballot"); err != nil {
		return err
	}
	if r.Index, err = d.uvarint("index"); err != nil {
		return err
	}
	// An empty arena: each of Deps and Cmds gets its own exact allocation.
	return d.instance(&r.Inst, &arena{}, nil)
}
