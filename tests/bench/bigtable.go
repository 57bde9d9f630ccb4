package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"time"

	"github.com/serenorg/postgres-seren-replicator/tests/pgtest"
)

// bigJobs is the parallelism every tool gets in the init-bigtable section:
// one session per core of the 2-core machine the README's figures come from.
const bigJobs = 2

// bigRowBytes is about what one row of bigtable takes on disk, its two
// indexes included; it turns -bigtable-gb into a row count.
const bigRowBytes = 350

// bigTableSQL makes the table without its indexes: building them after the
// rows are in is faster.
const bigTableSQL = `CREATE TABLE bigtable (
	id bigint NOT NULL,
	account int NOT NULL,
	kind int NOT NULL,
	amount bigint NOT NULL,
	created_at timestamptz NOT NULL,
	updated_at timestamptz,
	label text NOT NULL,
	body text NOT NULL,
	doc text)`

// bigInsertSQL fills ids %d to %d: a 200-byte body on every row and, on one
// row in 20, a 4 KiB doc that PostgreSQL compresses.
const bigInsertSQL = `INSERT INTO bigtable SELECT i, i %% 100000, i %% 7, i * 37 %% 1000003,
	timestamptz '2024-01-01' + i * interval '1 second',
	CASE WHEN i %% 3 = 0 THEN timestamptz '2024-06-01' + i * interval '1 second' END,
	'item-' || i, left(repeat(md5(i::text), 7), 200),
	CASE WHEN i %% 20 = 0 THEN repeat(md5(i::text), 128) END
	FROM generate_series(%d, %d) AS i`

// bigIndexSQL builds the source's key and secondary index.
const bigIndexSQL = `ALTER TABLE bigtable ADD PRIMARY KEY (id);
	CREATE INDEX bigtable_account_created ON bigtable (account, created_at)`

