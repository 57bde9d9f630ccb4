package tests

import (
	"strings"
	"testing"
)

const basicSchema = `
CREATE TABLE public.items (id bigint PRIMARY KEY, name text, qty int, note text);
CREATE TABLE public."Mixed Case ""Quoted""" ("Key" int PRIMARY KEY, "välue" text);
CREATE TABLE public.nokey (a int, b text);
ALTER TABLE public.nokey REPLICA IDENTITY FULL;
CREATE TABLE public.byindex (a int NOT NULL, b text);
CREATE UNIQUE INDEX byindex_a ON public.byindex (a);
ALTER TABLE public.byindex REPLICA IDENTITY USING INDEX byindex_a;
`

var basicTables = []string{"public.items", `public."Mixed Case ""Quoted"""`, "public.nokey", "public.byindex"}

func TestSyncCatchUpAppliesChanges(t *testing.T) {
	src, dst := pgtestPair(t)
	prepareStreaming(t, src, dst, "app", basicSchema, "public.items", `public.Mixed Case "Quoted"`, "public.nokey", "public.byindex")
	src.Exec("app", `
INSERT INTO items SELECT g, 'item ' || g, g * 10, NULL FROM generate_series(1, 500) g;
UPDATE items SET qty = qty + 1 WHERE id % 3 = 0;
UPDATE items SET id = id + 10000 WHERE id = 7;            -- key change
DELETE FROM items WHERE id % 5 = 0;
INSERT INTO "Mixed Case ""Quoted""" VALUES (1, 'ünïcode'), (2, 'two'), (3, NULL);
UPDATE "Mixed Case ""Quoted""" SET "välue" = 'changed' WHERE "Key" = 2;
INSERT INTO nokey VALUES (1, 'dup'), (1, 'dup'), (1, 'dup'), (2, NULL);
UPDATE nokey SET b = 'one of three' WHERE ctid = (SELECT ctid FROM nokey WHERE a = 1 LIMIT 1);
DELETE FROM nokey WHERE ctid = (SELECT ctid FROM nokey WHERE a = 1 AND b = 'dup' LIMIT 1);
UPDATE nokey SET b = 'was null' WHERE a = 2;
INSERT INTO byindex SELECT g, 'b' || g FROM generate_series(1, 20) g;
UPDATE byindex SET a = a + 100 WHERE a <= 5;
DELETE FROM byindex WHERE a = 10;
`)
	res := catchUp(t, src, dst, "app")
	if !strings.Contains(res.Stdout, "caught up") {
		t.Errorf("catch-up output lacks progress line: %q", res.Stdout)
	}
	assertSameTables(t, src, dst, "app", basicTables...)
	if got := dst.QueryString("app", "SELECT count(*) FROM nokey WHERE a = 1"); got != "2" {
		t.Errorf("nokey duplicates on target = %s, want 2 (exactly one row deleted)", got)
	}

	// A second run resumes from the checkpoint: nothing is applied twice.
	src.Exec("app", `INSERT INTO items VALUES (100000, 'late', 1, NULL); TRUNCATE nokey;`)
	catchUp(t, src, dst, "app")
	assertSameTables(t, src, dst, "app", basicTables...)
}
