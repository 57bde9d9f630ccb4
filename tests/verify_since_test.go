package tests

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/serenorg/postgres-seren-replicator/internal/selection"
	"github.com/serenorg/postgres-seren-replicator/tests/pgtest"
	"github.com/serenorg/postgres-seren-replicator/verify"
)

// sinceTables each carry one case of TestVerifySinceMark: what is done to
// them, on which side and when, and what Since must say.
var sinceTables = []struct {
	name, ddl  string
	beforeMark []string // {source SQL, target SQL} run before the mark
	afterPre   []string // {source SQL, target SQL} run after the comparison before the fence
	want       string   // match, or the kind of differing row, or "unchanged" for the sums
}{
	{"same", "id int PRIMARY KEY, v text", nil,
		[]string{"UPDATE same SET v = 'x' WHERE id < 50; DELETE FROM same WHERE id > 990; INSERT INTO same VALUES (2000, 'n')",
			"UPDATE same SET v = 'x' WHERE id < 50; DELETE FROM same WHERE id > 990; INSERT INTO same VALUES (2000, 'n')"}, "match"},
	{"target_update", "id int PRIMARY KEY, v text", nil, []string{"", "UPDATE target_update SET v = 'wrong' WHERE id = 7"}, verify.Changed},
	{"source_insert", "id int PRIMARY KEY, v text", nil, []string{"INSERT INTO source_insert VALUES (5000, 'lost')", ""}, verify.MissingOnTarget},
	{"source_update", "id int PRIMARY KEY, v text", nil, []string{"UPDATE source_update SET v = 'lost' WHERE id = 3", ""}, verify.Changed},
	{"target_insert", "id int PRIMARY KEY, v text", nil, []string{"", "INSERT INTO target_insert VALUES (5000, 'extra')"}, verify.ExtraOnTarget},
	// One row deleted wrongly on the target, another whose delete never
	// reached it: the counts agree, no row changed since the mark.
	{"swap", "id int PRIMARY KEY, v text", nil, []string{"DELETE FROM swap WHERE id = 2", "DELETE FROM swap WHERE id = 1"}, "unchanged"},
	// A difference the comparison before named, on rows that did not
	// change since the mark: still there.
	{"named", "id int PRIMARY KEY, v text", []string{"", "UPDATE named SET v = 'old wrong' WHERE id = 11"}, nil, verify.Changed},
	// Named before, then mended on the target: gone.
	{"mended", "id int PRIMARY KEY, v text", []string{"", "UPDATE mended SET v = 'old wrong' WHERE id = 11"},
		[]string{"", "UPDATE mended SET v = 'v' || id WHERE id = 11"}, "match"},
	{"pair", "a int, b text, v int, PRIMARY KEY (a, b)", nil,
		[]string{"UPDATE pair SET v = -1 WHERE a = 4", "UPDATE pair SET v = -1 WHERE a = 4; UPDATE pair SET v = 9 WHERE a = 5"}, verify.Changed},
	// A column added with a default on both sides after the comparison
	// before changes no row's xmin: the table is compared range by range,
	// and the rows whose defaults differ are named.
	{"added", "id int PRIMARY KEY, v text", nil, []string{"ALTER TABLE added ADD COLUMN c int DEFAULT 1", "ALTER TABLE added ADD COLUMN c int DEFAULT 2"}, verify.Changed},
	{"keyless_same", "v text", nil, []string{"INSERT INTO keyless_same VALUES ('a')", "INSERT INTO keyless_same VALUES ('a')"}, "match"},
	{"keyless_lost", "v text", nil, []string{"INSERT INTO keyless_lost VALUES ('a')", ""}, "whole"},
	// Different before (as when the source moves on with nothing applying),
	// equal at the fence: a table without a key is compared whole there.
	{"keyless_late", "v text", []string{"INSERT INTO keyless_late VALUES ('a')", ""}, []string{"", "INSERT INTO keyless_late VALUES ('a')"}, "match"},
}