// initBigTable (issue 18): the initial copy of one table of about gib GiB
// with wide rows, some compressed values and a secondary index, by init
// (--jobs 2 and its default), pg_dump -Fd -j2 | pg_restore -j2, a native
// subscription's initial sync and the floor (two binary COPY pipes over the
// halves of the table by ctid, then the key and index builds), each into
// the same target cluster reset between runs and from a settled machine.
// On 2 cores it takes about 10 minutes at the default 4 GiB.
func (b *bench) initBigTable(gib float64) {
	src, dst := b.start(), b.start()
	src.Exec("postgres", "CREATE DATABASE "+benchDB)
	rows := int64(gib * (1 << 30) / bigRowBytes)
	genTook := timed(func() { b.makeBigTable(src, rows) })
	size := src.QueryString(benchDB, "SELECT pg_size_pretty(pg_total_relation_size('bigtable'))")
	pages, err := strconv.ParseInt(src.QueryString(benchDB, "SELECT pg_relation_size('bigtable') / current_setting('block_size')::int"), 10, 64)
	if err != nil {
		b.h.Fatal(err)
	}
	fmt.Fprintf(os.Stderr, "init-bigtable: bigtable %s, %d rows, %d heap pages, made in %s\n", size, rows, pages, fmtDur(genTook))
	section := "bigtable " + size
	work, err := os.MkdirTemp("", "seren-bench-bigtable-")
	if err != nil {
		b.h.Fatal(err)
	}
	b.h.Cleanup(func() { os.RemoveAll(work) })

	// pg_dump -Fd -j2, then pg_restore -j2, as one run.
	b.resetTarget(dst, true)
	dumpDir := filepath.Join(work, "dump")
	b.settle(src, dst)
	dumpTook := timed(func() { b.sh(fmt.Sprintf("pg_dump -Fd -j %d -f %s '%s'", bigJobs, dumpDir, src.DSN(benchDB))) })
	restoreTook := timed(func() { b.sh(fmt.Sprintf("pg_restore -j %d -d '%s' %s", bigJobs, dst.DSN(benchDB), dumpDir)) })
	b.checkBigCopied(dst, rows, "pg_restore")
	os.RemoveAll(dumpDir)
	dumpTotal := dumpTook + restoreTook
	fmt.Fprintf(os.Stderr, "init-bigtable: pg_dump %s + pg_restore %s\n", fmtDur(dumpTook), fmtDur(restoreTook))

	// Native subscription: schema with its indexes first (not timed), then
	// the initial sync until the table is ready.
	b.resetTarget(dst, true)
	schemaTook := timed(func() { b.sh(fmt.Sprintf("pg_dump -s '%s' | %s", src.DSN(benchDB), b.psql(dst))) })
	src.Exec(benchDB, "CREATE PUBLICATION bench_big_pub FOR TABLE bigtable")
	b.settle(src, dst)
	nativeTook := timed(func() {
		dst.Exec(benchDB, fmt.Sprintf("CREATE SUBSCRIPTION bench_big_sub CONNECTION '%s' PUBLICATION bench_big_pub", src.DSN(benchDB)))
		b.waitUntil("native initial sync", func() bool {
			return dst.QueryString(benchDB, "SELECT count(*) FILTER (WHERE srsubstate <> 'r') = 0 AND count(*) > 0 FROM pg_subscription_rel") == "true"
		})
	})
	b.checkBigCopied(dst, rows, "native subscription")
	dst.Exec(benchDB, "DROP SUBSCRIPTION bench_big_sub")
	src.Exec(benchDB, "DROP PUBLICATION bench_big_pub")
	fmt.Fprintf(os.Stderr, "init-bigtable: native initial sync %s (schema before it %s)\n", fmtDur(nativeTook), fmtDur(schemaTook))

	// The floor: the table without keys, two binary COPY pipes over the
	// halves of its heap (TID range scans), then the post-data.
	b.resetTarget(dst, true)
	pre, post := filepath.Join(work, "pre.sql"), filepath.Join(work, "post.sql")
	b.sh(fmt.Sprintf("pg_dump --section=pre-data -f %s '%s' && pg_dump --section=post-data -f %s '%s'", pre, src.DSN(benchDB), post, src.DSN(benchDB)))
	pipe := func(where string) string {
		return fmt.Sprintf(`psql -X -q -v ON_ERROR_STOP=1 '%s' -c "COPY (SELECT * FROM bigtable WHERE %s) TO STDOUT (FORMAT binary)" | psql -X -q -v ON_ERROR_STOP=1 '%s' -c "COPY bigtable FROM STDIN (FORMAT binary)"`,
			src.DSN(benchDB), where, dst.DSN(benchDB))
	}
	half := pages / 2
	copyScript := fmt.Sprintf("( %s ) & ( %s ) & wait -n && wait -n",
		pipe(fmt.Sprintf("ctid < '(%d,0)'::tid", half)), pipe(fmt.Sprintf("ctid >= '(%d,0)'::tid", half)))
	b.settle(src, dst)
	preTook := timed(func() { b.sh(fmt.Sprintf("%s -f %s", b.psql(dst), pre)) })
	copyTook := timed(func() { b.sh(copyScript) })
	keyTook := timed(func() { b.sh(fmt.Sprintf("%s -f %s", b.psql(dst), post)) })
	b.checkBigCopied(dst, rows, "floor")
	floor := preTook + copyTook + keyTook
	fmt.Fprintf(os.Stderr, "init-bigtable: floor: schema %s + copy %s + keys %s\n", fmtDur(preTook), fmtDur(copyTook), fmtDur(keyTook))

	// Ours, with --jobs 2 and with its default; init creates the target
	// database itself, and cleanup drops its slot and publication after.
	ours := func(jobs string) (time.Duration, string) {
		b.resetTarget(dst, false)
		b.settle(src, dst)
		var out string
		took := timed(func() {
			out = b.sh(fmt.Sprintf("%s init --yes --replica-identity-full %s--source '%s' --target '%s' --log-level warn", b.bin, jobs, src.DSN(benchDB), dst.DSN(benchDB)))
		})
		b.checkBigCopied(dst, rows, "init "+jobs)
		b.sh(fmt.Sprintf("%s cleanup --yes --source '%s' --target '%s' --log-level warn", b.bin, src.DSN(benchDB), dst.DSN(benchDB)))
		summary := initSummary(out)
		fmt.Fprintf(os.Stderr, "init-bigtable: ours %s%s\n%s\n", jobs, fmtDur(took), summary)
		return took, summary
	}
	oursTook, summary := ours(fmt.Sprintf("--jobs %d ", bigJobs))
	defTook, defSummary := ours("")

	steps := func(summary string) string {
		return fmt.Sprintf("data %s + post-data %s", initStep(summary, "data"), initStep(summary, "schema (post-data)"))
	}
	floorNote := fmt.Sprintf("schema %s + 2 ctid COPY pipes %s + keys %s", fmtDur(preTook), fmtDur(copyTook), fmtDur(keyTook))
	b.rows = append(b.rows,
		row{section: section, what: "init --jobs 2", ours: oursTook, native: floor, vs: "COPY floor",
			note: fmt.Sprintf("ours %s; floor %s; goal >= 0.95x", steps(summary), floorNote)},
		row{section: section, what: "init default jobs", ours: defTook, native: floor, vs: "COPY floor",
			note: fmt.Sprintf("ours %s; goal >= 0.95x", steps(defSummary))},
		row{section: section, what: "init --jobs 2", ours: oursTook, native: nativeTook, vs: "native sub",
			note: fmt.Sprintf("schema pre-created in %s, not counted; goal >= 2.5x", fmtDur(schemaTook))},
		row{section: section, what: "init --jobs 2", ours: oursTook, native: dumpTotal, vs: "pg_dump|restore -j2",
			note: fmt.Sprintf("dump %s + restore %s; goal >= 3.33x", fmtDur(dumpTook), fmtDur(restoreTook))},
	)
	b.details = append(b.details,
		fmt.Sprintf("init-bigtable (%s, %d rows), ours --jobs 2: %s; its own summary:\n%s", size, rows, fmtDur(oursTook), summary),
		fmt.Sprintf("init-bigtable, ours with the default jobs: %s; its own summary:\n%s", fmtDur(defTook), defSummary))
}

