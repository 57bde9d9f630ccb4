package tests

import (
	"context"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/serenorg/postgres-seren-replicator/tests/pgtest"
)

// cutoverRichSchema is cutoverSchema with what a migration holds on the
// target or a cutover could leave behind: tables owned by the
// application's role, a trigger that changes rows (held disabled in ordered
// mode), one the user disabled, a foreign key (held deferrable in ordered
// mode), and a sequence that no column owns, advanced by the trigger.
const cutoverRichSchema = cutoverSchema + `
ALTER TABLE hist ADD FOREIGN KEY (acct) REFERENCES acct (id);
CREATE SEQUENCE ticket_no;
CREATE FUNCTION stamp() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN NEW.v := NEW.v || ' #' || nextval('ticket_no'); RETURN NEW; END$$;
CREATE TRIGGER ev_stamp BEFORE INSERT ON ev FOR EACH ROW EXECUTE FUNCTION stamp();
CREATE TRIGGER ev_off BEFORE UPDATE ON ev FOR EACH ROW EXECUTE FUNCTION stamp();
ALTER TABLE ev DISABLE TRIGGER ev_off;
ALTER TABLE acct OWNER TO app; ALTER TABLE hist OWNER TO app; ALTER TABLE ev OWNER TO app;
ALTER SEQUENCE ticket_no OWNER TO app; ALTER FUNCTION stamp() OWNER TO app;`

// cutoverTables are the tables of cutoverSchema, all in the migration.
var cutoverTables = []string{"acct", "hist", "ev"}

// prepareCutover makes db on both clusters with cutoverRichSchema, ready
// for sync, and returns the target URL for the apply mode: replica (the
// superuser) or ordered (a role that is a member of the tables' owner and
// may not set session_replication_role, so the migration holds triggers
// and foreign keys).
func prepareCutover(t *testing.T, src, dst *pgtest.Cluster, db, mode string) string {
	t.Helper()
	src.CreateRole("app", "app-pw")
	dst.CreateRole("app", "app-pw")
	prepareStreaming(t, src, dst, db, cutoverRichSchema, "public.acct", "public.hist", "public.ev")
	if mode == "replica" {
		return dst.URL("postgres", "", db)
	}
	dst.CreateRole("applier", "applier-pw")
	dst.Exec(db, `GRANT app TO applier; GRANT USAGE, CREATE ON SCHEMA seren_replicator TO applier;
		GRANT ALL ON ALL TABLES IN SCHEMA seren_replicator TO applier;`)
	return dst.URL("applier", "applier-pw", db)
}

// writeProbe is an application writing to ev on the source every few
// milliseconds; it records its last commit and its first refused write.
type writeProbe struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	lastOK time.Time
	// refused is the first write that failed after one succeeded.
	refused time.Time
	why     error
	commits int
}

func startProbe(t *testing.T, c *pgtest.Cluster, db string) *writeProbe {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &writeProbe{cancel: cancel}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		var conn *pgx.Conn
		for ctx.Err() == nil {
			if conn == nil {
				var err error
				if conn, err = pgx.Connect(ctx, c.DSN(db)); err != nil {
					p.fail(err)
					time.Sleep(10 * time.Millisecond)
					continue
				}
			}
			_, err := conn.Exec(ctx, `INSERT INTO ev (v) VALUES ('probe')`)
			if err != nil {
				p.fail(err)
				conn.Close(context.Background())
				conn = nil
			} else {
				p.mu.Lock()
				p.lastOK, p.commits = time.Now(), p.commits+1
				p.mu.Unlock()
			}
			time.Sleep(10 * time.Millisecond)
		}
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	t.Cleanup(p.stop)
	return p
}

func (p *writeProbe) fail(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.refused.IsZero() && !p.lastOK.IsZero() {
		p.refused, p.why = time.Now(), err
	}
}

// stop ends the probe; it may be called more than once.
func (p *writeProbe) stop() {
	p.cancel()
	p.wg.Wait()
}

// quickExit is the environment of a cutover whose end the test times: a
// race-built binary otherwise sleeps a second before it exits.
const quickExit = "GORACE=atexit_sleep_ms=0"

// writePause returns the write pause a cutover printed.
func writePause(t *testing.T, stdout string) time.Duration {
	t.Helper()
	m := regexp.MustCompile(`write pause: (\S+)`).FindStringSubmatch(stdout)
	if m == nil {
		t.Fatalf("no write pause printed:\n%s", stdout)
	}
	d, err := time.ParseDuration(m[1])
	if err != nil {
		t.Fatalf("write pause %q: %v", m[1], err)
	}
	return d
}

