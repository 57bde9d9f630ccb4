package snapshot

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/serenorg/postgres-seren-replicator/internal/conninfo"
)

// run executes a client program against conn, with the password in the
// environment and never on the command line. It returns stderr.
func run(ctx context.Context, conn *conninfo.Conn, prog string, args ...string) (stderr string, err error) {
	connString, env := conn.Libpq()
	cmd := exec.CommandContext(ctx, prog, append(args, "--dbname="+connString)...)
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = childAttr()
	var buf bytes.Buffer
	cmd.Stderr = &buf
	err = cmd.Run()
	stderr = conninfo.Redact(buf.String())
	if err != nil {
		return stderr, fmt.Errorf("%s: %w: %s", filepath.Base(prog), err, firstLines(stderr, 8))
	}
	return stderr, nil
}

// firstLines keeps error output short enough for one message.
func firstLines(s string, n int) string {
	lines := bytes.Split(bytes.TrimSpace([]byte(s)), []byte("\n"))
	if len(lines) > n {
		lines = append(lines[:n], []byte(fmt.Sprintf("... (%d more lines)", len(lines)-n)))
	}
	return string(bytes.Join(lines, []byte("; ")))
}

// execOutput runs a local program that needs no connection and returns its stdout.
func execOutput(ctx context.Context, prog string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, prog, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s: %w: %s", filepath.Base(prog), err, firstLines(stderr.String(), 8))
	}
	return string(out), nil
}
