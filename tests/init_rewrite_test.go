package tests

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/serenorg/postgres-seren-replicator/tests/pgtest"
)

// A table rewritten on the source while init copies another one (ALTER
// COLUMN TYPE gives its rows new transaction ids, invisible to the
// snapshot) must still be copied whole: init holds the selected tables
// until their rows are copied, and the rewrite waits for it.
func TestInitHoldsTablesAgainstRewrites(t *testing.T) {
	src, dst := pgtest.StartPair(t)
	src.Exec("postgres", "CREATE DATABASE rw")
	src.Exec("rw", `CREATE TABLE big (id int PRIMARY KEY, pad text);
		INSERT INTO big SELECT g, repeat(md5(g::text), 8) FROM generate_series(1, 400000) g;
		CREATE TABLE small (id int PRIMARY KEY, v int);
		INSERT INTO small SELECT g, g FROM generate_series(1, 1000) g;`)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan Result, 1)
	go func() {
		done <- runCLIContext(t, ctx, 3*time.Minute, nil, initArgs(src, dst, "rw", "rw", "--jobs", "1")...)
	}()
	eventually(t, 60*time.Second, "init to copy table big", func() bool {
		return src.QueryString("rw", `SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY%big%'`) != "0"
	})
	altered := make(chan error, 1)
	go func() {
		conn := src.Connect("rw")
		defer conn.Close(context.Background())
		_, err := conn.Exec(context.Background(), `ALTER TABLE small ALTER COLUMN v TYPE bigint`)
		altered <- err
	}()
	res := <-done
	if res.Code != 0 {
		t.Fatalf("init: exit %d\n%s", res.Code, res.Stderr)
	}
	if err := <-altered; err != nil {
		t.Fatal(err)
	}
	if got := dst.QueryString("rw", "SELECT count(*) FROM small"); got != "1000" {
		t.Fatalf("table small has %s rows on the target, want 1000: it was rewritten on the source during the copy", got)
	}
	if !strings.Contains(res.Stdout+res.Stderr, "sync") {
		t.Errorf("init did not finish normally:\n%s", res.Stdout)
	}
}