// Since (the cutover's check at the fence) compares the rows written since
// a mark one by one and the rest by number and keys, given a comparison
// after the mark: every kind of difference made after that comparison, or
// named by it and left, is found; changes made alike on both sides are not
// differences.
func TestVerifySinceMark(t *testing.T) {
	src, dst := pgtestPair(t)
	var sel []selection.Table
	for _, tc := range sinceTables {
		fill := "INSERT INTO " + tc.name + " SELECT g, 'v' || g FROM generate_series(1, 1000) g"
		switch tc.name {
		case "pair":
			fill = "INSERT INTO pair SELECT g % 10, 'b' || g, g FROM generate_series(1, 1000) g"
		case "keyless_same", "keyless_lost", "keyless_late":
			fill = "INSERT INTO " + tc.name + " SELECT 'v' || g FROM generate_series(1, 1000) g"
		}
		for _, c := range []*pgtest.Cluster{src, dst} {
			c.Exec("postgres", "CREATE TABLE "+tc.name+" ("+tc.ddl+"); "+fill)
		}
		sel = append(sel, selection.Table{Database: "postgres", Schema: "public", Name: tc.name})
	}
	run := func(steps func(tc int) []string) {
		for i := range sinceTables {
			if s := steps(i); s != nil {
				if s[0] != "" {
					src.Exec("postgres", s[0])
				}
				if s[1] != "" {
					dst.Exec("postgres", s[1])
				}
			}
		}
	}
	run(func(i int) []string { return sinceTables[i].beforeMark })

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	db := sinceDB(t, src, dst)
	db.Tables = sel

	// A transaction open on the source at the mark, with a later one
	// committed, ends after the comparison before the fence: its row,
	// unseen by that comparison, is compared at the fence.
	open := src.Connect("postgres")
	if _, err := open.Exec(ctx, "BEGIN; INSERT INTO named VALUES (7777, 'open')"); err != nil {
		t.Fatal(err)
	}
	src.Exec("postgres", "CREATE TABLE later_commit (x int); INSERT INTO later_commit VALUES (1)")
	mark, err := verify.MarkNow(ctx, db)
	if err != nil {
		t.Fatal(err)
	}

	v := verify.New()
	v.Wait = 0
	v.MaxDiffRows = 1000
	v.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	before, err := v.Database(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	run(func(i int) []string { return sinceTables[i].afterPre })
	if _, err := open.Exec(ctx, "COMMIT"); err != nil {
		t.Fatal(err)
	}
	// The check at the fence from the first mark, and from a second one
	// after a round of Narrow (as cutover does), must say the same.
	direct, err := v.Since(ctx, db, mark, before)
	if err != nil {
		t.Fatal(err)
	}
	second, err := verify.MarkNow(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	narrowed, err := v.Narrow(ctx, db, mark, before)
	if err != nil {
		t.Fatal(err)
	}
	viaNarrow, err := v.Since(ctx, db, second, narrowed)
	if err != nil {
		t.Fatal(err)
	}
	for _, after := range []verify.DatabaseReport{direct, viaNarrow} {
		checkSinceReport(t, after)
	}
}

// checkSinceReport compares a report of Since with what sinceTables want.
func checkSinceReport(t *testing.T, after verify.DatabaseReport) {
	t.Helper()
	got := map[string]verify.TableReport{}
	for _, tr := range after.Tables {
		got[tr.Name] = tr
	}
	for _, tc := range sinceTables {
		tr, ok := got[tc.name]
		if !ok {
			t.Errorf("%s: not in the report", tc.name)
			continue
		}
		if tc.want == "match" {
			if tr.Status != verify.StatusMatch {
				t.Errorf("%s: status %s, want match: %+v", tc.name, tr.Status, tr)
			}
			continue
		}
		if tr.Status != verify.StatusMismatch || len(tr.Ranges) != 1 {
			t.Errorf("%s: status %s with %d ranges, want one mismatch (%s): %+v", tc.name, tr.Status, len(tr.Ranges), tc.want, tr)
			continue
		}
		r := tr.Ranges[0]
		switch tc.want {
		case "unchanged", "whole":
			if len(r.Rows) != 0 || r.Complete {
				t.Errorf("%s: %d rows named (complete %v), want none, incomplete: %+v", tc.name, len(r.Rows), r.Complete, r)
			}
		default:
			if !slices.ContainsFunc(r.Rows, func(d verify.RowDiff) bool { return d.Kind == tc.want }) {
				t.Errorf("%s: rows %+v, want a %s one", tc.name, r.Rows, tc.want)
			}
		}
	}
	if tr := got["named"]; len(tr.Ranges) == 1 && len(tr.Ranges[0].Rows) != 2 {
		t.Errorf("named: rows %+v, want id 11 and the open transaction's 7777", tr.Ranges[0].Rows)
	}
}
