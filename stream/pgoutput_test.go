package stream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/serenorg/postgres-seren-replicator/tests/pgtest"
)

type decodeCase struct {
	name string
	in   []byte
	want Message
}

// decodeCases are valid messages built by hand from the protocol
// documentation, with what Decode must make of them.
func decodeCases() []decodeCase {
	day1 := time.Date(2000, 1, 2, 0, 0, 0, 1000, time.UTC) // 86400000001 µs after the PostgreSQL epoch
	before := time.Date(1999, 12, 31, 23, 59, 59, 999999000, time.UTC)
	return []decodeCase{
		{"begin", msg('B').u64(0x1_0000_00A0).i64(86_400_000_001).u32(742).bytes(),
			&Begin{FinalLSN: 0x1_0000_00A0, CommitTime: day1, Xid: 742}},
		{"commit", msg('C').u8(0).u64(0x16B3748).u64(0x16B3778).i64(-1).bytes(),
			&Commit{CommitLSN: 0x16B3748, EndLSN: 0x16B3778, CommitTime: before}},
		{"origin", msg('O').u64(0xABCDEF).str("node_a").bytes(),
			&Origin{CommitLSN: 0xABCDEF, Name: "node_a"}},
		{"relation default identity",
			msg('R').u32(16384).str("public").str("accounts").u8('d').u16(3).
				u8(1).str("id").u32(23).u32(0xFFFFFFFF).
				u8(0).str("name").u32(1043).u32(36).
				u8(0).str("amount").u32(1700).u32(655366).bytes(),
			&Relation{ID: 16384, Namespace: "public", Name: "accounts", ReplicaIdentity: 'd', Columns: []RelationColumn{
				{Key: true, Name: "id", TypeOID: 23, TypeMod: -1},
				{Name: "name", TypeOID: 1043, TypeMod: 36},
				{Name: "amount", TypeOID: 1700, TypeMod: 655366},
			}}},
		{"relation replica identity full",
			msg('R').u32(16390).str("sales").str("événements").u8('f').u16(2).
				u8(1).str("a").u32(25).u32(0xFFFFFFFF).
				u8(1).str("b").u32(17).u32(0xFFFFFFFF).bytes(),
			&Relation{ID: 16390, Namespace: "sales", Name: "événements", ReplicaIdentity: 'f', Columns: []RelationColumn{
				{Key: true, Name: "a", TypeOID: 25, TypeMod: -1},
				{Key: true, Name: "b", TypeOID: 17, TypeMod: -1},
			}}},
		{"relation no columns, catalog namespace", msg('R').u32(1).str("").str("t").u8('n').u16(0).bytes(),
			&Relation{ID: 1, Name: "t", ReplicaIdentity: 'n', Columns: []RelationColumn{}}},
		{"type", msg('Y').u32(16401).str("public").str("mood").bytes(),
			&Type{ID: 16401, Namespace: "public", Name: "mood"}},
		{"insert every value kind",
			msg('I').u32(16384).u8('N').u16(5).text("42").bin([]byte{0, 0, 0, 7}).u8('n').u8('u').text("").bytes(),
			&Insert{RelationID: 16384, New: Tuple{
				{Kind: ValueText, Data: []byte("42")},
				{Kind: ValueBinary, Data: []byte{0, 0, 0, 7}},
				{Kind: ValueNull},
				{Kind: ValueUnchangedToast},
				{Kind: ValueText, Data: []byte{}},
			}}},
		{"insert no columns", msg('I').u32(7).u8('N').u16(0).bytes(),
			&Insert{RelationID: 7, New: Tuple{}}},
		{"update without old tuple",
			msg('U').u32(16384).u8('N').u16(3).text("1").u8('u').text("x").bytes(),
			&Update{RelationID: 16384, New: Tuple{
				{Kind: ValueText, Data: []byte("1")},
				{Kind: ValueUnchangedToast},
				{Kind: ValueText, Data: []byte("x")},
			}}},
		{"update with old key",
			msg('U').u32(16384).u8('K').u16(3).text("1").u8('n').u8('n').
				u8('N').u16(3).text("2").u8('u').text("x").bytes(),
			&Update{RelationID: 16384, OldKind: 'K',
				Old: Tuple{{Kind: ValueText, Data: []byte("1")}, {Kind: ValueNull}, {Kind: ValueNull}},
				New: Tuple{{Kind: ValueText, Data: []byte("2")}, {Kind: ValueUnchangedToast}, {Kind: ValueText, Data: []byte("x")}},
			}},
		{"update with old row",
			msg('U').u32(16390).u8('O').u16(2).text("a").u8('n').
				u8('N').u16(2).text("b").bin([]byte{0xFF}).bytes(),
			&Update{RelationID: 16390, OldKind: 'O',
				Old: Tuple{{Kind: ValueText, Data: []byte("a")}, {Kind: ValueNull}},
				New: Tuple{{Kind: ValueText, Data: []byte("b")}, {Kind: ValueBinary, Data: []byte{0xFF}}},
			}},
		{"delete with old key", msg('D').u32(16384).u8('K').u16(3).text("9").u8('n').u8('n').bytes(),
			&Delete{RelationID: 16384, OldKind: 'K', Old: Tuple{{Kind: ValueText, Data: []byte("9")}, {Kind: ValueNull}, {Kind: ValueNull}}}},
		{"delete with old row", msg('D').u32(16390).u8('O').u16(2).text("a").text("b").bytes(),
			&Delete{RelationID: 16390, OldKind: 'O', Old: Tuple{{Kind: ValueText, Data: []byte("a")}, {Kind: ValueText, Data: []byte("b")}}}},
		{"truncate plain", msg('T').u32(1).u8(0).u32(16384).bytes(),
			&Truncate{RelationIDs: []uint32{16384}}},
		{"truncate cascade", msg('T').u32(2).u8(1).u32(16384).u32(16390).bytes(),
			&Truncate{Options: TruncateCascade, RelationIDs: []uint32{16384, 16390}}},
		{"truncate restart identity", msg('T').u32(1).u8(2).u32(5).bytes(),
			&Truncate{Options: TruncateRestartIdentity, RelationIDs: []uint32{5}}},
		{"truncate cascade restart identity", msg('T').u32(3).u8(3).u32(1).u32(2).u32(3).bytes(),
			&Truncate{Options: 3, RelationIDs: []uint32{1, 2, 3}}},
		{"message transactional", msg('M').u8(1).u64(0x3000).str("seren").u32(5).raw([]byte("hello")).bytes(),
			&LogicalMessage{Transactional: true, LSN: 0x3000, Prefix: "seren", Content: []byte("hello")}},
		{"message not transactional, empty", msg('M').u8(0).u64(0x3100).str("hb").u32(0).bytes(),
			&LogicalMessage{LSN: 0x3100, Prefix: "hb", Content: []byte{}}},
	}
}

