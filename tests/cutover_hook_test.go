package tests

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/serenorg/postgres-seren-replicator/tests/pgtest"
)

// hookScript writes an executable shell script that runs sql with psql on
// the postgres database of c (a fenced database takes no ALTER DATABASE),
// then the shell lines in extra, and returns its path.
func hookScript(t *testing.T, c *pgtest.Cluster, name, sql string, extra ...string) string {
	t.Helper()
	body := fmt.Sprintf("#!/bin/sh\nset -e\n%s -X -q -v ON_ERROR_STOP=1 '%s' -c \"%s\"\n%s\n",
		filepath.Join(c.BinDir, "psql"), c.URL("postgres", "", "postgres"), sql, strings.Join(extra, "\n"))
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// readOnlyHook is what a user's fence hook might do: make the database
// read-only and end the application's sessions (the tool's own sessions
// carry its application name).
func readOnlyHook(db string) string {
	return fmt.Sprintf(`ALTER DATABASE %s SET default_transaction_read_only = on; SELECT count(pg_terminate_backend(pid)) AS ended FROM pg_stat_activity WHERE datname = '%s' AND pid <> pg_backend_pid() AND backend_type = 'client backend' AND application_name NOT LIKE 'postgres-seren-replicator%%'`, db, db)
}

func sourceReadOnly(c *pgtest.Cluster, db string) string {
	return c.QueryString(db, "SELECT current_setting('default_transaction_read_only')")
}

// --fence=hook under a write workload, without a daemon, in ordered mode:
// the user's command stops the writes (its output is shown), cutover checks
// that none is in flight, drains, and the target ends equal to the source,
// with what the migration held put back.
func TestCutoverWithAHookFence(t *testing.T) {
	src, dst := pgtestPair(t)
	target := prepareCutover(t, src, dst, "hk", "ordered")
	fence := hookScript(t, src, "fence.sh", readOnlyHook("hk"), "echo application paused")
	w := startWorkload(t, src, "hk", 2)
	probe := startProbe(t, src, "hk")
	time.Sleep(2 * time.Second)
	start := time.Now()
	res := runCLI(t, []string{quickExit, "SEREN_FENCE=hook", "SEREN_FENCE_COMMAND=" + fence},
		"cutover", "--yes", "--grace", "1s", "--source", src.URL("postgres", "", "hk"), "--target", target)
	end := time.Now()
	txns := w.stop()
	if res.Code != 0 {
		t.Fatalf("cutover --fence=hook: exit %d\n%s\n%s", res.Code, res.Stdout, res.Stderr)
	}
	t.Logf("%d workload transactions; cutover took %s:\n%s", txns, end.Sub(start), res.Stdout)
	for _, want := range []string{"fence-command done, no write in flight", "recheck", "drain", "compared one by one", "write pause:", "stays fenced by --fence-command"} {
		if !strings.Contains(res.Stdout, want) {
			t.Errorf("cutover output lacks %q:\n%s", want, res.Stdout)
		}
	}
	assertCutoverPause(t, res.Stdout, start, end, probe)
	if !strings.Contains(res.Stderr, "fence-command: application paused") {
		t.Errorf("the fence command's output is not shown:\n%s", res.Stderr)
	}
	if got := sourceReadOnly(src, "hk"); got != "on" {
		t.Errorf("source read-only = %s after the hook, want on", got)
	}
	assertCutoverState(t, src, dst, "hk")
}

// Every step after the fence fails in turn, and each time the source ends
// writable, the output says everything is as before, and the migration
// still works: the last cutover, with the target fixed, succeeds and
// carries every write made between the failures.
func TestCutoverFailsAtEachStepAndUnfences(t *testing.T) {
	src, dst := pgtestPair(t)
	prepareStreaming(t, src, dst, "inj", cutoverSchema, "public.acct", "public.hist", "public.ev")
	src.Exec("inj", `INSERT INTO acct SELECT g, g, NULL FROM generate_series(1, 200) g; INSERT INTO ev (v) VALUES ('x')`)
	catchUp(t, src, dst, "inj")
	marker := filepath.Join(t.TempDir(), "unfenced")
	fence := hookScript(t, src, "fence.sh", `ALTER DATABASE inj SET default_transaction_read_only = on`)
	unfence := hookScript(t, src, "unfence.sh", `ALTER DATABASE inj RESET default_transaction_read_only`, "echo unfenced >> "+marker)
	failing := hookScript(t, src, "fail.sh", `ALTER DATABASE inj SET default_transaction_read_only = on`, "echo pgbouncer refused PAUSE >&2", "exit 3")
	base := []string{"cutover", "--yes", "--grace", "0s", "--source", src.URL("postgres", "", "inj"), "--target", dst.URL("postgres", "", "inj")}
	hook := func(cmd string, extra ...string) []string {
		return append(append(append([]string{}, base...), "--fence", "hook", "--fence-command", cmd, "--unfence-command", unfence), extra...)
	}
	write := 0
	fails := func(name string, args []string, code int, want ...string) {
		t.Helper()
		write++
		src.Exec("inj", `INSERT INTO hist (acct, delta) VALUES ($1, 1)`, write)
		res := runCLI(t, nil, args...)
		if res.Code != code {
			t.Errorf("%s: exit %d, want %d\n%s\n%s", name, res.Code, code, res.Stdout, res.Stderr)
		}
		for _, w := range append(want, "the source is writable again", "the migration goes on as before") {
			if !strings.Contains(res.Stderr, w) {
				t.Errorf("%s: output lacks %q:\n%s", name, w, res.Stderr)
			}
		}
		if got := sourceReadOnly(src, "inj"); got != "off" {
			t.Errorf("%s: the source was left read-only", name)
		}
		if got := dst.QueryString("inj", "SELECT count(*) FROM seren_replicator.held"); got == "0" {
			t.Errorf("%s: what the migration holds on the target was put back", name)
		}
	}

	fails("fence command fails", hook(failing), 3, "fence-command: pgbouncer refused PAUSE", "fence-command failed", "--unfence-command ran")

	// A transaction that wrote before the fence and does not end is a write
	// in flight: cutover gives up after --grace.
	app := src.Connect("inj")
	ctx := context.Background()
	if _, err := app.Exec(ctx, `BEGIN; INSERT INTO hist (acct, delta) VALUES (1, 100)`); err != nil {
		t.Fatal(err)
	}
	fails("write in flight", hook(fence), 1, "sessions still write on inj", "--unfence-command ran")
	if _, err := app.Exec(ctx, `ROLLBACK`); err != nil {
		t.Fatal(err)
	}

	fails("drain times out", hook(fence, "--max-wait", "1ms"), 3, "did not reach the fence", "--unfence-command ran")

	// A row changed on the target after the comparison before the fence
	// (here by the fence command itself): the default check finds it.
	corrupt := hookScript(t, src, "corrupt.sh", `ALTER DATABASE inj SET default_transaction_read_only = on`,
		fmt.Sprintf(`%s -X -q -v ON_ERROR_STOP=1 '%s' -c "UPDATE acct SET bal = bal + 5 WHERE id = 9"`, filepath.Join(dst.BinDir, "psql"), dst.URL("postgres", "", "inj")))
	fails("a row changed after the comparison before the fence", hook(corrupt), 1,
		"verify found differences after the drain", "inj.public.acct (1 differing row)", "--unfence-command ran")
	dst.Exec("inj", `UPDATE acct SET bal = bal - 5 WHERE id = 9`)

	dst.Exec("inj", `UPDATE acct SET bal = bal + 1 WHERE id = 7`)
	fails("verify differs (read-only fence)", append(append([]string{}, base...), "--check", "verify"), 1,
		"verify found differences after the drain", "inj.public.acct (1 differing row)")
	fails("verify differs (hook fence)", hook(fence, "--check", "verify"), 1, "verify found differences", "--unfence-command ran")

	if data, _ := os.ReadFile(marker); strings.Count(string(data), "unfenced") != 5 {
		t.Errorf("--unfence-command ran %d times, want 5 (once per failure after the fence command started)", strings.Count(string(data), "unfenced"))
	}
	res := runCLI(t, nil, append(append([]string{}, base...), "--fence", "hook", "--fence-command", failing)...)
	if res.Code != 4 || !strings.Contains(res.Stderr, "no --unfence-command was given") {
		t.Errorf("hook failure without --unfence-command: exit %d, want 4 saying what to undo\n%s", res.Code, res.Stderr)
	}
	src.Exec("postgres", `ALTER DATABASE inj RESET default_transaction_read_only`)

	dst.Exec("inj", `UPDATE acct SET bal = bal - 1 WHERE id = 7`)
	res = runCLI(t, nil, hook(fence, "--check", "verify")...)
	if res.Code != 0 || !strings.Contains(res.Stdout, "equal checksums") {
		t.Fatalf("cutover after the fix: exit %d\n%s\n%s", res.Code, res.Stdout, res.Stderr)
	}
	assertSameTables(t, src, dst, "inj", "acct", "hist", "ev")
	if got := dst.QueryString("inj", "SELECT count(*) FROM hist"); got != fmt.Sprint(write) {
		t.Errorf("%s hist rows on the target, want the %d written between the failures", got, write)
	}
}

// A cutover stopped by a signal in the middle (here while the fence command
// runs) unfences and says so; one killed cannot, and leaves the fence as it
// was; a cutover run again afterwards, without undoing it, succeeds.
func TestCutoverInterruptedOrKilled(t *testing.T) {
	src, dst := pgtestPair(t)
	prepareStreaming(t, src, dst, "ki", cutoverSchema, "public.acct", "public.hist", "public.ev")
	src.Exec("ki", `INSERT INTO acct SELECT g, g, NULL FROM generate_series(1, 100) g`)
	fenced := filepath.Join(t.TempDir(), "fenced")
	fence := hookScript(t, src, "fence.sh", `ALTER DATABASE ki SET default_transaction_read_only = on`, "touch "+fenced, "sleep 20")
	unfence := hookScript(t, src, "unfence.sh", `ALTER DATABASE ki RESET default_transaction_read_only`)
	args := []string{"cutover", "--yes", "--grace", "0s", "--source", src.URL("postgres", "", "ki"), "--target", dst.URL("postgres", "", "ki")}
	stop := func(sig syscall.Signal) (string, error) {
		t.Helper()
		os.Remove(fenced)
		cmd := startSync(t, nil, append(append([]string{}, args...), "--fence", "hook", "--fence-command", fence, "--unfence-command", unfence)...)
		eventually(t, 30*time.Second, "the fence command ran", func() bool { _, err := os.Stat(fenced); return err == nil })
		start := time.Now()
		cmd.Process.Signal(sig)
		err := cmd.Wait()
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("cutover took %s to stop after %s", took, sig)
		}
		return syncLog(cmd), err
	}

	out, err := stop(syscall.SIGTERM)
	if err == nil || !strings.Contains(out, "cutover was interrupted") || !strings.Contains(out, "the source is writable again") {
		t.Errorf("SIGTERM during the fence: %v, want a failure saying the source is writable again\n%s", err, out)
	}
	if got := sourceReadOnly(src, "ki"); got != "off" {
		t.Errorf("SIGTERM during the fence left the source read-only")
	}

	if _, err := stop(syscall.SIGKILL); err == nil {
		t.Errorf("cutover killed with SIGKILL exited 0")
	}
	if got := sourceReadOnly(src, "ki"); got != "on" {
		t.Errorf("a killed cutover cannot undo its fence; the source is read-only = %s, want on (left by the fence command)", got)
	}
	// Run again on the source still fenced, it starts over and succeeds.
	res := runCLI(t, nil, args...)
	if res.Code != 0 {
		t.Fatalf("cutover after a killed one: exit %d\n%s\n%s", res.Code, res.Stdout, res.Stderr)
	}
	assertSameTables(t, src, dst, "ki", "acct", "hist", "ev")
}
