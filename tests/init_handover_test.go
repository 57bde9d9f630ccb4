package tests

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/serenorg/postgres-seren-replicator/tests/pgtest"
)

// TestInitHandoverIsExact runs inserts and updates on the source before,
// during and after init, then replays the slot's changes from the
// checkpoint (decoded with test_decoding from a copy of the slot) over the
// copied rows. Every change must fit: no insert of a row the copy already
// has, no update of a row it lacks, and the result must equal the source.
// That is the property sync relies on: the copy ends exactly where the
// stream begins.
func TestInitHandoverIsExact(t *testing.T) {
	rows := 20000
	if os.Getenv("SEREN_LONG_TESTS") != "" {
		rows = 500000
	}
	src, dst := pgtest.StartPair(t)
	src.Exec("postgres", "CREATE DATABASE live")
	src.Exec("live", fmt.Sprintf(`CREATE TABLE items (id bigint PRIMARY KEY, v text NOT NULL);
		INSERT INTO items SELECT i, 'v' || i FROM generate_series(1, %d) i`, rows))
	dst.Exec("postgres", "CREATE DATABASE live")

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var writes int
	var writeErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		conn, err := pgx.Connect(context.Background(), src.DSN("live"))
		if err != nil {
			writeErr = err
			return
		}
		defer conn.Close(context.Background())
		for i := 1; ctx.Err() == nil; i++ {
			_, err := conn.Exec(context.Background(), `INSERT INTO items VALUES ($1, $2)`, int64(rows+i), fmt.Sprint("n", rows+i))
			if err == nil {
				_, err = conn.Exec(context.Background(), `UPDATE items SET v = $2 WHERE id = $1`, int64(1+i%rows), fmt.Sprint("u", i))
			}
			if err != nil {
				writeErr = err
				return
			}
			writes = i
		}
	}()
	time.Sleep(300 * time.Millisecond) // writes before the slot exists belong to the copy
	res := runCLI(t, nil, initArgs(src, dst, "live", "live", "--jobs", "2", "--chunk-bytes", "131072")...)
	time.Sleep(300 * time.Millisecond)
	cancel()
	wg.Wait()
	if res.Code != 0 {
		t.Fatalf("init exit code %d\nstdout:\n%s\nstderr:\n%s", res.Code, res.Stdout, res.Stderr)
	}
	if writeErr != nil {
		t.Fatalf("writer: %v", writeErr)
	}
	t.Logf("%d insert+update pairs ran around init", writes)

	checkpoint := dst.QueryString("live", `SELECT end_lsn FROM seren_replicator.checkpoint WHERE slot_name = 'seren_live'`)
	slotPoint := src.QueryString("live", `SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'seren_live'`)
	if checkpoint == "" || checkpoint != slotPoint {
		t.Fatalf("checkpoint %q, slot's consistent point %q", checkpoint, slotPoint)
	}

	// The copy, as sync would find it.
	state := map[int64]string{}
	conn := dst.Connect("live")
	rs, err := conn.Query(context.Background(), `SELECT id, v FROM items`)
	if err != nil {
		t.Fatal(err)
	}
	for rs.Next() {
		var id int64
		var v string
		if err := rs.Scan(&id, &v); err != nil {
			t.Fatal(err)
		}
		state[id] = v
	}
	if rs.Err() != nil {
		t.Fatal(rs.Err())
	}
	copied := len(state)

	// The stream from the checkpoint, decoded as text.
	src.Exec("live", `SELECT pg_copy_logical_replication_slot('seren_live', 'handover_check', false, 'test_decoding')`)
	sconn := src.Connect("live")
	changes, err := sconn.Query(context.Background(), `SELECT data FROM pg_logical_slot_peek_changes('handover_check', NULL, NULL)`)
	if err != nil {
		t.Fatal(err)
	}
	change := regexp.MustCompile(`^table public\.items: (INSERT|UPDATE): id\[bigint\]:(\d+) v\[text\]:'([^']*)'$`)
	streamed := 0
	for changes.Next() {
		var data string
		if err := changes.Scan(&data); err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(data, "BEGIN") || strings.HasPrefix(data, "COMMIT") {
			continue
		}
		m := change.FindStringSubmatch(data)
		if m == nil {
			t.Fatalf("unexpected change %q", data)
		}
		id, _ := strconv.ParseInt(m[2], 10, 64)
		_, have := state[id]
		switch {
		case m[1] == "INSERT" && have:
			t.Fatalf("row %d is in the copy and inserted again by the stream: the handover overlaps", id)
		case m[1] == "UPDATE" && !have:
			t.Fatalf("row %d is updated by the stream but missing from the copy: the handover has a gap", id)
		}
		state[id] = m[3]
		streamed++
	}
	if changes.Err() != nil {
		t.Fatal(changes.Err())
	}
	src.Exec("live", `SELECT pg_drop_replication_slot('handover_check')`)
	t.Logf("copied %d rows, replayed %d changes", copied, streamed)
	if streamed == 0 {
		t.Errorf("no change was written after the snapshot: the test proves nothing about the handover")
	}

	final := map[int64]string{}
	rs, err = sconn.Query(context.Background(), `SELECT id, v FROM items`)
	if err != nil {
		t.Fatal(err)
	}
	for rs.Next() {
		var id int64
		var v string
		if err := rs.Scan(&id, &v); err != nil {
			t.Fatal(err)
		}
		final[id] = v
	}
	if len(final) != len(state) {
		t.Fatalf("copy + stream has %d rows, source %d", len(state), len(final))
	}
	for id, v := range final {
		if state[id] != v {
			t.Fatalf("row %d: copy + stream %q, source %q", id, state[id], v)
		}
	}
}