func TestDecode(t *testing.T) {
	for _, c := range decodeCases() {
		t.Run(c.name, func(t *testing.T) {
			in := bytes.Clone(c.in)
			got, err := Decode(in)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Fatalf("got %#v\nwant %#v", got, c.want)
			}
			// The network buffer is reused: the result must not alias it.
			for i := range in {
				in[i] = 0xAA
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Fatalf("result changed with its input: got %#v", got)
			}
			if enc := encodeMessage(got); !bytes.Equal(enc, c.in) {
				t.Fatalf("re-encoded\n got %x\nwant %x", enc, c.in)
			}
		})
	}
}

func TestDecodeValuesDoNotOverlap(t *testing.T) {
	m, err := Decode(msg('I').u32(1).u8('N').u16(2).text("ab").text("cd").bytes())
	if err != nil {
		t.Fatal(err)
	}
	tup := m.(*Insert).New
	_ = append(tup[0].Data, 'X') // must not overwrite the next value
	if got, want := string(tup[1].Data), "cd"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	if got, want := tup.Size(), 4; got != want {
		t.Fatalf("Size: got %d, want %d", got, want)
	}
}

func TestTruncateOptions(t *testing.T) {
	for _, c := range []struct {
		opts             uint8
		cascade, restart bool
	}{{0, false, false}, {1, true, false}, {2, false, true}, {3, true, true}} {
		tr := &Truncate{Options: c.opts}
		if tr.Cascade() != c.cascade || tr.RestartIdentity() != c.restart {
			t.Errorf("options %d: got cascade %v restart %v, want %v %v", c.opts, tr.Cascade(), tr.RestartIdentity(), c.cascade, c.restart)
		}
	}
}

// TestDecodeTruncated cuts every valid message at every byte offset.
func TestDecodeTruncated(t *testing.T) {
	for _, c := range decodeCases() {
		for n := 0; n < len(c.in); n++ {
			m, err := Decode(bytes.Clone(c.in[:n]))
			if err == nil || m != nil || !errors.Is(err, ErrMalformed) {
				t.Errorf("%s cut to %d of %d bytes: got %T, %v; want an ErrMalformed error", c.name, n, len(c.in), m, err)
			}
		}
		if _, err := Decode(append(bytes.Clone(c.in), 0)); err == nil || !strings.Contains(err.Error(), "trailing") {
			t.Errorf("%s with a trailing byte: got %v, want a trailing bytes error", c.name, err)
		}
	}
}

