package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/serenorg/postgres-seren-replicator/tests/pgtest"
)

// pgbenchTables are the tables pgbench -i creates.
var pgbenchTables = []string{"pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history"}

// initCopy (issue 4): the initial copy of one pgbench database by init,
// by pg_dump -Fd -j N | pg_restore -j N, by a native subscription's initial
// sync, and by the floor (parallel binary COPY pipes plus the key build),
// all into the same target cluster, reset between runs.
func (b *bench) initCopy() {
	src, dst := b.start(), b.start()
	src.Exec("postgres", "CREATE DATABASE "+benchDB)
	b.sh(fmt.Sprintf("pgbench -q -i -s %d '%s' 2>&1 | tail -1", b.scale, src.DSN(benchDB)))
	size := src.QueryString(benchDB, "pg_size_pretty(pg_database_size(current_database()))")
	accounts := b.scale * 100000
	section := fmt.Sprintf("init scale %d", b.scale)
	fmt.Fprintf(os.Stderr, "init: source database %s, %d jobs\n", size, b.jobs)
	work, err := os.MkdirTemp("", "seren-bench-init-")
	if err != nil {
		b.h.Fatal(err)
	}
	b.h.Cleanup(func() { os.RemoveAll(work) })

	// pg_dump -Fd -j N, then pg_restore -j N: a directory dump cannot be piped.
	b.resetTarget(dst, true)
	dumpDir := filepath.Join(work, "dump")
	dumpTook := timed(func() { b.sh(fmt.Sprintf("pg_dump -Fd -j %d -f %s '%s'", b.jobs, dumpDir, src.DSN(benchDB))) })
	restoreTook := timed(func() { b.sh(fmt.Sprintf("pg_restore -j %d -d '%s' %s", b.jobs, dst.DSN(benchDB), dumpDir)) })
	b.checkCopied(dst, accounts, "pg_restore")
	dumpTotal := dumpTook + restoreTook
	fmt.Fprintf(os.Stderr, "init: pg_dump %s + pg_restore %s\n", fmtDur(dumpTook), fmtDur(restoreTook))

	// Native subscription: schema first (not timed), then the initial sync
	// until every table is ready.
	b.resetTarget(dst, true)
	schemaTook := timed(func() { b.sh(fmt.Sprintf("pg_dump -s '%s' | %s", src.DSN(benchDB), b.psql(dst))) })
	src.Exec(benchDB, "CREATE PUBLICATION bench_init_pub FOR TABLE "+strings.Join(pgbenchTables, ", "))
	nativeTook := timed(func() {
		dst.Exec(benchDB, fmt.Sprintf("CREATE SUBSCRIPTION bench_init_sub CONNECTION '%s' PUBLICATION bench_init_pub", src.DSN(benchDB)))
		b.waitUntil("native initial sync", func() bool {
			return dst.QueryString(benchDB, "SELECT count(*) FILTER (WHERE srsubstate <> 'r') = 0 AND count(*) > 0 FROM pg_subscription_rel") == "true"
		})
	})
	b.checkCopied(dst, accounts, "native subscription")
	dst.Exec(benchDB, "DROP SUBSCRIPTION bench_init_sub")
	src.Exec(benchDB, "DROP PUBLICATION bench_init_pub")
	fmt.Fprintf(os.Stderr, "init: native initial sync %s (schema before it %s)\n", fmtDur(nativeTook), fmtDur(schemaTook))

	// The floor: tables without keys, two binary COPY pipes over halves of
	// the key range (the small tables ride along with the second), then the
	// key build.
	b.resetTarget(dst, true)
	pre, post := filepath.Join(work, "pre.sql"), filepath.Join(work, "post.sql")
	b.sh(fmt.Sprintf("pg_dump --section=pre-data -f %s '%s' && pg_dump --section=post-data -f %s '%s'", pre, src.DSN(benchDB), post, src.DSN(benchDB)))
	pipe := func(query, table string) string {
		return fmt.Sprintf(`psql -X -q -v ON_ERROR_STOP=1 '%s' -c "COPY (%s) TO STDOUT (FORMAT binary)" | psql -X -q -v ON_ERROR_STOP=1 '%s' -c "COPY %s FROM STDIN (FORMAT binary)"`,
			src.DSN(benchDB), query, dst.DSN(benchDB), table)
	}
	half := accounts / 2
	copyScript := fmt.Sprintf("( %s ) & ( %s && %s && %s ) & wait -n && wait -n",
		pipe(fmt.Sprintf("SELECT * FROM pgbench_accounts WHERE aid <= %d", half), "pgbench_accounts"),
		pipe(fmt.Sprintf("SELECT * FROM pgbench_accounts WHERE aid > %d", half), "pgbench_accounts"),
		pipe("SELECT * FROM pgbench_branches", "pgbench_branches"),
		pipe("SELECT * FROM pgbench_tellers", "pgbench_tellers"))
	preTook := timed(func() { b.sh(fmt.Sprintf("%s -f %s", b.psql(dst), pre)) })
	copyTook := timed(func() { b.sh(copyScript) })
	keyTook := timed(func() { b.sh(fmt.Sprintf("%s -f %s", b.psql(dst), post)) })
	b.checkCopied(dst, accounts, "floor")
	floor := preTook + copyTook + keyTook
	fmt.Fprintf(os.Stderr, "init: floor: schema %s + copy %s + primary keys %s\n", fmtDur(preTook), fmtDur(copyTook), fmtDur(keyTook))

	// Ours: init creates the target database itself.
	b.resetTarget(dst, false)
	var out string
	oursTook := timed(func() {
		out = b.sh(fmt.Sprintf("%s init --yes --replica-identity-full --jobs %d --source '%s' --target '%s' --log-level warn", b.bin, b.jobs, src.DSN(benchDB), dst.DSN(benchDB)))
	})
	b.checkCopied(dst, accounts, "init")
	summary := initSummary(out)
	fmt.Fprintf(os.Stderr, "init: ours %s\n%s\n", fmtDur(oursTook), summary)

	better, betterName := dumpTotal, "pg_dump|restore"
	if nativeTook < better {
		better, betterName = nativeTook, "native sub"
	}
	b.rows = append(b.rows,
		row{section: section, what: "initial copy", ours: oursTook, native: dumpTotal, vs: fmt.Sprintf("pg_dump|restore -j%d", b.jobs),
			note: fmt.Sprintf("%s; dump %s + restore %s", size, fmtDur(dumpTook), fmtDur(restoreTook))},
		row{section: section, what: "initial copy", ours: oursTook, native: nativeTook, vs: "native sub",
			note: fmt.Sprintf("schema pre-created in %s, not counted", fmtDur(schemaTook))},
		row{section: section, what: "initial copy", ours: oursTook, native: floor, vs: "COPY floor",
			note: fmt.Sprintf("schema %s + 2 COPY pipes %s + keys %s; goal >= 0.83x", fmtDur(preTook), fmtDur(copyTook), fmtDur(keyTook))},
	)
	b.details = append(b.details, fmt.Sprintf("init (scale %d, %s, --jobs %d): %s vs %s (the better tool) = %.2fx, goal >= 1.33x; its own summary:\n%s",
		b.scale, size, b.jobs, fmtDur(oursTook), betterName, better.Seconds()/oursTook.Seconds(), summary))
}