// TestInitNonSuperuserTarget runs init as a target role without superuser
// (CREATEDB and CREATEROLE only, as on managed services): it must finish,
// report what it skipped, copy every row, and leave each object owned by its
// source owner where it can become that role, so the application reads its
// data after cutover; what it cannot hand over is printed as SQL.
func TestInitNonSuperuserTarget(t *testing.T) {
	src, dst := pgtest.StartPair(t)
	src.Exec("postgres", "CREATE DATABASE app")
	src.Exec("app", `
		CREATE ROLE owner_role NOLOGIN;
		CREATE ROLE admin_role SUPERUSER REPLICATION NOLOGIN;
		CREATE EXTENSION hstore;
		CREATE TABLE accounts (id int PRIMARY KEY, attrs hstore, note text);
		ALTER TABLE accounts OWNER TO owner_role;
		GRANT SELECT ON accounts TO admin_role;
		CREATE TABLE entries (id bigserial PRIMARY KEY, account int REFERENCES accounts (id), amount numeric);
		INSERT INTO accounts SELECT i, hstore('i', i::text), 'note ' || i FROM generate_series(1, 200) i;
		INSERT INTO entries (account, amount) SELECT 1 + i % 200, i / 3.0 FROM generate_series(1, 3000) i;
		SELECT lo_from_bytea(5555, 'blob'::bytea);
		ALTER LARGE OBJECT 5555 OWNER TO owner_role;
		CREATE FUNCTION total(a int) RETURNS numeric LANGUAGE sql AS 'SELECT sum(amount) FROM entries WHERE account = a';
		CREATE ROLE app_user LOGIN PASSWORD 'app-user-pw';
		CREATE SCHEMA sales AUTHORIZATION app_user;
		CREATE TABLE sales.orders (id int PRIMARY KEY, total numeric);
		ALTER TABLE sales.orders OWNER TO app_user;
		INSERT INTO sales.orders SELECT g, g FROM generate_series(1, 50) g;
		CREATE TYPE sales.state AS ENUM ('open', 'closed'); ALTER TYPE sales.state OWNER TO app_user;
		CREATE FUNCTION sales.order_count() RETURNS bigint LANGUAGE sql AS 'SELECT count(*) FROM sales.orders';
		ALTER FUNCTION sales.order_count() OWNER TO app_user;
	`)
	dst.CreateRole("migrator", "migrator-secret", "CREATEDB", "CREATEROLE")

	res := runCLI(t, nil, "init", "--yes", "--source", src.DSN("app"), "--target", dst.URL("migrator", "migrator-secret", "app"))
	if res.Code != 0 {
		t.Fatalf("init exit code %d\nstdout:\n%s\nstderr:\n%s", res.Code, res.Stdout, res.Stderr)
	}
	t.Logf("stderr:\n%s", res.Stderr)
	for _, want := range []string{"admin_role created without SUPERUSER, REPLICATION", "not a superuser", "owner of 1 large objects not restored",
		`ALTER TABLE public.entries OWNER TO \"postgres\";`} {
		if !strings.Contains(res.Stderr, want) {
			t.Errorf("stderr does not report %q", want)
		}
	}
	if strings.Contains(res.Stdout+res.Stderr, "migrator-secret") {
		t.Errorf("the password appears in the output")
	}
	assertSameRows(t, src, dst, "app", "app", []string{"accounts", "entries"})
	owners := `SELECT string_agg(x, ' ' ORDER BY x) FROM (
		SELECT tablename || '=' || tableowner AS x FROM pg_tables WHERE tablename IN ('accounts', 'orders')
		UNION ALL SELECT nspname || '=' || pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'sales'
		UNION ALL SELECT typname || '=' || pg_get_userbyid(typowner) FROM pg_type WHERE typname = 'state'
		UNION ALL SELECT proname || '=' || pg_get_userbyid(proowner) FROM pg_proc WHERE proname = 'order_count') s`
	if got, want := dst.QueryString("app", owners), src.QueryString("app", owners); got != want {
		t.Errorf("owners on the target %q, want the source's %q", got, want)
	}
	// The application role reads its data on the target.
	app, err := pgx.Connect(context.Background(), dst.URL("app_user", "app-user-pw", "app"))
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close(context.Background())
	var n int
	if err := app.QueryRow(context.Background(), "SELECT sales.order_count()").Scan(&n); err != nil || n != 50 {
		t.Errorf("app_user on the target: %d orders, %v", n, err)
	}
	// The migration role still owns (through membership) what sync changes.
	if got := dst.QueryString("app", `SELECT pg_has_role('migrator', 'app_user', 'USAGE')`); got != "true" {
		t.Errorf("migrator cannot act as the tables' owner")
	}
	if got := dst.QueryString("app", `SELECT encode(lo_get(5555), 'escape')`); got != "blob" {
		t.Errorf("large object 5555 = %q", got)
	}
	if got := dst.QueryString("app", `SELECT last_value FROM entries_id_seq`); got != "3000" {
		t.Errorf("entries_id_seq = %s, want 3000", got)
	}
	if !strings.Contains(res.Stdout, "--target 'postgres://migrator:xxxxx@") {
		t.Errorf("next command does not show the redacted target:\n%s", res.Stdout)
	}
}

