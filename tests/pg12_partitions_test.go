package tests

import (
	"strconv"
	"strings"
	"testing"
)

// PostgreSQL 12 cannot publish a partitioned table: init refuses one before
// changing anything, with one line that names it and says what to do, and
// the advice works (make test-versions runs this with 12 as source; other
// sources skip it).
func TestInitRefusesPartitionedTableOnPostgres12(t *testing.T) {
	src, dst := pgtestPair(t)
	if major, _ := strconv.Atoi(src.QueryString("postgres", "SELECT current_setting('server_version_num')::int / 10000")); major >= 13 {
		t.Skipf("PostgreSQL %d publishes partitioned tables", major)
	}
	needPgDump(t, src)
	src.Exec("postgres", "CREATE DATABASE parts")
	src.Exec("parts", `CREATE TABLE p (id int PRIMARY KEY, v int) PARTITION BY RANGE (id);
		CREATE TABLE p1 PARTITION OF p FOR VALUES FROM (0) TO (100); CREATE TABLE p2 PARTITION OF p FOR VALUES FROM (100) TO (200);
		CREATE TABLE t (id int PRIMARY KEY); INSERT INTO p SELECT g, g FROM generate_series(1, 150) g; INSERT INTO t VALUES (1), (2)`)
	res := runCLI(t, nil, initArgs(src, dst, "parts", "parts")...)
	if res.Code != 2 || !strings.Contains(res.Stderr, "PostgreSQL 12 cannot publish a partitioned table") || !strings.Contains(res.Stderr, "--exclude-tables parts.public.p") {
		t.Fatalf("init: exit %d, want 2 naming the partitioned table:\n%s", res.Code, res.Stderr)
	}
	if got := src.QueryString("parts", `SELECT count(*) FROM pg_publication`); got != "0" {
		t.Errorf("a refused init left %s publications", got)
	}
	res = runCLI(t, nil, initArgs(src, dst, "parts", "parts", "--exclude-tables", "parts.public.p")...)
	if res.Code != 0 {
		t.Fatalf("init with the advice followed: exit %d:\n%s", res.Code, res.Stderr)
	}
	assertSameTables(t, src, dst, "parts", "t")
}
