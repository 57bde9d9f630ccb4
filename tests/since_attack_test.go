package tests

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/serenorg/postgres-seren-replicator/internal/conninfo"
	"github.com/serenorg/postgres-seren-replicator/internal/plan"
	"github.com/serenorg/postgres-seren-replicator/internal/selection"
	"github.com/serenorg/postgres-seren-replicator/tests/pgtest"
	"github.com/serenorg/postgres-seren-replicator/verify"
)

// Attacks on verify.Since, the check cutover --check changed makes at the
// fence. Each test builds a real difference between source and target at
// the fence (or equal data) and says what Since must report.

// sinceSteps are the SQL steps of one attack, {source, target} each.
type sinceSteps struct {
	both       string    // run on both sides first (tables, rows)
	beforeMark [2]string // before the mark
	afterMark  [2]string // after the mark, before the comparison before the fence
	afterPre   [2]string // after that comparison, before Since (the fence)
}

func sinceDB(t *testing.T, src, dst *pgtest.Cluster, tables ...string) plan.Database {
	t.Helper()
	s, err := conninfo.Parse(src.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	d, err := conninfo.Parse(dst.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	db := plan.Database{Name: "postgres", Source: s, Target: d}
	for _, n := range tables {
		db.Tables = append(db.Tables, selection.Table{Database: "postgres", Schema: "public", Name: n})
	}
	return db
}

// sinceExec runs sql; ";;" separates statements that must run in
// transactions of their own.
func sinceExec(c *pgtest.Cluster, sql string) {
	for _, s := range strings.Split(sql, ";;") {
		if strings.TrimSpace(s) != "" {
			c.Exec("postgres", s)
		}
	}
}

// runSinceAttack runs the steps as cutover does (mark, one-pass verify,
// fence, Since) and returns both reports by table name.
func runSinceAttack(t *testing.T, src, dst *pgtest.Cluster, st sinceSteps, tables ...string) (before, after map[string]verify.TableReport) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	sinceExec(src, st.both)
	sinceExec(dst, st.both)
	sinceExec(src, st.beforeMark[0])
	sinceExec(dst, st.beforeMark[1])
	db := sinceDB(t, src, dst, tables...)
	mark, err := verify.MarkNow(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	sinceExec(src, st.afterMark[0])
	sinceExec(dst, st.afterMark[1])
	v := verify.New()
	v.Wait, v.Retries = 0, 0
	v.MaxDiffRows = 100_000
	v.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	pre, err := v.Database(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	for _, tr := range pre.Tables {
		// What compareBeforeFence refuses.
		if tr.Status == verify.StatusError || (tr.Status == verify.StatusMismatch && len(tr.Key) > 0 && !tr.Complete) {
			t.Fatalf("%s: the cutover would stop before the fence: %+v", tr.Name, tr)
		}
	}
	sinceExec(src, st.afterPre[0])
	sinceExec(dst, st.afterPre[1])
	post, err := v.Since(ctx, db, mark, pre)
	if err != nil {
		t.Fatal(err)
	}
	before, after = map[string]verify.TableReport{}, map[string]verify.TableReport{}
	for _, tr := range pre.Tables {
		before[tr.Name] = tr
	}
	for _, tr := range post.Tables {
		after[tr.Name] = tr
	}
	return before, after
}

// wantFullVerify checks Since against a full verify of the still sides:
// the check at the fence must find a difference exactly when verify does.
func wantFullVerify(t *testing.T, src, dst *pgtest.Cluster, after map[string]verify.TableReport, tables ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	v := verify.New()
	v.Wait = 0
	v.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	full, err := v.Database(ctx, sinceDB(t, src, dst, tables...))
	if err != nil {
		t.Fatal(err)
	}
	for _, tr := range full.Tables {
		got := after[tr.Name]
		if got.Status != tr.Status {
			t.Errorf("%s: Since says %s (%d rows named), a full verify at the fence says %s (%d rows named)", tr.Name, got.Status, got.DifferingRows, tr.Status, tr.DifferingRows)
		}
	}
}

// TestSinceAttackKeyAddedAfterVerify: a table without a key differs (a row
// wrong on the target since long before the cutover). The comparison before
// the fence names no row of a keyless table and lets it through ("compared
// whole at the fence"). A primary key is then added on the source (the
// fix init's own advice asks for), which rewrites no row and keeps the
// column list. Since must not take the key for one the comparison before
// used: it finds the row.
func TestSinceAttackKeyAddedAfterVerify(t *testing.T) {
	src, dst := pgtestPair(t)
	_, after := runSinceAttack(t, src, dst, sinceSteps{
		both:       "CREATE TABLE k (id int NOT NULL, v text); INSERT INTO k SELECT g, 'v' || g FROM generate_series(1, 1000) g; ALTER TABLE k REPLICA IDENTITY FULL",
		beforeMark: [2]string{"", "UPDATE k SET v = 'wrong' WHERE id = 5"},
		afterPre:   [2]string{"ALTER TABLE k ADD PRIMARY KEY (id)", "ALTER TABLE k ADD PRIMARY KEY (id)"},
	}, "k")
	if got := after["k"]; got.Status != verify.StatusMismatch {
		t.Errorf("k: row 5 differs (v 'v5' on the source, 'wrong' on the target), Since says %s: %+v", got.Status, got)
	}
	wantFullVerify(t, src, dst, after, "k")
}

// TestSinceAttackKeyReplacedAfterVerify: verify names a differing row by
// its primary key id; the primary key is then moved to another column of
// the same type (code = id + 100000) on both sides. The named key "11" is
// no code; Since must still find the row.
func TestSinceAttackKeyReplacedAfterVerify(t *testing.T) {
	src, dst := pgtestPair(t)
	ddl := "ALTER TABLE r DROP CONSTRAINT r_pkey; ALTER TABLE r ADD PRIMARY KEY (code)"
	before, after := runSinceAttack(t, src, dst, sinceSteps{
		both:       "CREATE TABLE r (id int PRIMARY KEY, code int NOT NULL, v text); INSERT INTO r SELECT g, g + 100000, 'v' || g FROM generate_series(1, 1000) g",
		beforeMark: [2]string{"", "UPDATE r SET v = 'wrong' WHERE id = 11"},
		afterPre:   [2]string{ddl, ddl},
	}, "r")
	if b := before["r"]; b.DifferingRows != 1 {
		t.Fatalf("r: the comparison before named %d rows, want 1: %+v", b.DifferingRows, b)
	}
	if got := after["r"]; got.Status != verify.StatusMismatch {
		t.Errorf("r: row id 11 differs, Since says %s: %+v", got.Status, got)
	}
	wantFullVerify(t, src, dst, after, "r")
}

// TestSinceAttackKeyWidenedAfterVerify: verify names a row by a one-column
// key; the key then gets a second column. A one-value key looked up by two
// columns would index out of range; Since must find the row instead. A
// panic would kill the process, so the comparison runs in a child test
// process.
func TestSinceAttackKeyWidenedAfterVerify(t *testing.T) {
	if os.Getenv("SEREN_LONG_TESTS") == "" && os.Getenv("SINCE_ATTACK_CHILD") == "" {
		t.Skip("make test-long (SEREN_LONG_TESTS=1): builds the test binary again; TestSinceAttackKeyWidenedCutover runs the same case through cutover")
	}
	if os.Getenv("SINCE_ATTACK_CHILD") == "" {
		src, dst := pgtestPair(t)
		for _, c := range []*pgtest.Cluster{src, dst} {
			c.Exec("postgres", "CREATE TABLE w (id int PRIMARY KEY, code int NOT NULL, v text); INSERT INTO w SELECT g, g, 'v' || g FROM generate_series(1, 1000) g")
		}
		dst.Exec("postgres", "UPDATE w SET v = 'wrong' WHERE id = 11")
		cmd := exec.Command(os.Args[0], "-test.run=^TestSinceAttackKeyWidenedAfterVerify$", "-test.count=1")
		cmd.Env = append(os.Environ(), "SINCE_ATTACK_CHILD=1", "SINCE_ATTACK_SRC="+src.DSN("postgres"), "SINCE_ATTACK_DST="+dst.DSN("postgres"))
		out, err := cmd.CombinedOutput()
		if err != nil || strings.Contains(string(out), "panic:") {
			t.Errorf("the check at the fence did not finish: %v\n%s", err, out)
		}
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := conninfo.Parse(os.Getenv("SINCE_ATTACK_SRC"))
	if err != nil {
		t.Fatal(err)
	}
	d, err := conninfo.Parse(os.Getenv("SINCE_ATTACK_DST"))
	if err != nil {
		t.Fatal(err)
	}
	db := plan.Database{Name: "postgres", Source: s, Target: d,
		Tables: []selection.Table{{Database: "postgres", Schema: "public", Name: "w"}}}
	mark, err := verify.MarkNow(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	v := verify.New()
	v.Wait, v.Retries, v.MaxDiffRows = 0, 0, 100_000
	v.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	pre, err := v.Database(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	for _, dsn := range []string{os.Getenv("SINCE_ATTACK_SRC"), os.Getenv("SINCE_ATTACK_DST")} {
		c, err := conninfo.Parse(dsn)
		if err != nil {
			t.Fatal(err)
		}
		conn, err := c.Connect(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, "ALTER TABLE w DROP CONSTRAINT w_pkey; ALTER TABLE w ADD PRIMARY KEY (id, code)"); err != nil {
			t.Fatal(err)
		}
		conn.Close(ctx)
	}
	after, err := v.Since(ctx, db, mark, pre)
	if err != nil {
		t.Fatal(err)
	}
	if after.Match() {
		t.Errorf("w: row 11 differs, Since says match: %+v", after.Tables)
	}
}

// TestSinceAttackTypeChangedAfterVerify: DDL run on the source only during
// the cutover (no --ddl-capture) that changes how every row of a table
// reads without writing any row: an enum value renamed, an attribute added
// to a composite type. No xmin moves and format_type of the columns stays;
// Since must still find every row different.
func TestSinceAttackTypeChangedAfterVerify(t *testing.T) {
	src, dst := pgtestPair(t)
	_, after := runSinceAttack(t, src, dst, sinceSteps{
		both: `CREATE TYPE mood AS ENUM ('sad', 'ok'); CREATE TYPE pt AS (x int, y int);
			CREATE TABLE e (id int PRIMARY KEY, m mood); INSERT INTO e SELECT g, 'ok' FROM generate_series(1, 100) g;
			CREATE TABLE c (id int PRIMARY KEY, p pt); INSERT INTO c SELECT g, ROW(g, g)::pt FROM generate_series(1, 100) g`,
		afterPre: [2]string{"ALTER TYPE mood RENAME VALUE 'ok' TO 'happy'; ALTER TYPE pt ADD ATTRIBUTE z int", ""},
	}, "e", "c")
	for _, n := range []string{"e", "c"} {
		if got := after[n]; got.Status != verify.StatusMismatch {
			t.Errorf("%s: every row reads differently on the source, Since says %s", n, got.Status)
		}
	}
	wantFullVerify(t, src, dst, after, "e", "c")
}

// TestSinceAttackColumnReplacedAfterVerify: a column dropped and added
// again with the same name and type on the source only (no --ddl-capture).
// ADD COLUMN without a volatile default rewrites no row, and the column
// list (names and types) is the same; every row's v is now NULL on the
// source and set on the target, and Since must say so.
func TestSinceAttackColumnReplacedAfterVerify(t *testing.T) {
	src, dst := pgtestPair(t)
	_, after := runSinceAttack(t, src, dst, sinceSteps{
		both:     "CREATE TABLE dr (id int PRIMARY KEY, v text); INSERT INTO dr SELECT g, 'v' || g FROM generate_series(1, 1000) g",
		afterPre: [2]string{"ALTER TABLE dr DROP COLUMN v; ALTER TABLE dr ADD COLUMN v text", ""},
	}, "dr")
	if got := after["dr"]; got.Status != verify.StatusMismatch {
		t.Errorf("dr: every row differs, Since says %s", got.Status)
	}
	wantFullVerify(t, src, dst, after, "dr")
}

// TestSinceAttackTargetWiderKey: the target's key column is wider than the
// source's (varchar(10) for varchar(3), as when the new server's schema
// was widened ahead of the switch) and holds an extra row 'abcdef' written
// since the mark. Cast to the source's varchar(3), the key would read
// 'abc' on both sides; Since must find the extra row, as a full verify
// does.
func TestSinceAttackTargetWiderKey(t *testing.T) {
	src, dst := pgtestPair(t)
	src.Exec("postgres", "CREATE TABLE wk (code varchar(3) PRIMARY KEY, v text)")
	dst.Exec("postgres", "CREATE TABLE wk (code varchar(10) PRIMARY KEY, v text)")
	_, after := runSinceAttack(t, src, dst, sinceSteps{
		both:     "INSERT INTO wk SELECT lpad(g::text, 3, '0'), 'v' || g FROM generate_series(1, 999) g; INSERT INTO wk VALUES ('abc', 'x')",
		afterPre: [2]string{"", "INSERT INTO wk VALUES ('abcdef', 'extra')"},
	}, "wk")
	if got := after["wk"]; got.Status != verify.StatusMismatch {
		t.Errorf("wk: 1000 rows on the source, 1001 on the target, Since says %s", got.Status)
	}
	wantFullVerify(t, src, dst, after, "wk")
}

// TestSinceAttackTargetDuplicateKey: the target table lacks the source's
// primary key (a target schema made by hand) and holds a second copy of a
// row written since the mark: 1001 rows on the target, 1000 on the
// source. Since (and a full verify) must name the copy.
func TestSinceAttackTargetDuplicateKey(t *testing.T) {
	src, dst := pgtestPair(t)
	src.Exec("postgres", "CREATE TABLE dup (id int PRIMARY KEY, v text)")
	dst.Exec("postgres", "CREATE TABLE dup (id int NOT NULL, v text)")
	_, after := runSinceAttack(t, src, dst, sinceSteps{
		both:     "INSERT INTO dup SELECT g, 'v' || g FROM generate_series(1, 1000) g",
		afterPre: [2]string{"UPDATE dup SET v = 'new' WHERE id = 5", "UPDATE dup SET v = 'new' WHERE id = 5; INSERT INTO dup VALUES (5, 'new')"},
	}, "dup")
	if got := after["dup"]; got.Status != verify.StatusMismatch {
		t.Errorf("dup: 1000 rows on the source, 1001 on the target, Since says %s", got.Status)
	}
	// A full verify at the fence misses it too (its leaf matches rows by
	// key text the same way); the old default, --check counts, did not.
	ctx := context.Background()
	v := verify.New()
	v.Wait = 0
	v.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	full, err := v.Database(ctx, sinceDB(t, src, dst, "dup"))
	if err != nil {
		t.Fatal(err)
	}
	if full.Match() {
		t.Errorf("dup: a full verify says match too: %+v", full.Tables)
	}
}

// TestSinceAttackTableSwappedAfterVerify: the reload-by-rename pattern on
// the source (a new copy of the table built earlier, swapped in by
// ALTER TABLE RENAME) without --ddl-capture: the target keeps the old
// rows. The swapped-in rows carry xmins from before the mark and the same
// keys; Since must still find every value different.
func TestSinceAttackTableSwappedAfterVerify(t *testing.T) {
	src, dst := pgtestPair(t)
	_, after := runSinceAttack(t, src, dst, sinceSteps{
		both:       "CREATE TABLE sw (id int PRIMARY KEY, v text); INSERT INTO sw SELECT g, 'v' || g FROM generate_series(1, 1000) g",
		beforeMark: [2]string{"CREATE TABLE sw_new (id int PRIMARY KEY, v text); INSERT INTO sw_new SELECT g, 'reloaded ' || g FROM generate_series(1, 1000) g", ""},
		afterPre:   [2]string{"ALTER TABLE sw RENAME TO sw_old; ALTER TABLE sw_new RENAME TO sw", ""},
	}, "sw")
	if got := after["sw"]; got.Status != verify.StatusMismatch {
		t.Errorf("sw: every row differs, Since says %s", got.Status)
	}
	wantFullVerify(t, src, dst, after, "sw")
}

// TestSinceAttackHolds: attacks that Since survives. Each table gets a
// real difference (want mismatch) or the same changes on both sides (want
// match) at awkward moments: savepoints and prepared transactions open
// across the mark, VACUUM FREEZE, VACUUM FULL and CLUSTER after the
// change, a partition key updated, TRUNCATE, keys of awkward types and
// names, a unique-index key, a key deleted and inserted again. The target
// server runs in another time zone. Since must agree with a full verify.
func TestSinceAttackHolds(t *testing.T) {
	settings := []string{"max_prepared_transactions = 10"}
	src := pgtest.Start(t, pgtest.Options{BinDir: os.Getenv("PG_SOURCE_BINDIR"), Settings: settings})
	dst := pgtest.Start(t, pgtest.Options{BinDir: os.Getenv("PG_TARGET_BINDIR"), Settings: append(settings, "timezone = 'Asia/Kolkata'")})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	plain := []string{"sp", "sp_src", "tp", "tp_src", "frz", "frz_eq", "vf", "cl", "tr", "tr_eq", "ri", "rf", "eq", "rw"}
	var ddl []string
	for _, n := range plain {
		ddl = append(ddl, "CREATE TABLE "+n+" (id int PRIMARY KEY, v text); INSERT INTO "+n+" SELECT g, 'v' || g FROM generate_series(1, 1000) g")
	}
	ddl = append(ddl,
		"ALTER TABLE rf REPLICA IDENTITY FULL",
		"CREATE TABLE part (id int, k int, v text, PRIMARY KEY (id, k)) PARTITION BY RANGE (k)",
		"CREATE TABLE part_a PARTITION OF part FOR VALUES FROM (0) TO (500)",
		"CREATE TABLE part_b PARTITION OF part FOR VALUES FROM (500) TO (2000)",
		"INSERT INTO part SELECT g, g % 500, 'v' || g FROM generate_series(1, 1000) g",
		"CREATE TABLE part_eq (LIKE part INCLUDING ALL) PARTITION BY RANGE (k)",
		"CREATE TABLE part_eq_a PARTITION OF part_eq FOR VALUES FROM (0) TO (500)",
		"CREATE TABLE part_eq_b PARTITION OF part_eq FOR VALUES FROM (500) TO (2000)",
		"INSERT INTO part_eq SELECT * FROM part",
		"CREATE TABLE ui (id int NOT NULL, v text); CREATE UNIQUE INDEX ui_id ON ui (id); ALTER TABLE ui REPLICA IDENTITY USING INDEX ui_id",
		"INSERT INTO ui SELECT g, 'v' || g FROM generate_series(1, 1000) g",
		"CREATE EXTENSION citext",
		`CREATE TABLE "Odd ""Keys""" (n numeric, ts timestamptz, "Ключ ""q""" text COLLATE "C", arr int[], ci citext, v text,
			PRIMARY KEY (n, ts, "Ключ ""q""", arr, ci))`,
		`INSERT INTO "Odd ""Keys""" SELECT g / 4.0, timestamptz '2024-03-10 01:59:59.123456+00' + g * interval '1 hour',
			E'q''"\\ ,()' || g, ARRAY[g, NULL, -g], 'Ci' || g, 'v' || g FROM generate_series(1, 1000) g`,
		`CREATE TABLE odd_eq (LIKE "Odd ""Keys""" INCLUDING ALL); INSERT INTO odd_eq SELECT * FROM "Odd ""Keys"""`,
		"CREATE TABLE seren_verify_row (id int PRIMARY KEY, seren_verify_row int, v text); INSERT INTO seren_verify_row SELECT g, g, 'v' FROM generate_series(1, 1000) g",
	)
	for _, c := range []*pgtest.Cluster{src, dst} {
		c.Exec("postgres", strings.Join(ddl, ";\n"))
	}
	tables := append(plain, "part", "part_eq", "ui", `Odd "Keys"`, "odd_eq", "seren_verify_row")
	db := sinceDB(t, src, dst, tables...)

	// Open across the mark: a savepoint's write on either side, a prepared
	// transaction on either side.
	sessTarget, sessSource := dst.Connect("postgres"), src.Connect("postgres")
	for _, q := range []string{"BEGIN", "SELECT txid_current()", "SAVEPOINT a", "UPDATE sp SET v = 'wrong' WHERE id = 3", "RELEASE a", "SAVEPOINT b"} {
		if _, err := sessTarget.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	for _, q := range []string{"BEGIN", "SAVEPOINT a", "UPDATE sp_src SET v = 'new' WHERE id = 3"} {
		if _, err := sessSource.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	dst.Exec("postgres", "BEGIN; UPDATE tp SET v = 'wrong' WHERE id = 4; PREPARE TRANSACTION 'tp'")
	src.Exec("postgres", "BEGIN; UPDATE tp_src SET v = 'new' WHERE id = 4; PREPARE TRANSACTION 'tp_src'")

	mark, err := verify.MarkNow(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	// Between the mark and the comparison before the fence.
	dst.Exec("postgres", "UPDATE frz SET v = 'wrong' WHERE id = 6")
	for _, c := range []*pgtest.Cluster{src, dst} {
		c.Exec("postgres", "UPDATE frz_eq SET v = 'new' WHERE id < 100; UPDATE eq SET v = 'new' WHERE id % 3 = 0")
	}
	dst.Exec("postgres", `UPDATE "Odd ""Keys""" SET v = 'wrong' WHERE n = 2.5`)

	v := verify.New()
	v.Wait, v.Retries, v.MaxDiffRows = 0, 0, 100_000
	v.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	pre, err := v.Database(ctx, db)
	if err != nil {
		t.Fatal(err)
	}

	// After it, before the fence.
	if _, err := sessTarget.Exec(ctx, "COMMIT"); err != nil {
		t.Fatal(err)
	}
	if _, err := sessSource.Exec(ctx, "COMMIT"); err != nil {
		t.Fatal(err)
	}
	dst.Exec("postgres", "COMMIT PREPARED 'tp'")
	src.Exec("postgres", "COMMIT PREPARED 'tp_src'")
	dst.Exec("postgres", "VACUUM (FREEZE) frz")
	for _, c := range []*pgtest.Cluster{src, dst} {
		c.Exec("postgres", "VACUUM (FREEZE) frz_eq")
		c.Exec("postgres", "UPDATE part_eq SET k = k + 500 WHERE id < 20; UPDATE eq SET v = 'newer' WHERE id % 5 = 0; DELETE FROM eq WHERE id % 7 = 0")
		c.Exec("postgres", "TRUNCATE tr_eq; INSERT INTO tr_eq SELECT g, 'v' || g FROM generate_series(1, 1000) g")
		c.Exec("postgres", "UPDATE odd_eq SET v = 'new' WHERE n < 50; UPDATE seren_verify_row SET v = 'new' WHERE id < 50")
	}
	dst.Exec("postgres", "UPDATE vf SET v = 'wrong' WHERE id = 7")
	dst.Exec("postgres", "VACUUM FULL vf")
	dst.Exec("postgres", "UPDATE cl SET v = 'wrong' WHERE id = 8")
	dst.Exec("postgres", "CLUSTER cl USING cl_pkey")
	src.Exec("postgres", "UPDATE part SET k = k + 500 WHERE id = 10")
	dst.Exec("postgres", "TRUNCATE tr; INSERT INTO tr SELECT g, CASE WHEN g = 9 THEN 'wrong' ELSE 'v' || g END FROM generate_series(1, 1000) g")
	dst.Exec("postgres", "DELETE FROM ri WHERE id = 12; INSERT INTO ri VALUES (12, 'wrong')")
	dst.Exec("postgres", "UPDATE rf SET v = 'wrong' WHERE id = 13")
	dst.Exec("postgres", "UPDATE ui SET v = 'wrong' WHERE id = 14")
	dst.Exec("postgres", "UPDATE seren_verify_row SET seren_verify_row = -1 WHERE id = 900")
	dst.Exec("postgres", "ALTER TABLE rw ALTER COLUMN v TYPE text USING CASE WHEN id = 15 THEN 'wrong' ELSE v END")

	post, err := v.Since(ctx, db, mark, pre)
	if err != nil {
		t.Fatal(err)
	}
	after := map[string]verify.TableReport{}
	for _, tr := range post.Tables {
		after[tr.Name] = tr
	}
	want := map[string]string{"frz_eq": verify.StatusMatch, "tr_eq": verify.StatusMatch, "part_eq": verify.StatusMatch,
		"eq": verify.StatusMatch, "odd_eq": verify.StatusMatch}
	for _, n := range tables {
		w, ok := want[n]
		if !ok {
			w = verify.StatusMismatch
		}
		if got := after[n]; got.Status != w {
			t.Errorf("%s: Since says %s, want %s: %+v", n, got.Status, w, got)
		}
	}
	wantFullVerify(t, src, dst, after, tables...)
}

// sinceNearWrap moves a stopped-and-restarted cluster's next transaction
// ID to a few thousand before 2^32, so that the 32-bit xmin wraps to small
// numbers between the mark and the fence.
func sinceNearWrap(t *testing.T, c *pgtest.Cluster) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(c.BinDir, "pg_resetwal")); err != nil {
		t.Skipf("no pg_resetwal in %s", c.BinDir)
	}
	// Freeze what exists, so nothing looks written in the future.
	c.Exec("template1", "VACUUM (FREEZE)")
	c.Exec("postgres", "VACUUM (FREEZE)")
	c.Stop("fast")
	asPostgres := func(name string, args ...string) {
		cmd := exec.Command(name, args...)
		if os.Geteuid() == 0 {
			cmd = exec.Command("runuser", append([]string{"-u", "postgres", "--", name}, args...)...)
		}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", name, err, out)
		}
	}
	// 2^32 - 2000; its pg_xact segment is 0FFF.
	asPostgres(c.BinDir+"/pg_resetwal", "-x", "4294965296", "-D", c.DataDir)
	asPostgres("dd", "if=/dev/zero", "of="+c.DataDir+"/pg_xact/0FFF", "bs=8192", "count=32")
	c.Restart()
}

// TestSinceAttackXidWraps: the 32-bit transaction IDs wrap between the mark
// (near 2^32) and the fence (small again). age() compares modulo 2^32, so
// a row written after the wrap is still "changed since", and rows written
// before the mark and frozen after the wrap are still unchanged.
func TestSinceAttackXidWraps(t *testing.T) {
	src, dst := pgtestPair(t)
	sinceNearWrap(t, src)
	sinceNearWrap(t, dst)
	consume := "DO $$ BEGIN FOR i IN 1..2500 LOOP PERFORM txid_current(); COMMIT; END LOOP; END $$"
	_, after := runSinceAttack(t, src, dst, sinceSteps{
		both: "CREATE TABLE wr (id int PRIMARY KEY, v text); INSERT INTO wr SELECT g, 'v' || g FROM generate_series(1, 1000) g;" +
			"CREATE TABLE wr_eq (id int PRIMARY KEY, v text); INSERT INTO wr_eq SELECT g, 'v' || g FROM generate_series(1, 1000) g",
		afterPre: [2]string{consume + ";; UPDATE wr_eq SET v = 'new' WHERE id < 10;; VACUUM (FREEZE) wr, wr_eq",
			consume + ";; UPDATE wr SET v = 'wrong' WHERE id = 5; UPDATE wr_eq SET v = 'new' WHERE id < 10;; VACUUM (FREEZE) wr, wr_eq"},
	}, "wr", "wr_eq")
	for _, c := range []*pgtest.Cluster{src, dst} {
		if x := c.QueryString("postgres", "SELECT max(xmin::text::bigint)::text FROM wr_eq WHERE id < 10"); len(x) > 6 {
			t.Fatalf("the xids did not wrap: %s", x)
		}
	}
	if got := after["wr"]; got.Status != verify.StatusMismatch {
		t.Errorf("wr: row 5 differs, Since says %s", got.Status)
	}
	if got := after["wr_eq"]; got.Status != verify.StatusMatch {
		t.Errorf("wr_eq: equal, Since says %s: %+v", got.Status, got)
	}
	wantFullVerify(t, src, dst, after, "wr", "wr_eq")
}

// TestSinceAttackManyChanged times Since against a full verify at the
// fence when every row changed since the mark (a long transaction open at
// the mark, or a busy table), with a two-column key: Since must not take
// more than twice as long (it compares such a table range by range).
// make test-long.
func TestSinceAttackManyChanged(t *testing.T) {
	if os.Getenv("SEREN_LONG_TESTS") == "" {
		t.Skip("make test-long (SEREN_LONG_TESTS=1)")
	}
	src, dst := pgtestPair(t)
	upd := "UPDATE big SET v = v || 'x'"
	started := time.Now()
	_, after := runSinceAttack(t, src, dst, sinceSteps{
		both:     "CREATE TABLE big (a int, b text, v text, PRIMARY KEY (a, b)); INSERT INTO big SELECT g / 10, 'b' || (g % 10), 'v' || g FROM generate_series(1, 1000000) g",
		afterPre: [2]string{upd, upd},
	}, "big")
	t.Logf("mark + verify + update + Since: %s", time.Since(started))
	if got := after["big"]; got.Status != verify.StatusMatch {
		t.Errorf("big: Since says %s", got.Status)
	}
	ctx := context.Background()
	v := verify.New()
	v.Wait = 0
	v.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	db := sinceDB(t, src, dst, "big")
	s := time.Now()
	if _, err := v.Database(ctx, db); err != nil {
		t.Fatal(err)
	}
	full := time.Since(s)
	mark, err := verify.MarkNow(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	pre, err := v.Database(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	s = time.Now()
	if _, err := v.Since(ctx, db, mark, pre); err != nil {
		t.Fatal(err)
	}
	t.Logf("Since with nothing changed %s", time.Since(s))
	src.Exec("postgres", upd)
	dst.Exec("postgres", upd)
	s = time.Now()
	if _, err := v.Since(ctx, db, mark, pre); err != nil {
		t.Fatal(err)
	}
	since := time.Since(s)
	s = time.Now()
	if _, err := v.Database(ctx, db); err != nil {
		t.Fatal(err)
	}
	t.Logf("full verify %s (again after the update %s), Since with every row changed %s", full, time.Since(s), since)
	if since > 2*time.Since(s) {
		t.Errorf("Since with every row changed took %s, more than twice a full verify", since)
	}
}

// TestSinceAttackKeyWidenedCutover is TestSinceAttackKeyWidenedAfterVerify
// through the command: a row differs on the target (verify names it before
// the fence), and the fence hook widens the source's primary key. The
// check at the fence must fail the cutover and run the unfence command.
func TestSinceAttackKeyWidenedCutover(t *testing.T) {
	src, dst := pgtestPair(t)
	prepareStreaming(t, src, dst, "kw", "CREATE TABLE acct (id int PRIMARY KEY, code int NOT NULL, v text)", "public.acct")
	src.Exec("kw", "INSERT INTO acct SELECT g, g, 'v' || g FROM generate_series(1, 100) g")
	catchUp(t, src, dst, "kw")
	dst.Exec("kw", "UPDATE acct SET v = 'wrong' WHERE id = 11")
	psql := filepath.Join(pgtest.DefaultBinDir, "psql") // the client; other majors come as servers only
	script := func(name, body string) string {
		path := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(path, []byte("#!/bin/sh\nset -e\n"+body), 0o755); err != nil {
			t.Fatal(err)
		}
		return path
	}
	fence := script("fence.sh", fmt.Sprintf("%s -X -q -v ON_ERROR_STOP=1 '%s' -c 'ALTER TABLE acct DROP CONSTRAINT acct_pkey, ADD PRIMARY KEY (id, code)'\n%s -X -q -v ON_ERROR_STOP=1 '%s' -c \"%s\"\n",
		psql, src.URL("postgres", "", "kw"), psql, src.URL("postgres", "", "postgres"), readOnlyHook("kw")))
	unfence := script("unfence.sh", fmt.Sprintf("%s -X -q -v ON_ERROR_STOP=1 '%s' -c 'ALTER DATABASE kw RESET default_transaction_read_only'\n",
		psql, src.URL("postgres", "", "postgres")))
	res := runCLI(t, []string{quickExit, "SEREN_FENCE=hook", "SEREN_FENCE_COMMAND=" + fence, "SEREN_UNFENCE_COMMAND=" + unfence},
		"cutover", "--yes", "--grace", "0s", "--source", src.URL("postgres", "", "kw"), "--target", dst.URL("postgres", "", "kw"))
	if res.Code != 1 || strings.Contains(res.Stderr, "panic:") {
		t.Errorf("cutover with a row that differs: exit %d, want 1 (a failed check)\n%s\n%s", res.Code, res.Stdout, res.Stderr)
	}
	if got := sourceReadOnly(src, "kw"); got != "off" {
		t.Errorf("source left read-only (%s) after a failed cutover", got)
	}
}
