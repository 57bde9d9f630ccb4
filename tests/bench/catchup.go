package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/serenorg/postgres-seren-replicator/tests/pgtest"
)

// bench holds the run's settings and results.
type bench struct {
	h     *pgtest.Standalone
	bin   string
	scale int
	txns  int
	rows  []row
	// syncArgs are extra arguments for sync.
	syncArgs string
	// jobs is the parallelism of init, pg_dump and pg_restore.
	jobs int
	// bigRows is the size of the memory section's transactions;
	// insertOnly leaves out the update transaction.
	bigRows    int
	insertOnly bool
	reps       int
	// steady is how long each steady-state run lasts, at rate transactions
	// per second.
	steady time.Duration
	rate   int
	// stats loads pg_stat_statements and prints the target's statements.
	stats bool
	// details are free-form blocks printed after the table.
	details []string
}

const benchDB = "bench"

// serverSettings suit a benchmark on a small machine: durable (fsync on is
// what users run) but with room for WAL.
var serverSettings = []string{"max_wal_size = '8GB'", "checkpoint_timeout = '30min'", "shared_buffers = '256MB'", "fsync = on", "synchronous_commit = on"}

func (b *bench) start() *pgtest.Cluster {
	settings := serverSettings
	if b.stats {
		settings = append(slices.Clone(settings), "shared_preload_libraries = 'pg_stat_statements'", "pg_stat_statements.track_planning = on")
	}
	return pgtest.Start(b.h, pgtest.Options{Settings: settings})
}

// statementStats prints where the target's time went (with -stats).
func (b *bench) statementStats(c *pgtest.Cluster) {
	if !b.stats {
		return
	}
	fmt.Fprint(os.Stderr, b.sh(fmt.Sprintf(`%s -c "SELECT calls, round(total_exec_time) AS exec_ms, round(total_plan_time) AS plan_ms, rows, shared_blks_read AS blks_read, wal_fpi, pg_size_pretty(wal_bytes) AS wal, left(regexp_replace(query, '\s+', ' ', 'g'), 60) AS query FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 10"`, b.psql(c))))
}

// sh runs a shell pipeline with the PostgreSQL client tools on PATH.
func (b *bench) sh(script string) string {
	cmd := exec.Command("bash", "-o", "pipefail", "-c", script)
	cmd.Env = append(os.Environ(), "PATH=/usr/lib/postgresql/15/bin:"+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		b.h.Fatalf("%s: %v\n%s", script, err, out)
	}
	return string(out)
}

// shCPU is sh that also returns the CPU time (user and system) of the
// pipeline's processes.
func (b *bench) shCPU(script string) (string, time.Duration) {
	cmd := exec.Command("bash", "-o", "pipefail", "-c", script)
	cmd.Env = append(os.Environ(), "PATH=/usr/lib/postgresql/15/bin:"+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		b.h.Fatalf("%s: %v\n%s", script, err, out)
	}
	return string(out), cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
}

func (b *bench) psql(c *pgtest.Cluster) string {
	return fmt.Sprintf("psql -X -q -v ON_ERROR_STOP=1 '%s'", c.DSN(benchDB))
}

