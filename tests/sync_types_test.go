package tests

import (
	"strings"
	"testing"
)

// Every built-in type family must round-trip exactly through the text
// format: the target ends up with the same text output as the source.
const typesSchema = `
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN posint AS int CHECK (VALUE > 0);
CREATE TYPE pair AS (x int, y text);
CREATE TABLE alltypes (
	id serial PRIMARY KEY,
	n numeric, f4 real, f8 double precision, i2 smallint, i8 bigint,
	ts timestamp, tstz timestamptz, d date, tm time, tmtz timetz, iv interval,
	b bytea, j json, jb jsonb, x xml, u uuid, ip inet, cid cidr, mac macaddr,
	arr int[], arr2 text[][], m mood, dom posint, comp pair, rng int4range, tsr tstzrange,
	money_col money, bits bit(4), vbits varbit, pt point, bx box, tsv tsvector, c char(3), vc varchar(5), bool_col boolean
);
CREATE TABLE texts (id int PRIMARY KEY, t text, b bytea);
CREATE TABLE keyed (k text PRIMARY KEY, v int);`

const typesRows = `
INSERT INTO alltypes (n, f4, f8, i2, i8, ts, tstz, d, tm, tmtz, iv, b, j, jb, x, u, ip, cid, mac, arr, arr2, m, dom, comp, rng, tsr, money_col, bits, vbits, pt, bx, tsv, c, vc, bool_col) VALUES
 ('NaN', 'Infinity', '-Infinity', -32768, 9223372036854775807, 'infinity', '-infinity', 'infinity', '24:00', '23:59:59.999999+14', '-178000000 years', '\x00ff', '{"a": [1, 2.50, null]}', '{"b": 1e400}', '<a>x</a>', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '::1/128', '10.0.0.0/8', '08:00:2b:01:02:03', '{1,NULL,3}', '{{a,NULL},{"c d","e\"f"}}', 'happy', 7, '(1,"a b")', '[1,10)', '[2020-01-01 00:00:00+00,infinity)', '$1,234.56', B'1010', B'101', '(1.5,2.5)', '((0,0),(1,1))', 'a fat cat', 'ab', 'héllo', true),
 (1.0, 1.1, 0.1, 0, -1, '2001-02-03 04:05:06.789', '2001-02-03 04:05:06.789+05:30', '0001-01-01 BC', '00:00', '00:00+00', '1 day 02:03:04.5', '', '[]', '[]', NULL, NULL, '192.168.0.1', '::/0', NULL, '{}', '{}', 'sad', 1, '(,)', 'empty', NULL, '-$0.01', B'0000', B'', NULL, NULL, '', '   ', '', false),
 (123456789012345678901234567890.123456789, 3.4028235e38, 2.2250738585072014e-308, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '{{1,2},{3,4}}', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (-0.000000000000000001, -0, 1e-310, 1, 1, '1999-12-31 23:59:59.999999', '2038-01-19 03:14:08+00', '2000-02-29', '12:34:56.123456', '12:00-08', '1 mon -1 day', '\x5c27', '"\u00e9"', '"\\u0000x"'::text::jsonb - 0, NULL, NULL, NULL, NULL, NULL, '[0:1]={5,6}', NULL, 'ok', 2, '(-1,"")', '(,)', 'empty', 0, B'1111', B'1', '(0,-0)', NULL, 'x:1A y:2B', 'a', 'abcde', NULL);
`

