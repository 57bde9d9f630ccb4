package stream

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
)

// This file decodes pgoutput protocol version 1 ("Logical Replication
// Message Formats" in the PostgreSQL documentation). pglogrepl's decoders
// index their input without length checks, so a truncated or corrupt message
// panics there; every read here is bounded and a bad message is an error
// wrapping ErrMalformed.

// ErrMalformed is wrapped by every error Decode returns.
var ErrMalformed = errors.New("malformed pgoutput message")

// Message is one decoded pgoutput message: *Begin, *Commit, *Origin,
// *Relation, *Type, *Insert, *Update, *Delete, *Truncate or *LogicalMessage.
type Message interface{ message() }

// Begin starts a transaction.
type Begin struct {
	// FinalLSN is the LSN of the transaction's commit record.
	FinalLSN pglogrepl.LSN
	// CommitTime is when the transaction committed, in UTC.
	CommitTime time.Time
	// Xid is the transaction id.
	Xid uint32
}

// Commit ends a transaction.
type Commit struct {
	// Flags is unused by the protocol so far (always 0).
	Flags uint8
	// CommitLSN is the LSN of the commit record.
	CommitLSN pglogrepl.LSN
	// EndLSN is the end of the commit record: the position to store and
	// acknowledge once the transaction is applied.
	EndLSN pglogrepl.LSN
	// CommitTime is when the transaction committed, in UTC.
	CommitTime time.Time
}

// Origin names the replication origin of the transaction being sent.
type Origin struct {
	// CommitLSN is the commit LSN on the origin server.
	CommitLSN pglogrepl.LSN
	// Name is the origin's name.
	Name string
}

// Relation describes a table; it precedes the first change of that table in
// a session and comes again when the table's definition changes.
type Relation struct {
	// ID is the table's OID, which later changes refer to.
	ID uint32
	// Namespace is the schema name ("" for pg_catalog).
	Namespace string
	// Name is the table name.
	Name string
	// ReplicaIdentity is pg_class.relreplident: 'd' default, 'n' nothing,
	// 'f' full, 'i' index.
	ReplicaIdentity byte
	// Columns are the published columns in tuple order.
	Columns []RelationColumn
}

// RelationColumn is one column of a Relation.
type RelationColumn struct {
	// Key is set for columns of the replica identity (all columns under
	// REPLICA IDENTITY FULL).
	Key bool
	// Name is the column name.
	Name string
	// TypeOID is the column's data type.
	TypeOID uint32
	// TypeMod is the type modifier (atttypmod), -1 when there is none.
	TypeMod int32
}

// Type describes a non-built-in data type used by a following Relation.
type Type struct {
	// ID is the type's OID.
	ID uint32
	// Namespace is the schema name ("" for pg_catalog).
	Namespace string
	// Name is the type name.
	Name string
}

// Insert is one inserted row.
type Insert struct {
	// RelationID is the OID of a Relation sent earlier.
	RelationID uint32
	// New is the inserted row.
	New Tuple
}

// Update is one updated row. OldKind is 'K' (old key columns only; others
// are ValueNull meaning "not part of the key"), 'O' (whole old row, REPLICA
// IDENTITY FULL) or 0 (no old tuple: key unchanged).
type Update struct {
	// RelationID is the OID of a Relation sent earlier.
	RelationID uint32
	// OldKind says what Old holds: 'K', 'O' or 0 (Old is nil).
	OldKind byte
	// Old is the old key or row, per OldKind.
	Old Tuple
	// New is the new row; unchanged TOASTed values are ValueUnchangedToast.
	New Tuple
}

// Delete is one deleted row. OldKind is 'K' (key columns only; others are
// ValueNull meaning "not part of the key") or 'O' (whole row, REPLICA
// IDENTITY FULL).
type Delete struct {
	// RelationID is the OID of a Relation sent earlier.
	RelationID uint32
	// OldKind says what Old holds: 'K' or 'O'.
	OldKind byte
	// Old is the deleted row's key or whole row, per OldKind.
	Old Tuple
}

// Truncate empties one or more tables in one statement.
type Truncate struct {
	// Options holds TruncateCascade and TruncateRestartIdentity bits.
	Options uint8
	// RelationIDs are the OIDs of the truncated tables.
	RelationIDs []uint32
}

// Truncate option bits, as on the wire.
const (
	TruncateCascade         uint8 = 1
	TruncateRestartIdentity uint8 = 2
)

// Cascade reports TRUNCATE ... CASCADE.
func (t *Truncate) Cascade() bool { return t.Options&TruncateCascade != 0 }

