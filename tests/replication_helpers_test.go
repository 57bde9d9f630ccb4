package tests

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/serenorg/postgres-seren-replicator/checkpoint"
	"github.com/serenorg/postgres-seren-replicator/internal/selection"
	"github.com/serenorg/postgres-seren-replicator/stream"
	"github.com/serenorg/postgres-seren-replicator/tests/pgtest"
)

// prepareStreaming does by hand what init does, for tests of sync alone:
// the same schema on both sides, the publication over tables, a slot, and
// the checkpoint at the slot's consistent point. Rows written to the source
// after it returns reach the target only through sync.
func prepareStreaming(t *testing.T, src, dst *pgtest.Cluster, db, schema string, tables ...string) {
	t.Helper()
	if db != "postgres" {
		src.Exec("postgres", "CREATE DATABASE "+db)
		dst.Exec("postgres", "CREATE DATABASE "+db)
	}
	src.Exec(db, schema)
	dst.Exec(db, schema)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sconn := src.Connect(db)
	var sel []selection.Table
	for _, tbl := range tables {
		parts := strings.SplitN(tbl, ".", 2)
		sel = append(sel, selection.Table{Database: db, Schema: parts[0], Name: parts[1]})
	}
	if err := stream.EnsurePublication(ctx, sconn, stream.PublicationName(stream.DefaultSlotName(db)), sel); err != nil {
		t.Fatal(err)
	}
	var lsnText string
	if err := sconn.QueryRow(ctx, `SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')`, stream.DefaultSlotName(db)).Scan(&lsnText); err != nil {
		t.Fatal(err)
	}
	lsn, err := pglogrepl.ParseLSN(lsnText)
	if err != nil {
		t.Fatal(err)
	}
	dconn := dst.Connect(db)
	store := checkpoint.Store{}
	if err := store.Ensure(ctx, dconn); err != nil {
		t.Fatal(err)
	}
	if err := store.Save(ctx, dconn, checkpoint.Position{Slot: stream.DefaultSlotName(db), EndLSN: lsn}); err != nil {
		t.Fatal(err)
	}
	// As init does: the source's attribute numbers of each table's columns.
	if err := store.EnsureTables(ctx, dconn); err != nil {
		t.Fatal(err)
	}
	for _, tbl := range sel {
		var relid uint32
		var nums []int16
		var names []string
		if err := sconn.QueryRow(ctx, `SELECT c.oid, array_agg(a.attnum), array_agg(a.attname::text) FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
			WHERE c.oid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' GROUP BY c.oid`, pgx.Identifier{tbl.Schema, tbl.Name}.Sanitize()).Scan(&relid, &nums, &names); err != nil {
			t.Fatal(err)
		}
		cols := checkpoint.SourceColumns{}
		for i, n := range nums {
			cols[n] = names[i]
		}
		if err := store.RecordColumns(ctx, dconn, stream.DefaultSlotName(db), relid, cols); err != nil {
			t.Fatal(err)
		}
	}
}

// syncArgs are the arguments of a sync run for db between the clusters.
func syncArgs(src, dst *pgtest.Cluster, db string, extra ...string) []string {
	return append([]string{"sync", "--source", src.URL("postgres", "", db), "--target", dst.URL("postgres", "", db)}, extra...)
}

// catchUp runs sync --catch-up and fails the test unless it exits 0.
func catchUp(t *testing.T, src, dst *pgtest.Cluster, db string, extra ...string) Result {
	t.Helper()
	res := runCLI(t, nil, syncArgs(src, dst, db, append([]string{"--catch-up"}, extra...)...)...)
	if res.Code != 0 {
		t.Fatalf("sync --catch-up exit %d\nstdout: %s\nstderr: %s", res.Code, res.Stdout, res.Stderr)
	}
	return res
}

// tableContents renders a table's rows as sorted text, for comparing sides.
func tableContents(t *testing.T, c *pgtest.Cluster, db, table string) string {
	t.Helper()
	return c.QueryString(db, fmt.Sprintf(`SELECT coalesce(string_agg(x::text, E'\n' ORDER BY x::text), '') FROM %s x`, table))
}

// assertSameTables fails unless each table holds the same rows on both sides.
func assertSameTables(t *testing.T, src, dst *pgtest.Cluster, db string, tables ...string) {
	t.Helper()
	for _, tbl := range tables {
		want := tableContents(t, src, db, tbl)
		got := tableContents(t, dst, db, tbl)
		if got != want {
			t.Errorf("table %s differs\nsource:\n%s\ntarget:\n%s", tbl, abbreviate(want), abbreviate(got))
		}
	}
}

func abbreviate(s string) string {
	if len(s) > 3000 {
		return s[:3000] + "\n…"
	}
	return s
}

// pgtestPair starts a source and a target cluster.
func pgtestPair(t *testing.T) (src, dst *pgtest.Cluster) {
	t.Helper()
	return pgtest.StartPair(t)
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