func TestSyncTypesRoundTrip(t *testing.T) {
	src, dst := pgtestPair(t)
	prepareStreaming(t, src, dst, "types", typesSchema, "public.alltypes", "public.texts", "public.keyed")
	src.Exec("types", strings.Replace(typesRows, `'"\\u0000x"'::text::jsonb - 0`, `'"x"'`, 1))
	src.Exec("types", `UPDATE alltypes SET f8 = f8 * 1, n = n WHERE id = 2`)
	// Enough rows in one transaction to go by COPY: its text format must
	// escape tabs, newlines, backslashes and \N-looking text.
	src.Exec("types", `INSERT INTO alltypes (n, f4, f8, i2, i8, ts, tstz, d, tm, tmtz, iv, b, j, jb, x, u, ip, cid, mac, arr, arr2, m, dom, comp, rng, tsr, money_col, bits, vbits, pt, bx, tsv, c, vc, bool_col)
		SELECT n, f4, f8, i2, i8, ts, tstz, d, tm, tmtz, iv, b, j, jb, x, u, ip, cid, mac, arr, arr2, m, dom, comp, rng, tsr, money_col, bits, vbits, pt, bx, tsv, c, vc, bool_col
		FROM alltypes, generate_series(1, 40);
		INSERT INTO texts SELECT g, E'tab\there\nnew line\\back \\N \r' || g, '\x00090a5c4e'::bytea FROM generate_series(1, 200) g;
		INSERT INTO texts VALUES (1000, '\N', NULL), (1001, '', '\x');
		INSERT INTO keyed SELECT k || g, g FROM unnest(ARRAY['NULL', 'a,b', '{x}', 'q"uote', E'back\\slash', ' sp ', '']) k, generate_series(1, 3) g;`)
	catchUp(t, src, dst, "types")
	assertSameTables(t, src, dst, "types", "alltypes", "texts", "keyed")
	// Rows that exist on the target, changed many at a time: the set-based
	// UPDATE and DELETE cast every type from text array elements, and a
	// few dozen inserts go by the multi-row INSERT.
	src.Exec("types", `UPDATE alltypes SET i2 = coalesce(i2, 0) + 1;
		UPDATE keyed SET v = v + 100;
		DELETE FROM keyed WHERE v % 2 = 0;
		DELETE FROM texts WHERE id % 2 = 0;
		INSERT INTO alltypes (n, f4, f8, i2, i8, ts, tstz, d, tm, tmtz, iv, b, j, jb, x, u, ip, cid, mac, arr, arr2, m, dom, comp, rng, tsr, money_col, bits, vbits, pt, bx, tsv, c, vc, bool_col)
		SELECT n, f4, f8, i2, i8, ts, tstz, d, tm, tmtz, iv, b, j, jb, x, u, ip, cid, mac, arr, arr2, m, dom, comp, rng, tsr, money_col, bits, vbits, pt, bx, tsv, c, vc, bool_col
		FROM alltypes, generate_series(1, 5) WHERE id <= 4;`)
	catchUp(t, src, dst, "types")
	assertSameTables(t, src, dst, "types", "alltypes", "texts", "keyed")
	if got := dst.QueryString("types", "SELECT n::text FROM alltypes WHERE id = 2"); got != "1.0" {
		t.Errorf("numeric scale lost: got %q, want 1.0", got)
	}
}

// An UPDATE that leaves a TOASTed column alone does not send its value
// (kind 'u'): the target must keep the value, never write NULL or ”.
func TestSyncUnchangedToastKept(t *testing.T) {
	src, dst := pgtestPair(t)
	prepareStreaming(t, src, dst, "toast", `CREATE TABLE docs (id int PRIMARY KEY, body text, n int);
		ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL;`, "public.docs")
	// In one transaction an INSERT and a later UPDATE of the same row, then
	// updates in separate transactions, so both batch shapes are covered.
	src.Exec("toast", `BEGIN;
		INSERT INTO docs SELECT g, repeat(md5(g::text), 1000), 0 FROM generate_series(1, 20) g;
		UPDATE docs SET n = 1 WHERE id <= 10;
		COMMIT;
		UPDATE docs SET n = 2 WHERE id > 10;
		UPDATE docs SET n = 3, body = 'small' WHERE id = 20;`)
	catchUp(t, src, dst, "toast")
	assertSameTables(t, src, dst, "toast", "docs")
	if got := dst.QueryString("toast", "SELECT count(*) FROM docs WHERE body IS NULL OR body = ''"); got != "0" {
		t.Fatalf("%s rows lost their TOASTed body", got)
	}
}

