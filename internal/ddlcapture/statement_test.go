package ddlcapture

import (
	"errors"
	"slices"
	"testing"
)

func texts(sts []Statement) []string {
	var out []string
	for _, s := range sts {
		out = append(out, s.Text)
	}
	return out
}

func TestSplit(t *testing.T) {
	for _, tc := range []struct {
		sql  string
		want []string
	}{
		{"ALTER TABLE t ADD COLUMN a int", []string{"ALTER TABLE t ADD COLUMN a int"}},
		{"ALTER TABLE t ADD COLUMN a int;", []string{"ALTER TABLE t ADD COLUMN a int"}},
		{" ; ;ALTER TABLE t ADD a int; -- done\n", []string{"ALTER TABLE t ADD a int"}},
		{"ALTER TABLE t ADD a int; ALTER TABLE t ADD b int", []string{"ALTER TABLE t ADD a int", "ALTER TABLE t ADD b int"}},
		{"/* a; /* nested; */ b; */ ALTER TABLE t ADD a int", []string{"ALTER TABLE t ADD a int"}},
		{"ALTER TABLE t ADD a text DEFAULT 'x;y''z;'", []string{"ALTER TABLE t ADD a text DEFAULT 'x;y''z;'"}},
		{`ALTER TABLE t ADD a text DEFAULT E'x\';y'`, []string{`ALTER TABLE t ADD a text DEFAULT E'x\';y'`}},
		{`ALTER TABLE "a;b" ADD "c"";" int`, []string{`ALTER TABLE "a;b" ADD "c"";" int`}},
		{"CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN 1; END $$; SELECT 1",
			[]string{"CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN 1; END $$", "SELECT 1"}},
		{"CREATE FUNCTION f() RETURNS int AS $body$ SELECT 1; $x$ $body$", []string{"CREATE FUNCTION f() RETURNS int AS $body$ SELECT 1; $x$ $body$"}},
		{"CREATE RULE r AS ON INSERT TO t DO ALSO (INSERT INTO a VALUES (1); INSERT INTO b VALUES (2))",
			[]string{"CREATE RULE r AS ON INSERT TO t DO ALSO (INSERT INTO a VALUES (1); INSERT INTO b VALUES (2))"}},
		{"CREATE FUNCTION f(a int) RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT CASE WHEN a > 0 THEN 1 ELSE 0 END; SELECT 2; END; DROP TABLE x",
			[]string{"CREATE FUNCTION f(a int) RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT CASE WHEN a > 0 THEN 1 ELSE 0 END; SELECT 2; END", "DROP TABLE x"}},
		{"SELECT $1; SELECT a$b", []string{"SELECT $1", "SELECT a$b"}},
	} {
		got, err := Split(tc.sql, true)
		if err != nil {
			t.Errorf("Split(%q): %v", tc.sql, err)
			continue
		}
		if !slices.Equal(texts(got), tc.want) {
			t.Errorf("Split(%q) = %q, want %q", tc.sql, texts(got), tc.want)
		}
	}
	// With standard_conforming_strings off a backslash escapes a quote.
	if got, err := Split(`ALTER TABLE t ADD a text DEFAULT 'x\';y'`, false); err != nil || len(got) != 1 {
		t.Errorf("escaped quote without standard strings: %q, %v", texts(got), err)
	}
	for _, bad := range []string{"ALTER TABLE t ADD a text DEFAULT 'x", "/* open", `ALTER TABLE "t`, "SELECT $a$ x"} {
		if _, err := Split(bad, true); !errors.Is(err, ErrUnterminated) {
			t.Errorf("Split(%q) = %v, want ErrUnterminated", bad, err)
		}
	}
}

func TestMatchesTag(t *testing.T) {
	for _, tc := range []struct {
		sql, tag string
		want     bool
	}{
		{"ALTER TABLE t ADD a int", "ALTER TABLE", true},
		{"alter table if exists only t add a int", "ALTER TABLE", true},
		{"CREATE OR REPLACE FUNCTION f() RETURNS int AS 'select 1' LANGUAGE sql", "CREATE FUNCTION", true},
		{"CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS i ON t (a)", "CREATE INDEX", true},
		{"CREATE CONSTRAINT TRIGGER x AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()", "CREATE TRIGGER", true},
		{"COMMENT ON TABLE t IS 'x'", "COMMENT", true},
		{"DO $$ BEGIN EXECUTE 'ALTER TABLE t ADD a int'; END $$", "ALTER TABLE", false},
		{"SELECT migrate()", "ALTER TABLE", false},
		{"CALL migrate()", "CREATE INDEX", false},
		{"CREATE TABLE t (a int)", "CREATE INDEX", false},
		{"ALTER TYPE mood RENAME VALUE 'a' TO 'b'", "ALTER TYPE", true},
	} {
		sts, err := Split(tc.sql, true)
		if err != nil || len(sts) != 1 {
			t.Fatalf("Split(%q): %v, %d statements", tc.sql, err, len(sts))
		}
		if got := sts[0].MatchesTag(tc.tag); got != tc.want {
			t.Errorf("%q MatchesTag(%q) = %v, want %v", tc.sql, tc.tag, got, tc.want)
		}
	}
}

func TestWithoutAndCalls(t *testing.T) {
	sts, _ := Split(`DROP INDEX CONCURRENTLY IF EXISTS "concurrently"`, true)
	if got := sts[0].Without("concurrently"); got != `DROP INDEX  IF EXISTS "concurrently"` {
		t.Errorf("Without = %q", got)
	}
	if !sts[0].Has("CONCURRENTLY") {
		t.Error("Has(CONCURRENTLY) = false")
	}
	sts, _ = Split(`ALTER TABLE t ALTER COLUMN c TYPE int USING length(c) + "My Func"(c), ALTER COLUMN d TYPE numeric(10, 2), ADD e int DEFAULT random()::int`, true)
	if got := sts[0].TypeChangeCalls(); !slices.Equal(got, []string{"length", "My Func"}) {
		t.Errorf("TypeChangeCalls = %q", got)
	}
}