// assertCutoverPause checks the printed write pause against the one the
// test measured: no longer than the run of cutover (started at start,
// ended at end), and, when the probe saw its writes refused (the fence
// came while it wrote), no shorter than the time from that refusal to
// the end, less a margin for printing and exiting (run with quickExit).
func assertCutoverPause(t *testing.T, stdout string, start, end time.Time, p *writeProbe) {
	t.Helper()
	pause := writePause(t, stdout)
	if pause <= 0 || pause > end.Sub(start) {
		t.Errorf("printed write pause %s, want within the %s cutover took", pause, end.Sub(start).Round(time.Millisecond))
	}
	if p == nil {
		return
	}
	p.stop()
	p.mu.Lock()
	refused, why, commits := p.refused, p.why, p.commits
	p.mu.Unlock()
	if refused.IsZero() || refused.Before(start) {
		t.Errorf("the probe's writes were not refused during the cutover (first refusal %v, cutover started %v)", refused, start)
		return
	}
	seen := end.Sub(refused)
	if seen > pause+500*time.Millisecond {
		t.Errorf("printed write pause %s, but the probe's writes were refused for %s until cutover ended (%v)", pause, seen.Round(time.Millisecond), why)
	}
	t.Logf("write pause printed %s; probe (%d commits) refused from %s after the start until the end: %s (%v)",
		pause, commits, refused.Sub(start).Round(time.Millisecond), seen.Round(time.Millisecond), why)
}

// assertCutoverState checks what a cutover hands over: every table equal
// to the source row for row (the source is fenced, so it is still at the
// fenced position), every sequence on the target at or past the source's,
// and, as on the source, the triggers' enabled states, identity columns,
// the foreign keys' timing, the owners of tables, sequences and functions,
// and nothing held for the migration.
func assertCutoverState(t *testing.T, src, dst *pgtest.Cluster, db string) {
	t.Helper()
	for _, tbl := range cutoverTables {
		if s, d := rowsMD5(src, db, tbl), rowsMD5(dst, db, tbl); s != d {
			t.Errorf("table %s: target %s, source %s (count:md5 of rows)", tbl, d, s)
		}
	}
	assertSameTables(t, src, dst, db, cutoverTables...)
	srcSeqs, dstSeqs := sequenceValues(t, src, db), sequenceValues(t, dst, db)
	if len(srcSeqs) == 0 {
		t.Errorf("no sequences on the source")
	}
	for name, s := range srcSeqs {
		d, ok := dstSeqs[name]
		if !ok || d < s {
			t.Errorf("sequence %s on the target is at %d (present %v), behind the source's %d", name, d, ok, s)
		}
	}
	for what, q := range catalogQueries {
		if s, d := src.QueryString(db, q), dst.QueryString(db, q); s != d {
			t.Errorf("%s differ after cutover:\nsource: %s\ntarget: %s", what, s, d)
		}
	}
	if got := dst.QueryString(db, "SELECT count(*) FROM seren_replicator.held"); got != "0" {
		t.Errorf("%s holds left on the target", got)
	}
}

// catalogQueries render, per database, what a cutover must leave on the
// target as it is on the source.
var catalogQueries = map[string]string{
	"triggers": `SELECT string_agg(format('%s.%s=%s', c.relname, t.tgname, t.tgenabled), ', ' ORDER BY c.relname, t.tgname)
		FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid WHERE c.relnamespace = 'public'::regnamespace AND NOT t.tgisinternal`,
	"owners": `SELECT string_agg(x, ', ' ORDER BY x) FROM (
		SELECT format('%s %s=%s', c.relkind, c.relname, pg_get_userbyid(c.relowner)) AS x FROM pg_class c
			WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'S', 'v', 'm', 'f')
		UNION ALL SELECT format('function %s=%s', p.proname, pg_get_userbyid(p.proowner)) FROM pg_proc p
			WHERE p.pronamespace = 'public'::regnamespace) o`,
	"identity columns": `SELECT string_agg(format('%s.%s=%s', c.relname, a.attname, a.attidentity), ', ' ORDER BY c.relname, a.attname)
		FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid WHERE c.relnamespace = 'public'::regnamespace AND a.attidentity <> ''`,
	"constraints": `SELECT string_agg(format('%s.%s=%s%s%s', c.relname, k.conname, k.contype, k.condeferrable, k.condeferred), ', ' ORDER BY c.relname, k.conname)
		FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid WHERE c.relnamespace = 'public'::regnamespace`,
	"privileges": `SELECT string_agg(format('%s=%s', c.relname, c.relacl), ', ' ORDER BY c.relname)
		FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'S')`,
}

// sequenceValues returns the last value of every sequence outside the
// tool's schema (0 for one never called).
func sequenceValues(t *testing.T, c *pgtest.Cluster, db string) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	list := c.QueryString(db, `SELECT string_agg(format('%s.%s=%s', schemaname, sequencename, coalesce(last_value, 0)), ',')
		FROM pg_sequences WHERE schemaname <> 'seren_replicator'`)
	for _, kv := range strings.Split(list, ",") {
		name, v, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Fatalf("sequence %s: %v", name, err)
		}
		out[name] = n
	}
	return out
}
