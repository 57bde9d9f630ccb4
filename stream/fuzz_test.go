package stream

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"
	"time"
)

// wire builds pgoutput messages byte by byte for tests.
type wire struct{ b []byte }

func msg(typ byte) *wire { return &wire{b: []byte{typ}} }

func (w *wire) u8(v byte) *wire     { w.b = append(w.b, v); return w }
func (w *wire) u16(v uint16) *wire  { w.b = binary.BigEndian.AppendUint16(w.b, v); return w }
func (w *wire) u32(v uint32) *wire  { w.b = binary.BigEndian.AppendUint32(w.b, v); return w }
func (w *wire) u64(v uint64) *wire  { w.b = binary.BigEndian.AppendUint64(w.b, v); return w }
func (w *wire) i64(v int64) *wire   { return w.u64(uint64(v)) }
func (w *wire) str(s string) *wire  { w.b = append(append(w.b, s...), 0); return w }
func (w *wire) raw(p []byte) *wire  { w.b = append(w.b, p...); return w }
func (w *wire) text(s string) *wire { return w.u8('t').u32(uint32(len(s))).raw([]byte(s)) }
func (w *wire) bin(p []byte) *wire  { return w.u8('b').u32(uint32(len(p))).raw(p) }
func (w *wire) bytes() []byte       { return w.b }

// pgMicros is the inverse of pgTime.
func pgMicros(t time.Time) int64 {
	return (t.Unix()-pgEpochUnix)*1e6 + int64(t.Nanosecond()/1e3)
}

// encodeMessage is the inverse of Decode: it writes m as pgoutput protocol
// version 1. Tests use it to check that Decode loses nothing.
func encodeMessage(m Message) []byte {
	switch m := m.(type) {
	case *Begin:
		return msg('B').u64(uint64(m.FinalLSN)).i64(pgMicros(m.CommitTime)).u32(m.Xid).bytes()
	case *Commit:
		return msg('C').u8(m.Flags).u64(uint64(m.CommitLSN)).u64(uint64(m.EndLSN)).i64(pgMicros(m.CommitTime)).bytes()
	case *Origin:
		return msg('O').u64(uint64(m.CommitLSN)).str(m.Name).bytes()
	case *Relation:
		w := msg('R').u32(m.ID).str(m.Namespace).str(m.Name).u8(m.ReplicaIdentity).u16(uint16(len(m.Columns)))
		for _, c := range m.Columns {
			var flags byte
			if c.Key {
				flags = 1
			}
			w.u8(flags).str(c.Name).u32(c.TypeOID).u32(uint32(c.TypeMod))
		}
		return w.bytes()
	case *Type:
		return msg('Y').u32(m.ID).str(m.Namespace).str(m.Name).bytes()
	case *Insert:
		return encodeTuple(msg('I').u32(m.RelationID).u8('N'), m.New).bytes()
	case *Update:
		w := msg('U').u32(m.RelationID)
		if m.OldKind != 0 {
			encodeTuple(w.u8(m.OldKind), m.Old)
		}
		return encodeTuple(w.u8('N'), m.New).bytes()
	case *Delete:
		return encodeTuple(msg('D').u32(m.RelationID).u8(m.OldKind), m.Old).bytes()
	case *Truncate:
		w := msg('T').u32(uint32(len(m.RelationIDs))).u8(m.Options)
		for _, id := range m.RelationIDs {
			w.u32(id)
		}
		return w.bytes()
	case *LogicalMessage:
		var flags byte
		if m.Transactional {
			flags = 1
		}
		return msg('M').u8(flags).u64(uint64(m.LSN)).str(m.Prefix).u32(uint32(len(m.Content))).raw(m.Content).bytes()
	}
	panic(fmt.Sprintf("encodeMessage: unexpected %T", m))
}

func encodeTuple(w *wire, t Tuple) *wire {
	w.u16(uint16(len(t)))
	for _, v := range t {
		w.u8(v.Kind)
		if v.Kind == ValueText || v.Kind == ValueBinary {
			w.u32(uint32(len(v.Data))).raw(v.Data)
		}
	}
	return w
}

// FuzzDecode checks that Decode never panics, that whatever it accepts
// encodes back to exactly the input (nothing is lost or invented), and that
// the result does not alias the input.
func FuzzDecode(f *testing.F) {
	for _, c := range decodeCases() {
		f.Add(c.in)
	}
	for _, c := range decodeErrorCases() {
		f.Add(c.in)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		orig := bytes.Clone(data)
		m, err := Decode(data)
		if err != nil {
			if m != nil {
				t.Fatalf("Decode returned both %T and error %v", m, err)
			}
			return
		}
		for _, tup := range tuples(m) {
			if tup.Size() > len(data) {
				t.Fatalf("tuple Size %d > input length %d", tup.Size(), len(data))
			}
		}
		clear(data) // the caller's buffer is reused
		if got := encodeMessage(m); !bytes.Equal(got, orig) {
			t.Fatalf("re-encoded %T differs:\n got %x\nwant %x", m, got, orig)
		}
	})
}

func tuples(m Message) []Tuple {
	switch m := m.(type) {
	case *Insert:
		return []Tuple{m.New}
	case *Update:
		return []Tuple{m.Old, m.New}
	case *Delete:
		return []Tuple{m.Old}
	}
	return nil
}
