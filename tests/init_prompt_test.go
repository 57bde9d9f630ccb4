package tests

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/serenorg/postgres-seren-replicator/tests/pgtest"
)

// runOnTerminal runs the binary under script(1), which gives it a
// pseudo-terminal, feeding input to it.
func runOnTerminal(t *testing.T, input string, args ...string) (string, error) {
	t.Helper()
	if _, err := exec.LookPath("script"); err != nil {
		t.Skip("script(1) is not installed")
	}
	line := binary
	for _, a := range args {
		line += " '" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "script", "-qec", line, "/dev/null")
	cmd.Env = cleanEnv()
	cmd.Stdin = strings.NewReader(input)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestInitAsksOnATerminal(t *testing.T) {
	src, dst := pgtest.StartPair(t)
	src.Exec("postgres", "CREATE DATABASE a")
	src.Exec("a", "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 1000)")
	args := []string{"init", "--source", src.DSN("a"), "--target", dst.DSN("a")}

	out, err := runOnTerminal(t, "n\n", args...)
	if !strings.Contains(out, "Proceed with replication? [y/N]") || !strings.Contains(out, "cancelled; nothing was changed") || strings.Contains(out, "error:") {
		t.Fatalf("answer n: want a plain notice that nothing changed, output:\n%s", out)
	}
	assertExitCode(t, err, 1)
	if n := src.QueryString("a", `SELECT count(*) FROM pg_replication_slots`); n != "0" {
		t.Fatalf("declined init created %s slots", n)
	}
	out, err = runOnTerminal(t, "y\n", args...)
	if err != nil {
		t.Fatalf("answer y: %v\n%s", err, out)
	}
	for _, want := range []string{"ESTIMATE", "Init is complete"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	assertSameRows(t, src, dst, "a", "a", []string{"t"})

	// cleanup asks too; no drops nothing, says so plainly and exits 1.
	out, err = runOnTerminal(t, "n\n", "cleanup", "--source", src.DSN("a"), "--target", dst.DSN("a"))
	if !strings.Contains(out, "Continue? [y/N]") || !strings.Contains(out, "cancelled; nothing was changed") || strings.Contains(out, "error:") {
		t.Fatalf("cleanup, answer n: want a plain notice that nothing changed, output:\n%s", out)
	}
	assertExitCode(t, err, 1)
	if n := src.QueryString("a", `SELECT count(*) FROM pg_replication_slots`); n != "1" {
		t.Fatalf("declined cleanup left %s slots, want 1", n)
	}
}

// assertExitCode fails unless err is an exit with code want.
func assertExitCode(t *testing.T, err error, want int) {
	t.Helper()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != want {
		t.Errorf("exit: %v, want exit code %d", err, want)
	}
}
