package tests

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/serenorg/postgres-seren-replicator/tests/pgtest"
)

// TestInteractive drives --interactive as a user would, on a
// pseudo-terminal: arrow keys, space, ctrl+a, typing a filter, esc, enter
// and Ctrl-C. It asserts on the screen and on what init then did to the
// target: included tables complete, excluded tables and databases absent,
// and nothing at all after a Ctrl-C.
func TestInteractive(t *testing.T) {
	src, dst := pgtest.StartPair(t)
	const pw = "Pty-Secret-5521"
	for _, db := range []string{"app", "legacy", "shop"} {
		src.Exec("postgres", "CREATE DATABASE "+db)
	}
	var logs []string
	for i := 1; i <= 12; i++ {
		logs = append(logs, fmt.Sprintf("event_log_%02d", i))
		src.Exec("app", fmt.Sprintf("CREATE TABLE event_log_%02d (id int PRIMARY KEY); INSERT INTO event_log_%02d SELECT generate_series(1, 10)", i, i))
	}
	src.Exec("app", `CREATE TABLE customers (id int PRIMARY KEY, name text);
		INSERT INTO customers SELECT g, 'c' || g FROM generate_series(1, 1000) g;
		CREATE TABLE orders (id int PRIMARY KEY, customer int REFERENCES customers, total numeric);
		INSERT INTO orders SELECT g, 1 + g % 1000, g * 1.5 FROM generate_series(1, 3000) g;
		ANALYZE`)
	src.Exec("shop", `CREATE TABLE items (id int PRIMARY KEY); INSERT INTO items SELECT generate_series(1, 50);
		CREATE SCHEMA sales; CREATE TABLE sales.refunds (id int PRIMARY KEY); INSERT INTO sales.refunds VALUES (1)`)
	src.Exec("legacy", `CREATE TABLE old (id int PRIMARY KEY); INSERT INTO old VALUES (1)`)
	source := src.URL(pgtest.SuperUser, pw, "postgres")
	target := dst.DSN("postgres")

	// nothingCreated checks that a canceled run left no trace on either side.
	nothingCreated := func(t *testing.T) {
		t.Helper()
		if n := dst.QueryString("postgres", `SELECT count(*) FROM pg_database WHERE datname IN ('app', 'legacy', 'shop')`); n != "0" {
			t.Errorf("%s databases created on the target", n)
		}
		for _, db := range []string{"app", "legacy", "shop"} {
			if n := src.QueryString(db, `SELECT (SELECT count(*) FROM pg_replication_slots) + (SELECT count(*) FROM pg_publication)`); n != "0" {
				t.Errorf("source %s: %s slots and publications created", db, n)
			}
		}
	}

	t.Run("without a terminal", func(t *testing.T) {
		for _, cmd := range []string{"validate", "init"} {
			res := runCLI(t, nil, cmd, "--source", source, "--target", target, "--interactive")
			if res.Code != 2 || !strings.Contains(res.Stderr, "--interactive needs a terminal") {
				t.Errorf("%s: exit %d, stderr:\n%s", cmd, res.Code, res.Stderr)
			}
			assertOneLineError(t, res)
		}
		res := runCLI(t, nil, "sync", "--source", source, "--target", target, "--interactive")
		if res.Code != 2 || !strings.Contains(res.Stderr, "unknown flag --interactive") {
			t.Errorf("sync --interactive: exit %d, stderr:\n%s", res.Code, res.Stderr)
		}
		nothingCreated(t)
	})

	t.Run("Ctrl-C at the database list", func(t *testing.T) {
		term := startTerminal(t, "init", "--interactive", "--source", source, "--target", target)
		screen := term.waitFor("Databases to replicate", "(3 on the source)", "> [ ] app", "14 tables", "[ ] legacy", "1 table", "[ ] shop", "0 of 3 selected", "ctrl+c cancel")
		if !strings.Contains(screen, "MiB") {
			t.Errorf("no database sizes:\n%s", screen)
		}
		term.send(keySpace, keyCtrlC)
		code, out := term.wait()
		if code != 130 || !strings.Contains(out, "interrupted; nothing was changed") {
			t.Errorf("exit %d, want 130; output:\n%s", code, out)
		}
		term.restored()
		nothingCreated(t)
	})

	t.Run("Ctrl-C at the table list", func(t *testing.T) {
		term := startTerminal(t, "validate", "--interactive", "--source", source, "--target", target)
		term.waitFor("Databases to replicate")
		term.send(keyDown, keySpace, keyEnter)
		term.waitFor("Tables of legacy to EXCLUDE", "public.old")
		term.send(keyCtrlC)
		if code, out := term.wait(); code != 130 || strings.Contains(out, "STATUS") {
			t.Errorf("exit %d, want 130 before any check; output:\n%s", code, out)
		}
	})

	t.Run("SIGINT from elsewhere while the lists show", func(t *testing.T) {
		term := startTerminal(t, "init", "--interactive", "--source", source, "--target", target)
		term.waitFor("Databases to replicate")
		if err := term.cmd.Process.Signal(os.Interrupt); err != nil {
			t.Fatal(err)
		}
		code, out := term.wait()
		if code != 130 || !strings.Contains(out, "interrupted; nothing was changed") {
			t.Errorf("exit %d, want 130; output:\n%s", code, out)
		}
		term.restored()
		nothingCreated(t)
	})

	t.Run("Ctrl-C at init's confirmation", func(t *testing.T) {
		term := startTerminal(t, "init", "--source", source, "--target", target, "--include-databases", "legacy")
		term.waitFor("Proceed with replication? [y/N]")
		term.send(keyCtrlC)
		code, out := term.wait()
		if code != 130 || !strings.Contains(out, "interrupted; nothing was changed") {
			t.Errorf("exit %d, want 130; output:\n%s", code, out)
		}
		nothingCreated(t)
	})

	t.Run("n at the summary", func(t *testing.T) {
		term := startTerminal(t, "init", "--interactive", "--source", source, "--target", target)
		term.waitFor("Databases to replicate")
		term.send(keyDown, keySpace, keyEnter)
		term.waitFor("Tables of legacy to EXCLUDE")
		term.send(keyEnter)
		term.waitFor("Proceed with this configuration? [Y/n]", "legacy  all 1 table")
		term.send("n")
		if code, out := term.wait(); code != 1 || !strings.Contains(out, "cancelled; nothing was changed") {
			t.Errorf("exit %d, want 1; output:\n%s", code, out)
		}
		nothingCreated(t)
	})

	t.Run("flags given with --interactive narrow the lists and stay in the command", func(t *testing.T) {
		for _, tc := range []struct {
			exclude, want, unwanted string
		}{
			// The pattern still matches a table of the chosen database: kept.
			{exclude: "app.public.event_log_*", want: "--include-databases app --exclude-tables 'app.public.event_log_*'\n"},
			// It matched only a table of a database left out, where it
			// would match nothing: every table is named instead.
			{exclude: "*.old", want: "--include-databases app\n", unwanted: "*.old"},
		} {
			term := startTerminal(t, "validate", "--interactive", "--source", source, "--target", target, "--exclude-tables", tc.exclude)
			screen := term.waitFor("Databases to replicate")
			if tc.unwanted == "" && !strings.Contains(screen, "2 tables") {
				t.Errorf("--exclude-tables %s: the list does not count 2 tables of app:\n%s", tc.exclude, screen)
			}
			term.send(keySpace, keyEnter)
			term.waitFor("Tables of app to EXCLUDE")
			term.send(keyEnter)
			term.waitFor("Proceed with this configuration? [Y/n]")
			term.send("y")
			code, out := term.wait()
			out = strings.ReplaceAll(out, "\r", "")
			if (code != 0 && code != 1) || !strings.Contains(out, "STATUS") || !strings.Contains(out, tc.want) ||
				tc.unwanted != "" && strings.Contains(out, tc.unwanted+"'") {
				t.Errorf("--exclude-tables %s: exit %d, want the checks and %q; output:\n%s", tc.exclude, code, tc.want, out)
			}
		}
	})

	t.Run("validate --json: the screens on stderr, stdout is the report alone", func(t *testing.T) {
		var stdout bytes.Buffer
		term := startTerminalStdout(t, &stdout, "validate", "--interactive", "--json", "--source", source, "--target", target)
		term.waitFor("Databases to replicate")
		term.send(keyDown, keySpace, keyEnter)
		term.waitFor("Tables of legacy to EXCLUDE")
		term.send(keyEnter)
		term.waitFor("Proceed with this configuration? [Y/n]")
		term.send("y")
		code, out := term.wait()
		var report struct {
			OK     bool              `json:"ok"`
			Checks []json.RawMessage `json:"checks"`
		}
		if err := json.Unmarshal(stdout.Bytes(), &report); err != nil || len(report.Checks) == 0 {
			t.Errorf("stdout is not the JSON report (%v):\n%s", err, stdout.String())
		}
		if code != 0 && code != 1 || !strings.Contains(out, "--include-databases legacy") || strings.Contains(out, `"checks"`) {
			t.Errorf("exit %d; terminal:\n%s", code, out)
		}
	})

	t.Run("init copies the choice", func(t *testing.T) {
		term := startTerminal(t, "init", "--interactive", "--source", source, "--target", target)
		term.waitFor("Databases to replicate")
		// app and shop; legacy stays out.
		term.send(keySpace, keyDown, keyDown, keySpace)
		term.waitFor("[x] app", "[ ] legacy", "> [x] shop", "2 of 3 selected")
		term.send(keyEnter)
		term.waitFor("Tables of app to EXCLUDE", "(database 1 of 2)", "> [ ] public.customers", "~1,000 rows", "~3,000 rows", "excluding 0 of 14 tables")
		// Every log table at once: a filter, then ctrl+a on what it shows.
		term.send("log")
		screen := term.waitFor("filter: log", "(12 of 14 shown")
		if strings.Contains(screen, "public.customers") {
			t.Errorf("the filter shows customers:\n%s", screen)
		}
		term.send(keyCtrlA)
		term.waitFor("excluding 12 of 14 tables", "[x] public.event_log_01")
		term.send(keyEsc)
		term.waitFor("type to filter", "[ ] public.customers", "[ ] public.orders")
		term.send(keyEnter)
		term.waitFor("Tables of shop to EXCLUDE", "(database 2 of 2)", "> [ ] public.items", "[ ] sales.refunds")
		term.send(keyDown, keySpace)
		term.waitFor("> [x] sales.refunds", "excluding 1 of 2 tables")
		term.send(keyEnter)
		screen = term.waitFor("Summary", "Proceed with this configuration? [Y/n]")
		for _, want := range []string{"Will be replicated:", "app   2 of 14 tables (12 excluded)", "shop  1 of 2 tables (1 excluded)",
			"Will not be replicated:", "legacy  (database", "app.public.event_log_01  (table", "… and 5 more"} {
			if !strings.Contains(screen, want) {
				t.Errorf("summary lacks %q:\n%s", want, screen)
			}
		}
		term.send(keyEnter)
		code, out := term.wait()
		if code != 0 {
			t.Fatalf("exit %d; output:\n%s", code, out)
		}
		var excluded []string
		for _, l := range logs {
			excluded = append(excluded, "app.public."+l)
		}
		excluded = append(excluded, "shop.sales.refunds")
		wantCommand := "--include-databases app,shop --exclude-tables " + strings.Join(excluded, ",")
		for _, want := range []string{"Proceed with this configuration? [Y/n] y", "To make this choice without --interactive:",
			"postgres-seren-replicator init --source 'postgres://postgres:xxxxx@", wantCommand, "Init is complete"} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
		if strings.Contains(out, pw) || strings.Contains(out, "--interactive --") {
			t.Errorf("the password or --interactive is in the output:\n%s", out)
		}
		if strings.Contains(out, "Proceed with replication? [y/N]") {
			t.Errorf("init asked again after the summary was confirmed:\n%s", out)
		}
		assertSameRows(t, src, dst, "app", "app", []string{"customers", "orders"})
		assertSameRows(t, src, dst, "shop", "shop", []string{"items"})
		for db, tables := range map[string][]string{"app": logs, "shop": {"sales.refunds"}} {
			for _, tb := range tables {
				if got := dst.QueryString(db, `SELECT coalesce(to_regclass($1)::text, 'absent')`, tb); got != "absent" {
					t.Errorf("excluded table %s.%s exists on the target", db, tb)
				}
			}
		}
		if n := dst.QueryString("postgres", `SELECT count(*) FROM pg_database WHERE datname = 'legacy'`); n != "0" {
			t.Errorf("the database left out was created on the target")
		}
		if n := src.QueryString("legacy", `SELECT count(*) FROM pg_replication_slots WHERE database = 'legacy'`); n != "0" {
			t.Errorf("a slot was created for the database left out")
		}

		// cleanup's [y/N] takes Ctrl-C the same way, and drops nothing.
		term = startTerminal(t, "cleanup", "--source", source, "--target", target, "--include-databases", "app")
		term.waitFor("Continue? [y/N]")
		term.send(keyCtrlC)
		if code, out := term.wait(); code != 130 || !strings.Contains(out, "interrupted; nothing was changed") {
			t.Errorf("cleanup: exit %d, want 130; output:\n%s", code, out)
		}
		if n := src.QueryString("app", `SELECT count(*) FROM pg_replication_slots WHERE database = 'app'`); n != "1" {
			t.Errorf("cleanup interrupted at its question left %s slots of app, want 1", n)
		}
	})
}