// RestartIdentity reports TRUNCATE ... RESTART IDENTITY.
func (t *Truncate) RestartIdentity() bool { return t.Options&TruncateRestartIdentity != 0 }

// LogicalMessage is a message written by pg_logical_emit_message (sent only
// with the "messages" option).
type LogicalMessage struct {
	// Transactional is set for messages emitted inside a transaction; they
	// come between that transaction's Begin and Commit.
	Transactional bool
	// LSN is the message's position.
	LSN pglogrepl.LSN
	// Prefix is the prefix given to pg_logical_emit_message.
	Prefix string
	// Content is the message body.
	Content []byte
}

func (*Begin) message()          {}
func (*Commit) message()         {}
func (*Origin) message()         {}
func (*Relation) message()       {}
func (*Type) message()           {}
func (*Insert) message()         {}
func (*Update) message()         {}
func (*Delete) message()         {}
func (*Truncate) message()       {}
func (*LogicalMessage) message() {}

// Value kinds, as on the wire.
const (
	// ValueNull is SQL NULL (or, in a 'K' old tuple, "not part of the key").
	ValueNull byte = 'n'
	// ValueUnchangedToast is a TOASTed value that did not change and was
	// not sent: keep the target's current value.
	ValueUnchangedToast byte = 'u'
	// ValueText is a value in the type's text format.
	ValueText byte = 't'
	// ValueBinary is a value in the type's binary (send/recv) format.
	ValueBinary byte = 'b'
)

// Value is one column of a Tuple. Data is nil for ValueNull and
// ValueUnchangedToast.
type Value struct {
	Kind byte
	Data []byte
}

// Tuple is a row's columns in Relation column order.
type Tuple []Value

// Size is the number of value bytes the tuple holds, for memory accounting.
func (t Tuple) Size() int {
	n := 0
	for i := range t {
		n += len(t[i].Data)
	}
	return n
}

// pgEpochUnix is 2000-01-01 00:00:00 UTC, PostgreSQL's timestamp epoch.
const pgEpochUnix = 946684800

// pgTime converts PostgreSQL epoch microseconds to a UTC time.
func pgTime(us int64) time.Time {
	return time.Unix(pgEpochUnix+us/1e6, (us%1e6)*1e3).UTC()
}

// Wire sizes of fixed parts, used to bound counts before allocating.
const (
	minRelationColumn = 1 + 1 + 4 + 4 // flags, empty name's NUL, type OID, typmod
	minTupleColumn    = 1             // kind byte of 'n' or 'u'
)

// Decode parses one pgoutput message (the XLogData payload, starting with
// the type byte). The result never aliases data (the network buffer is
// reused): tuple values are sliced out of one copy of the message.
// Malformed, truncated or oversized input returns an error wrapping
// ErrMalformed and never panics: wrong lengths, missing string terminators,
// unknown tuple kinds, counts larger than the remaining bytes, negative
// lengths and trailing bytes after a complete message are all rejected.
func Decode(data []byte) (Message, error) {
	if len(data) == 0 {
		return nil, fmt.Errorf("%w: empty message", ErrMalformed)
	}
	d := decoder{b: data, off: 1, typ: data[0]}
	var m Message
	switch d.typ {
	case 'B':
		m = d.begin()
	case 'C':
		m = d.commit()
	case 'O':
		m = d.origin()
	case 'R':
		m = d.relation()
	case 'Y':
		m = d.typeMsg()
	case 'I':
		m = d.insert()
	case 'U':
		m = d.update()
	case 'D':
		m = d.delete()
	case 'T':
		m = d.truncate()
	case 'M':
		m = d.logicalMessage()
	case 'S', 'E', 'c', 'A', 'b', 'P', 'K', 'r', 'p':
		return nil, fmt.Errorf("%w: message type %q belongs to a pgoutput protocol version above 1 (streaming or two-phase), which is never requested", ErrMalformed, d.typ)
	default:
		return nil, fmt.Errorf("%w: unknown message type %q (0x%02x)", ErrMalformed, d.typ, d.typ)
	}
	if d.err == nil && d.off != len(d.b) {
		d.fail(fmt.Sprintf("%d trailing bytes after a complete message", len(d.b)-d.off))
	}
	if d.err != nil {
		return nil, d.err
	}
	return m, nil
}

// decoder reads one message. The first failure is kept in err; later reads
// return zero values, so callers check err once at the end (and before any
// allocation sized from the input).
type decoder struct {
	b   []byte
	off int
	typ byte
	err error
}

func (d *decoder) fail(reason string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s message (%d bytes): %s", ErrMalformed, messageName(d.typ), len(d.b), reason)
	}
}