// TestInitThenSyncCatchUp is the whole handover with the real streamer:
// inserts, updates and deletes run on the source throughout init; sync
// --catch-up from init's checkpoint must then leave the target equal to the
// source, every change applied exactly once.
func TestInitThenSyncCatchUp(t *testing.T) {
	src, dst := pgtest.StartPair(t)
	src.Exec("postgres", "CREATE DATABASE flow")
	src.Exec("flow", `CREATE TABLE items (id bigint PRIMARY KEY, v text NOT NULL, n int NOT NULL DEFAULT 0);
		CREATE TABLE log (id bigserial PRIMARY KEY, item bigint, at timestamptz DEFAULT now());
		INSERT INTO items SELECT i, 'v' || i FROM generate_series(1, 20000) i`)
	dst.Exec("postgres", "CREATE DATABASE flow")

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var writeErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		conn, err := pgx.Connect(context.Background(), src.DSN("flow"))
		if err != nil {
			writeErr = err
			return
		}
		defer conn.Close(context.Background())
		for i := int64(1); ctx.Err() == nil; i++ {
			batch := &pgx.Batch{}
			batch.Queue(`INSERT INTO items (id, v) VALUES ($1, 'new')`, 100000+i)
			batch.Queue(`UPDATE items SET n = n + 1, v = v || '+' WHERE id = $1`, 1+i%20000)
			batch.Queue(`DELETE FROM items WHERE id = $1`, 20000-i%20000)
			batch.Queue(`INSERT INTO log (item) VALUES ($1)`, i)
			if err := conn.SendBatch(context.Background(), batch).Close(); err != nil {
				writeErr = err
				return
			}
		}
	}()
	time.Sleep(200 * time.Millisecond)
	res := runCLI(t, nil, initArgs(src, dst, "flow", "flow", "--jobs", "2", "--chunk-bytes", "131072")...)
	time.Sleep(200 * time.Millisecond)
	cancel()
	wg.Wait()
	if res.Code != 0 {
		t.Fatalf("init exit code %d\nstdout:\n%s\nstderr:\n%s", res.Code, res.Stdout, res.Stderr)
	}
	if writeErr != nil {
		t.Fatalf("writer: %v", writeErr)
	}
	catchUp(t, src, dst, "flow")
	assertSameRows(t, src, dst, "flow", "flow", []string{"items", "log"})
}