// resetTarget drops the benchmark database on c (and creates it again when
// create is set), then checkpoints so the previous run's dirty buffers do
// not slow the next.
func (b *bench) resetTarget(c *pgtest.Cluster, create bool) {
	c.Exec("postgres", "DROP DATABASE IF EXISTS "+benchDB+" WITH (FORCE)")
	if create {
		c.Exec("postgres", "CREATE DATABASE "+benchDB)
	}
	c.Exec("postgres", "CHECKPOINT")
}

// checkCopied fails the run unless c holds every account row.
func (b *bench) checkCopied(c *pgtest.Cluster, accounts int, by string) {
	got := c.QueryString(benchDB, "SELECT count(*) FROM pgbench_accounts")
	if got != fmt.Sprint(accounts) {
		b.h.Fatalf("%s copied %s account rows, want %d", by, got, accounts)
	}
}

var summaryHeader = regexp.MustCompile(`(?m)^DATABASE\s+STEP\s`)

// initSummary is the per-step table init prints at its end.
func initSummary(out string) string {
	loc := summaryHeader.FindStringIndex(out)
	if loc == nil {
		return "(no summary in init's output)\n" + out
	}
	s := out[loc[0]:]
	if j := strings.Index(s, "\n\n"); j >= 0 {
		s = s[:j]
	}
	return s
}

func timed(f func()) time.Duration {
	start := time.Now()
	f()
	return time.Since(start)
}
