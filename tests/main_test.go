// Package tests holds the end-to-end tests: they build the real binary, start
// throwaway clusters with pgtest and run the commands as a user would.
package tests

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// binary is the path of the postgres-seren-replicator built for this run.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "seren-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "postgres-seren-replicator")
	build := exec.Command("go", "build", "-race", "-o", binary, "../cmd/postgres-seren-replicator")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// Result is what one run of the binary produced.
type Result struct {
	Stdout, Stderr string
	Code           int
}

// runCLI runs the binary with args and extra environment (KEY=VALUE), with
// no PG* or SEREN_* variables inherited, and a two-minute limit.
func runCLI(t *testing.T, env []string, args ...string) Result {
	t.Helper()
	return runCLIContext(t, context.Background(), 2*time.Minute, env, args...)
}

// runCLIContext is runCLI with a caller's context and time limit.
func runCLIContext(t *testing.T, ctx context.Context, limit time.Duration, env []string, args ...string) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = append(cleanEnv(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := Result{Stdout: stdout.String(), Stderr: stderr.String()}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exitErr):
		res.Code = exitErr.ExitCode()
	default:
		t.Fatalf("run %v: %v", args, err)
	}
	return res
}

// cleanEnv is the test process environment without PG*/SEREN_* variables,
// with HOME pointed at an empty directory so no ~/.pgpass leaks in, and the
// race detector's wait at exit shortened.
func cleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "SEREN_") || strings.HasPrefix(kv, "HOME=") {
			continue
		}
		out = append(out, kv)
	}
	// The race-built binary sleeps atexit_sleep_ms (1 s by default) before
	// it exits, for late race reports: a second on every run. A race still
	// makes it exit 66.
	return append(out, "HOME="+os.TempDir(), "GORACE=atexit_sleep_ms=50 "+os.Getenv("GORACE"))
}
