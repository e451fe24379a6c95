package wire

import (
	"encoding/binary"

	"github.com/parliament-lab/parliament/protocol"
)

// Command: uvarint ClientID | uvarint Seq | byte Op | bytes Key | bytes Value | bytes Old,
// where bytes = uvarint length followed by that many bytes.

// AppendCommand appends the encoding of c to dst.
func AppendCommand(dst []byte, c *protocol.Command) []byte {
	dst = binary.AppendUvarint(dst, c.ClientID)
	dst = binary.AppendUvarint(dst, c.Seq)
	dst = append(dst, byte(c.Op))
	dst = appendBytes(dst, c.Key)
	dst = appendBytes(dst, c.Value)
	return appendBytes(dst, c.Old)
}

// DecodeCommand decodes exactly one command from src into c. Key, Value and Old alias src.
// On error *c is unspecified.
func DecodeCommand(src []byte, c *protocol.Command) error {
	d := decoder{src: src}
	if err := d.command(c); err != nil {
		return wrap("command", err)
	}
	return wrap("command", d.end("command"))
}

func appendBytes(dst, b []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

func (d *decoder) command(c *protocol.Command) (err error) {
	if c.ClientID, err = d.uvarint("client id"); err != nil {
		return err
	}
	if c.Seq, err = d.uvarint("seq"); err != nil {
		return err
	}
	op, err := d.byte("op")
	if err != nil {
		return err
	}
	c.Op = protocol.Op(op)
	if !c.Op.Valid() {
		d.off--
		return d.errf(ErrUnknownType, "op %d", op)
	}
	if c.Key, err = d.bytes("key"); err != nil {
		return err
	}
	if c.Value, err = d.bytes("value"); err != nil {
		return err
	}
	c.Old, err = d.bytes("old")
	return err
}

// Reply: uvarint ClientID | uvarint Seq | byte Result | bytes Value | uvarint Leader |
// uvarint ExecDelayMicros.

// AppendReply appends the encoding of r to dst.
func AppendReply(dst []byte, r *protocol.Reply) []byte {
	dst = binary.AppendUvarint(dst, r.ClientID)
	dst = binary.AppendUvarint(dst, r.Seq)
	dst = append(dst, byte(r.Result))
	dst = appendBytes(dst, r.Value)
	dst = binary.AppendUvarint(dst, uint64(r.Leader))
	return binary.AppendUvarint(dst, uint64(r.ExecDelayMicros))
}

// DecodeReply decodes exactly one reply from src into r. Value aliases src. On error *r is
// unspecified.
func DecodeReply(src []byte, r *protocol.Reply) error {
	d := decoder{src: src}
	*r = protocol.Reply{}
	err := d.reply(r)
	if err == nil {
		err = d.end("reply")
	}
	return wrap("reply", err)
}

func (d *decoder) reply(r *protocol.Reply) (err error) {
	if r.ClientID, err = d.uvarint("client id"); err != nil {
		return err
	}
	if r.Seq, err = d.uvarint("seq"); err != nil {
		return err
	}
	res, err := d.byte("result")
	if err != nil {
		return err
	}
	r.Result = protocol.Result(res)
	if !r.Result.Valid() {
		d.off--
		return d.errf(ErrUnknownType, "result %d", res)
	}
	if r.Value, err = d.bytes("value"); err != nil {
		return err
	}
	leader, err := d.uint32("leader")
	if err != nil {
		return err
	}
	r.Leader = protocol.ReplicaID(leader)
	r.ExecDelayMicros, err = d.uint32("exec delay")
	return err
}