// need reports whether n more bytes are available, failing otherwise.
// It is kept small enough to inline; the failure path is in short.
func (d *decoder) need(n int, what string) bool {
	if d.err == nil && uint(n) <= uint(len(d.b)-d.off) {
		return true
	}
	d.short(n, what)
	return false
}

func (d *decoder) short(n int, what string) {
	if d.err == nil {
		d.fail(fmt.Sprintf("truncated at byte %d reading %s (%d bytes needed, %d left)", d.off, what, n, len(d.b)-d.off))
	}
}

func (d *decoder) u8(what string) uint8 {
	if !d.need(1, what) {
		return 0
	}
	v := d.b[d.off]
	d.off++
	return v
}

func (d *decoder) u16(what string) uint16 {
	if !d.need(2, what) {
		return 0
	}
	v := binary.BigEndian.Uint16(d.b[d.off:])
	d.off += 2
	return v
}

func (d *decoder) u32(what string) uint32 {
	if !d.need(4, what) {
		return 0
	}
	v := binary.BigEndian.Uint32(d.b[d.off:])
	d.off += 4
	return v
}

func (d *decoder) u64(what string) uint64 {
	if !d.need(8, what) {
		return 0
	}
	v := binary.BigEndian.Uint64(d.b[d.off:])
	d.off += 8
	return v
}

func (d *decoder) lsn(what string) pglogrepl.LSN { return pglogrepl.LSN(d.u64(what)) }

func (d *decoder) time(what string) time.Time {
	us := int64(d.u64(what))
	if d.err != nil {
		return time.Time{}
	}
	return pgTime(us)
}

// str reads a NUL-terminated string.
func (d *decoder) str(what string) string {
	if d.err != nil {
		return ""
	}
	i := bytes.IndexByte(d.b[d.off:], 0)
	if i < 0 {
		d.fail(fmt.Sprintf("%s at byte %d has no NUL terminator", what, d.off))
		return ""
	}
	s := string(d.b[d.off : d.off+i])
	d.off += i + 1
	return s
}

// count16 reads a non-negative Int16 count of items needing at least each
// bytes apiece, so that a corrupt count cannot cause a large allocation.
func (d *decoder) count16(what string, each int) int {
	n := int(int16(d.u16(what)))
	if d.err != nil {
		return 0
	}
	if n < 0 {
		d.fail(fmt.Sprintf("negative %s %d", what, n))
		return 0
	}
	if n*each > len(d.b)-d.off {
		d.fail(fmt.Sprintf("%s %d needs at least %d bytes, %d left", what, n, n*each, len(d.b)-d.off))
		return 0
	}
	return n
}

func (d *decoder) begin() *Begin {
	return &Begin{FinalLSN: d.lsn("final LSN"), CommitTime: d.time("commit time"), Xid: d.u32("xid")}
}

func (d *decoder) commit() *Commit {
	return &Commit{
		Flags:      d.u8("flags"),
		CommitLSN:  d.lsn("commit LSN"),
		EndLSN:     d.lsn("end LSN"),
		CommitTime: d.time("commit time"),
	}
}

func (d *decoder) origin() *Origin {
	return &Origin{CommitLSN: d.lsn("commit LSN"), Name: d.str("origin name")}
}

func (d *decoder) relation() *Relation {
	m := &Relation{ID: d.u32("relation OID"), Namespace: d.str("namespace"), Name: d.str("relation name")}
	m.ReplicaIdentity = d.u8("replica identity")
	switch m.ReplicaIdentity {
	case 'd', 'n', 'f', 'i':
	default:
		if d.err == nil {
			d.fail(fmt.Sprintf("unknown replica identity %q", m.ReplicaIdentity))
		}
	}
	n := d.count16("column count", minRelationColumn)
	if d.err != nil {
		return nil
	}
	m.Columns = make([]RelationColumn, n)
	for i := range m.Columns {
		c := &m.Columns[i]
		flags := d.u8("column flags")
		if flags&^1 != 0 && d.err == nil {
			d.fail(fmt.Sprintf("column %d has unknown flags 0x%02x", i, flags))
		}
		c.Key = flags&1 != 0
		c.Name = d.str("column name")
		c.TypeOID = d.u32("column type OID")
		c.TypeMod = int32(d.u32("column type modifier"))
		if d.err != nil {
			return nil
		}
	}
	return m
}

func (d *decoder) typeMsg() *Type {
	return &Type{ID: d.u32("type OID"), Namespace: d.str("namespace"), Name: d.str("type name")}
}

