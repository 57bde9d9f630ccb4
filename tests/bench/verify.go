package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/serenorg/postgres-seren-replicator/tests/pgtest"
)

// verifySpeed (issue 6): verify on a pgbench database that init copied (both
// sides equal, no sync running) against a plain sequential read of the same
// tables on both sides, COPY ... TO STDOUT discarded.
func (b *bench) verifySpeed() {
	src, dst := b.start(), b.start()
	src.Exec("postgres", "CREATE DATABASE "+benchDB)
	b.sh(fmt.Sprintf("pgbench -q -i -s %d '%s' 2>&1 | tail -1", b.scale, src.DSN(benchDB)))
	b.sh(fmt.Sprintf("%s init --yes --source '%s' --target '%s' --log-level warn", b.bin, src.DSN(benchDB), dst.DSN(benchDB)))
	size := src.QueryString(benchDB, "pg_size_pretty(pg_database_size(current_database()))")
	dst.Exec(benchDB, "VACUUM ANALYZE") // as a settled target would be

	// --wait 0: no sync runs, so the checkpoint cannot move; waiting for it
	// would only add verify's stall timeout to the figure.
	var out string
	oursTook := timed(func() {
		out = b.sh(fmt.Sprintf("%s verify --wait 0 --source '%s' --target '%s' --log-level warn", b.bin, src.DSN(benchDB), dst.DSN(benchDB)))
	})
	fmt.Fprintf(os.Stderr, "verify: %s\n%s", fmtDur(oursTook), out)

	read := func(c *pgtest.Cluster) time.Duration {
		return timed(func() {
			for _, t := range pgbenchTables {
				b.sh(fmt.Sprintf("%s -c 'COPY (SELECT * FROM %s) TO STDOUT' > /dev/null", b.psql(c), t))
			}
		})
	}
	srcRead, dstRead := read(src), read(dst)
	fmt.Fprintf(os.Stderr, "verify: plain read source %s + target %s\n", fmtDur(srcRead), fmtDur(dstRead))
	b.rows = append(b.rows, row{section: fmt.Sprintf("verify scale %d", b.scale), what: "compare all tables", ours: oursTook,
		native: srcRead + dstRead, vs: "COPY read, both",
		note: fmt.Sprintf("%s; source read %s + target read %s; goal >= 0.50x", size, fmtDur(srcRead), fmtDur(dstRead))})
	b.details = append(b.details, fmt.Sprintf("verify (scale %d, default --jobs and --chunk-rows, --wait 0) printed:\n%s", b.scale, strings.TrimSpace(out)))
}