// makeBigTable fills bigtable with rows rows in two parallel sessions, then
// builds its key and index and freezes it, so that no timed run pays for
// setting hint bits on the source.
func (b *bench) makeBigTable(src *pgtest.Cluster, rows int64) {
	src.Exec(benchDB, bigTableSQL)
	half := rows / 2
	b.sh(fmt.Sprintf(`( %s -c "%s" ) & ( %s -c "%s" ) & wait -n && wait -n`,
		b.psql(src), fmt.Sprintf(bigInsertSQL, 1, half), b.psql(src), fmt.Sprintf(bigInsertSQL, half+1, rows)))
	// psql rather than Exec: on 4 GiB these outlast Exec's 5-minute limit.
	b.sh(fmt.Sprintf(`%s -c "%s" -c "VACUUM (FREEZE, ANALYZE) bigtable"`, b.psql(src), bigIndexSQL))
}

// settle checkpoints the clusters and empties the kernel's page cache, so
// that a timed run neither writes the previous run's dirty buffers nor
// reads the table from memory; without root the cache stays as it is.
func (b *bench) settle(cs ...*pgtest.Cluster) {
	for _, c := range cs {
		b.sh(fmt.Sprintf("psql -X -q -v ON_ERROR_STOP=1 '%s' -c CHECKPOINT", c.DSN("postgres")))
	}
	b.sh("sync; (echo 3 > /proc/sys/vm/drop_caches) 2>/dev/null || true")
}

// checkBigCopied fails the run unless c holds every row of bigtable and
// both of its indexes.
func (b *bench) checkBigCopied(c *pgtest.Cluster, rows int64, by string) {
	got := c.QueryString(benchDB, "SELECT count(*) FROM bigtable")
	indexes := c.QueryString(benchDB, "SELECT count(*) FROM pg_index WHERE indrelid = 'bigtable'::regclass")
	if got != fmt.Sprint(rows) || indexes != "2" {
		b.h.Fatalf("%s copied %s rows of bigtable with %s indexes, want %d rows and 2 indexes", by, got, indexes, rows)
	}
}

// initStep is the duration of one step in init's summary, "?" when the
// summary has no such step.
func initStep(summary, step string) string {
	m := regexp.MustCompile(`(?m)^\S+\s+` + regexp.QuoteMeta(step) + `\s{2,}(\S+)`).FindStringSubmatch(summary)
	if m == nil {
		return "?"
	}
	return m[1]
}
