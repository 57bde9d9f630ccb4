package main

import (
	"fmt"

	"github.com/serenorg/postgres-seren-replicator/tests/pgtest"
)

// memory (issue 7 item 3): one source transaction inserting bigRows rows,
// then one updating all of them; each drained by sync --catch-up (which
// prints its peak RSS) and by the native subscription.
func (b *bench) memory() {
	src, ours, native := b.start(), b.start(), b.start()
	// prepare makes pgbench's tables: at the smallest scale, dropped before
	// they are copied (sync replicates every table of the database).
	scale := b.scale
	b.scale = 1
	b.prepare(src, ours, native, []string{"big"}, `DROP TABLE pgbench_accounts, pgbench_branches, pgbench_tellers, pgbench_history;
CREATE TABLE big (id bigint PRIMARY KEY, payload text, n int);`)
	b.scale = scale

	label := func(op string) string { return fmt.Sprintf("1 txn, %s %ss", count(b.bigRows), op) }
	// Each repetition inserts the next bigRows keys: its ratio is measured
	// under the same load as the one before (the machine is shared).
	for rep := range b.reps {
		insertTook := timed(func() {
			src.Exec(benchDB, fmt.Sprintf(`INSERT INTO big SELECT g, md5(g::text) || repeat('p', 100), 0 FROM generate_series(%d, %d) g`,
				rep*b.bigRows+1, (rep+1)*b.bigRows))
		})
		b.drain(label("insert"), src, ours, native, int64(b.bigRows))
		b.rows[len(b.rows)-1].note += fmt.Sprintf(", source txn %s", fmtDur(insertTook))
		if rep < b.reps-1 || !b.insertOnly {
			native.Exec(benchDB, "ALTER SUBSCRIPTION native_sub DISABLE")
			b.waitUntil("native worker to stop", func() bool {
				return src.QueryString(benchDB, "SELECT active FROM pg_replication_slots WHERE slot_name = 'native_sub'") == "false"
			})
		}
	}
	if b.insertOnly {
		return
	}

	updateTook := timed(func() { src.Exec(benchDB, `UPDATE big SET n = 1`) })
	b.drain(label("update"), src, ours, native, int64(b.reps*b.bigRows))
	b.rows[len(b.rows)-1].note += fmt.Sprintf(", source txn %s", fmtDur(updateTook))

	for name, c := range map[string]*pgtest.Cluster{"ours": ours, "native": native} {
		if got := c.QueryString(benchDB, "SELECT count(*) FILTER (WHERE n = 1) FROM big"); got != fmt.Sprint(b.reps*b.bigRows) {
			b.h.Fatalf("memory: %s target has %s updated rows, want %d", name, got, b.reps*b.bigRows)
		}
	}
}

// count prints a row count briefly: 5M, 100k.
func count(n int) string {
	switch {
	case n >= 1_000_000 && n%100_000 == 0:
		return fmt.Sprintf("%gM", float64(n)/1e6)
	case n >= 1000 && n%100 == 0:
		return fmt.Sprintf("%gk", float64(n)/1e3)
	}
	return fmt.Sprint(n)
}