func TestSyncSchemaChanges(t *testing.T) {
	src, dst := pgtestPair(t)
	needPgDump(t, src)
	prepareStreaming(t, src, dst, "ddl", `CREATE TABLE t (id int PRIMARY KEY, a text);`, "public.t")
	src.Exec("ddl", `INSERT INTO t VALUES (1, 'x');
		ALTER TABLE t ADD COLUMN added numeric(10,2), ADD COLUMN tags text[];
		INSERT INTO t VALUES (2, 'y', 12.50, '{a,b}');`)
	catchUp(t, src, dst, "ddl")
	assertSameTables(t, src, dst, "ddl", "t")

	// A dropped column is dropped on the target too, unless told to stop.
	src.Exec("ddl", `ALTER TABLE t DROP COLUMN a; INSERT INTO t VALUES (3, 1.5, NULL);`)
	res := runCLI(t, nil, syncArgs(src, dst, "ddl", "--catch-up", "--schema-changes", "stop")...)
	if res.Code != exitNeedsAction {
		t.Fatalf("exit %d, want 4; stderr: %s", res.Code, res.Stderr)
	}
	for _, want := range []string{"public.t", "a exists on the target", "DROP COLUMN"} {
		if !strings.Contains(res.Stderr, want) {
			t.Errorf("error lacks %q: %s", want, res.Stderr)
		}
	}
	if got := dst.QueryString("ddl", "SELECT count(*) FROM t"); got != "2" {
		t.Errorf("target rows = %s, want 2: nothing after the schema change may be applied", got)
	}
	res = catchUp(t, src, dst, "ddl")
	if !strings.Contains(res.Stderr, "dropped columns the source dropped") {
		t.Errorf("the drop was not reported: %s", res.Stderr)
	}
	assertSameTables(t, src, dst, "ddl", "t")

	// A rename is followed: the source's attribute numbers, recorded on
	// the target, tell it from a drop and an add.
	src.Exec("ddl", `ALTER TABLE t RENAME COLUMN tags TO labels; INSERT INTO t VALUES (5, 2.5, '{c}');`)
	res = catchUp(t, src, dst, "ddl")
	if !strings.Contains(res.Stderr, "column renamed on the source") {
		t.Errorf("the rename was not reported: %s", res.Stderr)
	}
	assertSameTables(t, src, dst, "ddl", "t")

	// Without that record (a migration made by an older version), names
	// cannot tell a rename from a drop and an add: with
	// --schema-changes=stop, sync stops naming both columns; otherwise the
	// table is copied again.
	dst.Exec("ddl", `DELETE FROM seren_replicator.source_columns`)
	src.Exec("ddl", `ALTER TABLE t RENAME COLUMN labels TO tags; INSERT INTO t VALUES (6, 3.5, '{d}');`)
	res = runCLI(t, nil, syncArgs(src, dst, "ddl", "--catch-up", "--schema-changes", "stop")...)
	if res.Code != exitNeedsAction || !strings.Contains(res.Stderr, "labels exists on the target") || !strings.Contains(res.Stderr, "new column tags") {
		t.Fatalf("rename: exit %d, want 4 naming both columns\n%s", res.Code, res.Stderr)
	}
	if got := dst.QueryString("ddl", "SELECT count(*) FROM information_schema.columns WHERE table_name = 't' AND column_name = 'tags'"); got != "0" {
		t.Errorf("the new column was added before the stop: the advised RENAME would then fail")
	}
	res = catchUp(t, src, dst, "ddl")
	if !strings.Contains(res.Stderr, "copying the table again") {
		t.Errorf("the table was not copied again:\n%s", res.Stderr)
	}
	assertSameTables(t, src, dst, "ddl", "t")

	// A type change that keeps the values (a typmod) is made by DDL; one
	// that rewrote them copies the table again.
	src.Exec("ddl", `ALTER TABLE t ALTER COLUMN added TYPE numeric(12,2); INSERT INTO t VALUES (8, 8.5, NULL);`)
	res = catchUp(t, src, dst, "ddl")
	if !strings.Contains(res.Stderr, "column type changed on the source") {
		t.Errorf("the type change was not reported: %s", res.Stderr)
	}
	assertSameTables(t, src, dst, "ddl", "t")
	src.Exec("ddl", `ALTER TABLE t ALTER COLUMN added TYPE text; INSERT INTO t VALUES (4, 'four', NULL);`)
	res = catchUp(t, src, dst, "ddl")
	if !strings.Contains(res.Stderr, "copying the table again") {
		t.Errorf("the table was not copied again: %s", res.Stderr)
	}
	assertSameTables(t, src, dst, "ddl", "t")
	// One the target's values cannot take by a cast stops with
	// --schema-changes=stop, with the SQL (TestSyncRecopiesWhatDDLCannotFollow
	// has the copy again otherwise).
	src.Exec("ddl", `ALTER TABLE t ALTER COLUMN added TYPE int USING length(added); INSERT INTO t VALUES (7, 7, NULL);`)
	res = runCLI(t, nil, syncArgs(src, dst, "ddl", "--catch-up", "--schema-changes", "stop")...)
	if res.Code != exitNeedsAction || !strings.Contains(res.Stderr, "ALTER COLUMN") {
		t.Fatalf("type change: exit %d, stderr: %s", res.Code, res.Stderr)
	}
	dst.Exec("ddl", `ALTER TABLE t ALTER COLUMN added TYPE int USING length(added)`)
	catchUp(t, src, dst, "ddl")
	assertSameTables(t, src, dst, "ddl", "t")
}