// copyInput returns the copy of the message that tuple values are sliced
// from, at the same offsets as the input.
func (d *decoder) copyInput() []byte {
	buf := make([]byte, len(d.b))
	copy(buf, d.b)
	return buf
}

// tuple reads TupleData, slicing values out of buf (a copy of d.b).
func (d *decoder) tuple(buf []byte) Tuple {
	n := d.count16("tuple column count", minTupleColumn)
	if d.err != nil {
		return nil
	}
	t := make(Tuple, n)
	// The hot loop works on locals and checks bounds itself.
	b, off := d.b, d.off
	for i := range t {
		if off >= len(b) {
			d.off = off
			d.short(1, "column kind")
			return nil
		}
		kind := b[off]
		off++
		switch kind {
		case ValueNull, ValueUnchangedToast:
			t[i].Kind = kind
		case ValueText, ValueBinary:
			if len(b)-off < 4 {
				d.off = off
				d.short(4, "column length")
				return nil
			}
			l := int(int32(binary.BigEndian.Uint32(b[off:])))
			off += 4
			if l < 0 || len(b)-off < l {
				d.off = off
				d.short(l, "column value")
				return nil
			}
			t[i] = Value{Kind: kind, Data: buf[off : off+l : off+l]}
			off += l
		default:
			d.off = off - 1
			d.fail(fmt.Sprintf("column %d has unknown kind %q", i, kind))
			return nil
		}
	}
	d.off = off
	return t
}

func (d *decoder) insert() *Insert {
	m := &Insert{RelationID: d.u32("relation OID")}
	if k := d.u8("tuple marker"); k != 'N' && d.err == nil {
		d.fail(fmt.Sprintf("new tuple marker is %q, want 'N'", k))
	}
	if d.err != nil {
		return nil
	}
	m.New = d.tuple(d.copyInput())
	return m
}

func (d *decoder) update() *Update {
	m := &Update{RelationID: d.u32("relation OID")}
	k := d.u8("tuple marker")
	if d.err != nil {
		return nil
	}
	buf := d.copyInput()
	if k == 'K' || k == 'O' {
		m.OldKind = k
		m.Old = d.tuple(buf)
		k = d.u8("new tuple marker")
	}
	if k != 'N' && d.err == nil {
		d.fail(fmt.Sprintf("tuple marker is %q, want 'K', 'O' or 'N'", k))
	}
	m.New = d.tuple(buf)
	return m
}

func (d *decoder) delete() *Delete {
	m := &Delete{RelationID: d.u32("relation OID")}
	m.OldKind = d.u8("tuple marker")
	if m.OldKind != 'K' && m.OldKind != 'O' && d.err == nil {
		d.fail(fmt.Sprintf("old tuple marker is %q, want 'K' or 'O'", m.OldKind))
	}
	if d.err != nil {
		return nil
	}
	m.Old = d.tuple(d.copyInput())
	return m
}

func (d *decoder) truncate() *Truncate {
	n := int(int32(d.u32("relation count")))
	m := &Truncate{Options: d.u8("options")}
	if d.err != nil {
		return nil
	}
	if n < 0 || n > (len(d.b)-d.off)/4 {
		d.fail(fmt.Sprintf("relation count %d does not fit the %d bytes left", n, len(d.b)-d.off))
		return nil
	}
	m.RelationIDs = make([]uint32, n)
	for i := range m.RelationIDs {
		m.RelationIDs[i] = binary.BigEndian.Uint32(d.b[d.off:])
		d.off += 4
	}
	return m
}

func (d *decoder) logicalMessage() *LogicalMessage {
	flags := d.u8("flags")
	if flags&^1 != 0 && d.err == nil {
		d.fail(fmt.Sprintf("unknown flags 0x%02x", flags))
	}
	m := &LogicalMessage{Transactional: flags&1 != 0, LSN: d.lsn("LSN"), Prefix: d.str("prefix")}
	l := int(int32(d.u32("content length")))
	if !d.need(l, "content") {
		return nil
	}
	m.Content = bytes.Clone(d.b[d.off : d.off+l])
	if m.Content == nil {
		m.Content = []byte{}
	}
	d.off += l
	return m
}

func messageName(typ byte) string {
	switch typ {
	case 'B':
		return "Begin"
	case 'C':
		return "Commit"
	case 'O':
		return "Origin"
	case 'R':
		return "Relation"
	case 'Y':
		return "Type"
	case 'I':
		return "Insert"
	case 'U':
		return "Update"
	case 'D':
		return "Delete"
	case 'T':
		return "Truncate"
	case 'M':
		return "logical decoding"
	}
	return fmt.Sprintf("%q", typ)
}