// prepare makes the source database with pgbench's tables, a copy of it on
// each target, our slot and checkpoint on ours, and a disabled native
// subscription on native whose initial sync is done.
func (b *bench) prepare(src, ours, native *pgtest.Cluster, tables []string, extra string) {
	for _, c := range []*pgtest.Cluster{src, ours, native} {
		c.Exec("postgres", "CREATE DATABASE "+benchDB)
	}
	b.sh(fmt.Sprintf("pgbench -q -i -s %d '%s' 2>&1 | tail -1", b.scale, src.DSN(benchDB)))
	if extra != "" {
		src.Exec(benchDB, extra)
	}
	b.sh(fmt.Sprintf("pg_dump -s '%s' | %s", src.DSN(benchDB), b.psql(native)))
	b.sh(fmt.Sprintf("pg_dump '%s' | %s", src.DSN(benchDB), b.psql(ours)))
	src.Exec(benchDB, "CREATE PUBLICATION seren_replicator_pub FOR TABLE "+strings.Join(tables, ", "))
	lsn := src.QueryString(benchDB, "SELECT lsn FROM pg_create_logical_replication_slot('seren_bench', 'pgoutput')")
	if b.stats {
		ours.Exec(benchDB, "CREATE EXTENSION pg_stat_statements")
	}
	ours.Exec(benchDB, `CREATE SCHEMA seren_replicator; CREATE TABLE seren_replicator.checkpoint (slot_name text PRIMARY KEY, end_lsn pg_lsn NOT NULL, commit_time timestamptz, applied_at timestamptz NOT NULL DEFAULT now());`)
	ours.Exec(benchDB, fmt.Sprintf(`INSERT INTO seren_replicator.checkpoint (slot_name, end_lsn) VALUES ('seren_bench', '%s')`, lsn))
	native.Exec(benchDB, fmt.Sprintf(`CREATE SUBSCRIPTION native_sub CONNECTION '%s' PUBLICATION seren_replicator_pub WITH (copy_data = true)`, src.DSN(benchDB)))
	b.waitUntil("native initial sync", func() bool {
		return native.QueryString(benchDB, "SELECT count(*) FROM pg_subscription_rel WHERE srsubstate <> 'r'") == "0"
	})
	native.Exec(benchDB, "ALTER SUBSCRIPTION native_sub DISABLE")
	b.waitUntil("native worker to stop", func() bool {
		return src.QueryString(benchDB, "SELECT active FROM pg_replication_slots WHERE slot_name = 'native_sub'") == "false"
	})
}