type decodeErrorCase struct {
	name string
	in   []byte
	want string // substring of the error
}

func decodeErrorCases() []decodeErrorCase {
	return []decodeErrorCase{
		{"empty", nil, "empty message"},
		{"unknown type", []byte("X123"), "unknown message type 'X' (0x58)"},
		{"stream start", msg('S').u32(1).u8(1).bytes(), "message type 'S' belongs to a pgoutput protocol version above 1"},
		{"stream abort", msg('A').u32(1).u32(2).bytes(), "message type 'A'"},
		{"string without terminator", msg('O').u64(1).raw([]byte("node")).bytes(), "origin name at byte 9 has no NUL terminator"},
		{"unknown tuple kind", msg('I').u32(1).u8('N').u16(1).u8('x').bytes(), "column 0 has unknown kind 'x'"},
		{"column count beyond input", msg('I').u32(1).u8('N').u16(100).u8('n').bytes(), "tuple column count 100 needs at least 100 bytes, 1 left"},
		{"negative column count", msg('I').u32(1).u8('N').u16(0xFFFF).bytes(), "negative tuple column count -1"},
		{"negative value length", msg('I').u32(1).u8('N').u16(1).u8('t').u32(0xFFFFFFFF).bytes(), "-1 bytes needed"},
		{"huge value length", msg('I').u32(1).u8('N').u16(1).u8('t').u32(0x7FFFFFFF).raw([]byte("ab")).bytes(), "2147483647 bytes needed, 2 left"},
		{"insert without N", msg('I').u32(1).u8('K').u16(0).bytes(), "new tuple marker is 'K', want 'N'"},
		{"update bad marker", msg('U').u32(1).u8('X').u16(0).bytes(), "tuple marker is 'X', want 'K', 'O' or 'N'"},
		{"update old without new", msg('U').u32(1).u8('K').u16(1).u8('n').bytes(), "truncated at byte 9 reading new tuple marker"},
		{"update two old tuples", msg('U').u32(1).u8('K').u16(0).u8('O').u16(0).bytes(), "tuple marker is 'O'"},
		{"delete with new tuple", msg('D').u32(1).u8('N').u16(0).bytes(), "old tuple marker is 'N', want 'K' or 'O'"},
		{"relation column count beyond input", msg('R').u32(1).str("s").str("t").u8('d').u16(2).u8(0).str("a").u32(23).u32(0).bytes(), "column count 2 needs at least 20 bytes, 11 left"},
		{"relation unknown identity", msg('R').u32(1).str("s").str("t").u8('x').u16(0).bytes(), "unknown replica identity 'x'"},
		{"relation unknown column flags", msg('R').u32(1).str("s").str("t").u8('d').u16(1).u8(2).str("a").u32(23).u32(0).bytes(), "column 0 has unknown flags 0x02"},
		{"truncate negative count", msg('T').u32(0x80000000).u8(0).bytes(), "relation count -2147483648"},
		{"truncate count beyond input", msg('T').u32(3).u8(0).u32(1).u32(2).bytes(), "relation count 3 does not fit the 8 bytes left"},
		{"truncate partial id", msg('T').u32(1).u8(0).u32(1).u8(9).bytes(), "1 trailing bytes"},
		{"message unknown flags", msg('M').u8(2).u64(1).str("p").u32(0).bytes(), "unknown flags 0x02"},
		{"message negative length", msg('M').u8(0).u64(1).str("p").u32(0xFFFFFFFE).bytes(), "-2 bytes needed"},
		{"trailing garbage", msg('B').u64(1).u64(2).u32(3).raw([]byte("junk")).bytes(), "Begin message (25 bytes): 4 trailing bytes"},
	}
}

func TestDecodeErrors(t *testing.T) {
	for _, c := range decodeErrorCases() {
		t.Run(c.name, func(t *testing.T) {
			m, err := Decode(c.in)
			if err == nil {
				t.Fatalf("got %#v, want an error containing %q", m, c.want)
			}
			if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got error %q, want ErrMalformed containing %q", err, c.want)
			}
		})
	}
}

