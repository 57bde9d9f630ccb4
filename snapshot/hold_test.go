package snapshot

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/serenorg/postgres-seren-replicator/tests/pgtest"
)

// A table rewritten after a snapshot was exported and before a copy session
// locks it is refused: its rows as of the snapshot are no longer readable.
// One left alone passes; a partitioned table whose partition was rewritten
// is refused too.
func TestHoldTablesDetectsRewrites(t *testing.T) {
	c := pgtest.Start(t, pgtest.Options{})
	c.Exec("postgres", `CREATE TABLE kept (id int PRIMARY KEY); INSERT INTO kept VALUES (1);
		CREATE TABLE "Moved" (id int PRIMARY KEY, v int); INSERT INTO "Moved" VALUES (1, 1);
		CREATE TABLE part (id int) PARTITION BY RANGE (id); CREATE TABLE part_1 PARTITION OF part FOR VALUES FROM (0) TO (10);`)
	ctx := context.Background()
	exporter := c.Connect("postgres")
	tx, err := exporter.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	var snapshot string
	if err := tx.QueryRow(ctx, "SELECT pg_export_snapshot()").Scan(&snapshot); err != nil {
		t.Fatal(err)
	}
	c.Exec("postgres", `ALTER TABLE "Moved" ALTER COLUMN v TYPE bigint`)
	c.Exec("postgres", `VACUUM FULL part_1`)

	copier := c.Connect("postgres")
	if err := importSnapshot(ctx, copier.PgConn(), snapshot); err != nil {
		t.Fatal(err)
	}
	if err := holdTables(ctx, copier.PgConn(), []string{`"public"."kept"`}); err != nil {
		t.Fatalf("table left alone: %v", err)
	}
	if err := holdTables(ctx, copier.PgConn(), []string{`"public"."part"`}); !errors.Is(err, ErrRewritten) || !strings.Contains(err.Error(), "part_1") {
		t.Fatalf("partition rewritten: got %v, want ErrRewritten naming part_1", err)
	}
	err = holdTables(ctx, copier.PgConn(), []string{`"public"."kept"`, `"public"."Moved"`})
	if !errors.Is(err, ErrRewritten) {
		t.Fatalf("rewritten table: got %v, want ErrRewritten", err)
	}
	if got, want := err.Error(), `table rewritten on the source after the snapshot was taken: "Moved"`; got != want {
		t.Errorf("error = %q, want %q", got, want)
	}
}