func (b *bench) waitUntil(what string, cond func() bool) {
	deadline := time.Now().Add(30 * time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			b.h.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// drain times both appliers on the backlog now in both slots.
func (b *bench) drain(section string, src, ours, native *pgtest.Cluster, changes int64) {
	// The floor: how long the source alone takes to decode the backlog.
	start := time.Now()
	msgs := src.QueryString(benchDB, `SELECT count(*) FROM pg_logical_slot_peek_binary_changes('native_sub', NULL, NULL, 'proto_version', '1', 'publication_names', 'seren_replicator_pub')`)
	decodeTook := time.Since(start)
	fmt.Fprintf(os.Stderr, "source decodes the backlog (%s messages) in %s\n", msgs, decodeTook.Round(time.Millisecond))
	if b.stats {
		ours.Exec(benchDB, "SELECT pg_stat_statements_reset()")
	}
	start = time.Now()
	out, cpu := b.shCPU(fmt.Sprintf("%s sync --catch-up --source '%s' --target '%s' --log-level warn %s", b.bin, src.DSN(benchDB), ours.DSN(benchDB), b.syncArgs))
	oursTook := time.Since(start)
	fmt.Fprint(os.Stderr, out)
	b.statementStats(ours)

	target := src.QueryString(benchDB, "SELECT pg_current_wal_flush_lsn()")
	start = time.Now()
	native.Exec(benchDB, "ALTER SUBSCRIPTION native_sub ENABLE")
	b.waitUntil("native apply", func() bool {
		return src.QueryString(benchDB, fmt.Sprintf("SELECT confirmed_flush_lsn >= '%s' FROM pg_replication_slots WHERE slot_name = 'native_sub'", target)) == "true"
	})
	nativeTook := time.Since(start)
	// What a catch-up costs with nothing to do: start-up, planning, sequences.
	start = time.Now()
	b.sh(fmt.Sprintf("%s sync --catch-up --source '%s' --target '%s' --log-level warn %s", b.bin, src.DSN(benchDB), ours.DSN(benchDB), b.syncArgs))
	fmt.Fprintf(os.Stderr, "an empty catch-up takes %s\n", time.Since(start).Round(time.Millisecond))
	b.rows = append(b.rows, row{section: section, what: "drain backlog", ours: oursTook, native: nativeTook, changes: changes, note: peak(out) + fmt.Sprintf(", our CPU %.1f s, source decode alone %s", cpu.Seconds(), decodeTook.Round(time.Millisecond))})
}

func peak(out string) string {
	if i := strings.Index(out, "peak memory"); i >= 0 {
		return strings.TrimSpace(out[i:])
	}
	return ""
}

// catchUp: pgbench backlog of 4 × txns tpcb-like transactions.
func (b *bench) catchUp() {
	src, ours, native := b.start(), b.start(), b.start()
	tables := []string{"pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history"}
	b.prepare(src, ours, native, tables, "")
	b.sh(fmt.Sprintf("pgbench -n -c 4 -j 2 -t %d '%s' 2>&1 | grep -E 'tps|processed'", b.txns, src.DSN(benchDB)))
	b.drain("pgbench tpcb-like", src, ours, native, int64(4*b.txns*4))
}

// mixed: wide rows, TOASTed text, deletes, multi-row inserts of 1,000 rows
// and a few large transactions.
func (b *bench) mixed() {
	src, ours, native := b.start(), b.start(), b.start()
	// Only pgbench_accounts takes part: sync replicates every table of the
	// database, so the others must not exist outside the publication.
	extra := `DROP TABLE pgbench_branches, pgbench_tellers, pgbench_history;
CREATE TABLE wide (id bigserial PRIMARY KEY, a int, b text, c text, d numeric, e timestamptz, f jsonb, g text, h int, i text, j text);
CREATE TABLE docs (id int PRIMARY KEY, body text, version int);
INSERT INTO docs SELECT g, repeat(md5(g::text), 200), 0 FROM generate_series(1, 2000) g;`
	b.prepare(src, ours, native, []string{"wide", "docs", "pgbench_accounts"}, extra)
	script := filepath.Join(os.TempDir(), "seren-mixed.sql")
	err := os.WriteFile(script, []byte(`\set id random(1, 2000)
\set r random(1, 100)
BEGIN;
INSERT INTO wide (a, b, c, d, e, f, g, h, i, j) SELECT g, md5(g::text), repeat('c', 200), g * 1.5, now(), jsonb_build_object('k', g), 'g', g, 'i', 'j' FROM generate_series(1, 1000) g;
UPDATE docs SET version = version + 1 WHERE id = :id;
UPDATE docs SET body = repeat(md5(:r::text), 200) WHERE id = :id AND :r > 90;
DELETE FROM wide WHERE id IN (SELECT id FROM wide ORDER BY id LIMIT 500);
UPDATE pgbench_accounts SET abalance = abalance + :r WHERE aid = :id;
COMMIT;
`), 0o644)
	if err != nil {
		b.h.Fatal(err)
	}
	b.sh(fmt.Sprintf("pgbench -n -c 4 -j 2 -t %d -f %s '%s' 2>&1 | grep -E 'tps|processed'", b.txns/20, script, src.DSN(benchDB)))
	// A few large transactions.
	src.Exec(benchDB, `UPDATE pgbench_accounts SET filler = 'big update' WHERE aid <= 200000`)
	src.Exec(benchDB, `DELETE FROM wide WHERE id % 3 = 0`)
	// Count the row changes in the backlog: Insert, Update and Delete
	// messages ('I', 'U', 'D') of the disabled native slot.
	changes, _ := strconv.ParseInt(src.QueryString(benchDB, `SELECT count(*) FROM pg_logical_slot_peek_binary_changes('native_sub', NULL, NULL, 'proto_version', '1', 'publication_names', 'seren_replicator_pub') WHERE get_byte(data, 0) IN (73, 85, 68)`), 10, 64)
	b.drain("mixed", src, ours, native, changes)
}