func BenchmarkDecodeInsert(b *testing.B) {
	w := msg('I').u32(16384).u8('N').u16(10)
	for i := range 10 {
		w.text(fmt.Sprintf("value number %d of a ten column row", i))
	}
	data := w.bytes()
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(data); err != nil {
			b.Fatal(err)
		}
	}
}

// TestDecodeRealServer decodes what a PostgreSQL server's pgoutput really
// sends for every message type and tuple kind.
func TestDecodeRealServer(t *testing.T) {
	c := pgtest.Start(t, pgtest.Options{})
	c.Exec("postgres", `
CREATE TYPE mood AS ENUM ('sad', 'happy');
CREATE TABLE full_t (id int, name text, amount numeric(10,2), ok boolean, at timestamptz, raw bytea, m mood);
ALTER TABLE full_t REPLICA IDENTITY FULL;
CREATE TABLE keyed (id int PRIMARY KEY, big text, n int);
ALTER TABLE keyed ALTER COLUMN big SET STORAGE EXTERNAL;
CREATE PUBLICATION p FOR TABLE full_t, keyed;
SELECT pg_replication_origin_create('node_a');`)
	// A slot cannot be created in a transaction that has written.
	c.Exec("postgres", `SELECT pg_create_logical_replication_slot('s', 'pgoutput')`)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn := c.Connect("postgres")
	for _, sql := range []string{
		`INSERT INTO full_t VALUES (1, 'a', 1.5, true, '2024-01-02 03:04:05+00', '\x0102', 'happy'), (2, NULL, NULL, NULL, NULL, NULL, NULL)`,
		`UPDATE full_t SET name = 'b' WHERE id = 1`,
		`DELETE FROM full_t WHERE id = 2`,
		`INSERT INTO keyed VALUES (1, repeat('x', 10000), 1)`,
		`UPDATE keyed SET n = 2 WHERE id = 1`,
		`UPDATE keyed SET id = 3 WHERE id = 1`,
		`DELETE FROM keyed WHERE id = 3`,
		`TRUNCATE full_t, keyed RESTART IDENTITY CASCADE`,
		`SELECT pg_logical_emit_message(false, 'seren', 'outside')`,
		`BEGIN; SELECT pg_logical_emit_message(true, 'seren', 'inside'); INSERT INTO keyed VALUES (4, 'small', NULL); COMMIT`,
		`SELECT pg_replication_origin_session_setup('node_a')`,
		`BEGIN; SELECT pg_replication_origin_xact_setup('0/ABCDEF', now()); INSERT INTO keyed VALUES (5, NULL, 5); COMMIT`,
		`SELECT pg_replication_origin_session_reset()`,
		`SET TimeZone = 'UTC'`,
	} {
		if _, err := conn.PgConn().Exec(ctx, sql).ReadAll(); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	rows, err := conn.Query(ctx, `SELECT data FROM pg_logical_slot_peek_binary_changes('s', NULL, NULL,
		'proto_version', '1', 'publication_names', 'p', 'messages', 'true')`)
	if err != nil {
		t.Fatal(err)
	}
	var msgs []Message
	for rows.Next() {
		var data []byte
		if err := rows.Scan(&data); err != nil {
			t.Fatal(err)
		}
		m, err := Decode(data)
		if err != nil {
			t.Fatalf("Decode(%x): %v", data, err)
		}
		if enc := encodeMessage(m); !bytes.Equal(enc, data) {
			t.Fatalf("re-encoded %T differs:\n got %x\nwant %x", m, enc, data)
		}
		msgs = append(msgs, m)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}

	var got []string
	s := summarizer{rels: map[uint32]string{}, types: map[uint32]string{16: "bool", 17: "bytea", 23: "int4", 25: "text", 1184: "timestamptz", 1700: "numeric"}}
	for _, m := range msgs {
		got = append(got, s.summary(m))
	}
	fullRel := "relation public.full_t f *id:int4 *name:text *amount:numeric(655366) *ok:bool *at:timestamptz *raw:bytea *m:mood"
	keyedRel := "relation public.keyed d *id:int4 big:text n:int4"
	row1 := "(1 a 1.50 t 2024-01-02_03:04:05+00 \\x0102 happy)"
	want := []string{
		"begin", "type public.mood", fullRel, "insert full_t N" + row1, "insert full_t N(2 NULL NULL NULL NULL NULL NULL)", "commit",
		"begin", "update full_t O" + row1 + " N(1 b 1.50 t 2024-01-02_03:04:05+00 \\x0102 happy)", "commit",
		"begin", "delete full_t O(2 NULL NULL NULL NULL NULL NULL)", "commit",
		"begin", keyedRel, "insert keyed N(1 x*10000 1)", "commit",
		"begin", "update keyed N(1 TOAST 2)", "commit",
		"begin", "update keyed K(1 NULL NULL) N(3 TOAST 2)", "commit",
		"begin", "delete keyed K(3 NULL NULL)", "commit",
		// TRUNCATE invalidates the relation cache: the server describes
		// both tables (and the enum) again.
		"begin", "type public.mood", fullRel, keyedRel, "truncate cascade=true restart=true full_t,keyed", "commit",
		"message transactional=false seren outside",
		"begin", "message transactional=true seren inside", keyedRel, "insert keyed N(4 small NULL)", "commit",
		"begin", "origin node_a 0/ABCDEF", "insert keyed N(5 NULL 5)", "commit",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("decoded stream:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// Transaction framing: Begin's final LSN is its Commit's commit LSN, the
	// end LSN lies after it, and times are recent.
	var begin *Begin
	var lastEnd pglogrepl.LSN
	for _, m := range msgs {
		switch m := m.(type) {
		case *Begin:
			begin = m
			if m.Xid == 0 || time.Since(m.CommitTime).Abs() > 10*time.Minute {
				t.Errorf("implausible %+v", m)
			}
		case *Commit:
			if begin == nil || m.CommitLSN != begin.FinalLSN || m.EndLSN <= m.CommitLSN || m.EndLSN <= lastEnd || !m.CommitTime.Equal(begin.CommitTime) {
				t.Errorf("commit %+v does not match begin %+v (previous end %s)", m, begin, lastEnd)
			}
			lastEnd, begin = m.EndLSN, nil
		case *LogicalMessage:
			if m.LSN == 0 {
				t.Errorf("message without LSN: %+v", m)
			}
		}
	}
}

// summarizer renders decoded messages as one short line each.
type summarizer struct {
	rels  map[uint32]string
	types map[uint32]string
}

func (s summarizer) summary(m Message) string {
	switch m := m.(type) {
	case *Begin:
		return "begin"
	case *Commit:
		return "commit"
	case *Origin:
		return fmt.Sprintf("origin %s %s", m.Name, m.CommitLSN)
	case *Type:
		s.types[m.ID] = m.Name
		return fmt.Sprintf("type %s.%s", m.Namespace, m.Name)
	case *Relation:
		s.rels[m.ID] = m.Name
		out := fmt.Sprintf("relation %s.%s %c", m.Namespace, m.Name, m.ReplicaIdentity)
		for _, col := range m.Columns {
			out += " "
			if col.Key {
				out += "*"
			}
			out += col.Name + ":" + s.types[col.TypeOID]
			if col.TypeMod != -1 {
				out += fmt.Sprintf("(%d)", col.TypeMod)
			}
		}
		return out
	case *Insert:
		return fmt.Sprintf("insert %s N%s", s.rels[m.RelationID], tupleSummary(m.New))
	case *Update:
		out := "update " + s.rels[m.RelationID]
		if m.OldKind != 0 {
			out += fmt.Sprintf(" %c%s", m.OldKind, tupleSummary(m.Old))
		}
		return out + " N" + tupleSummary(m.New)
	case *Delete:
		return fmt.Sprintf("delete %s %c%s", s.rels[m.RelationID], m.OldKind, tupleSummary(m.Old))
	case *Truncate:
		var names []string
		for _, id := range m.RelationIDs {
			names = append(names, s.rels[id])
		}
		return fmt.Sprintf("truncate cascade=%v restart=%v %s", m.Cascade(), m.RestartIdentity(), strings.Join(names, ","))
	case *LogicalMessage:
		return fmt.Sprintf("message transactional=%v %s %s", m.Transactional, m.Prefix, m.Content)
	}
	return fmt.Sprintf("%T", m)
}

func tupleSummary(t Tuple) string {
	parts := make([]string, len(t))
	for i, v := range t {
		switch {
		case v.Kind == ValueNull:
			parts[i] = "NULL"
		case v.Kind == ValueUnchangedToast:
			parts[i] = "TOAST"
		case len(v.Data) > 100 && bytes.Count(v.Data, v.Data[:1]) == len(v.Data):
			parts[i] = fmt.Sprintf("%c*%d", v.Data[0], len(v.Data))
		default:
			parts[i] = strings.ReplaceAll(string(v.Data), " ", "_")
		}
	}
	return "(" + strings.Join(parts, " ") + ")"
}
