package snapshot

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"

	"github.com/serenorg/postgres-seren-replicator/internal/conninfo"
)

// Tools are the PostgreSQL client programs init runs, from one installation
// so that pg_restore reads what pg_dump wrote.
type Tools struct {
	PgDump    string
	PgRestore string
	// Major is pg_dump's major version.
	Major int
}

// ErrNoPgDump means no pg_dump new enough for the source was found.
var ErrNoPgDump = errors.New("no suitable pg_dump")

var versionRe = regexp.MustCompile(`\(PostgreSQL\) (\d+)`)

// FindTools looks for pg_dump and pg_restore the way users of libpq tools
// expect: $PG_DUMP (a pg_dump binary; pg_restore is taken from the same
// directory), then PATH, then the usual installation directories
// (/usr/lib/postgresql/N/bin, /usr/pgsql-N/bin, Homebrew). It picks the
// oldest pg_dump whose major version is at least sourceMajor: pg_dump
// refuses servers newer than itself, and the closest version writes the
// plainest SQL for the target.
func FindTools(ctx context.Context, sourceMajor int) (Tools, error) {
	if p := os.Getenv("PG_DUMP"); p != "" {
		t, err := probe(ctx, p)
		if err != nil {
			return Tools{}, fmt.Errorf("%w: PG_DUMP=%s: %v", ErrNoPgDump, p, err)
		}
		if t.Major < sourceMajor {
			return Tools{}, fmt.Errorf("%w: PG_DUMP=%s is version %d, older than the source server (%d)", ErrNoPgDump, p, t.Major, sourceMajor)
		}
		return t, nil
	}
	var candidates []string
	if p, err := exec.LookPath("pg_dump"); err == nil {
		candidates = append(candidates, p)
	}
	for _, pattern := range []string{"/usr/lib/postgresql/*/bin/pg_dump", "/usr/pgsql-*/bin/pg_dump",
		"/opt/homebrew/opt/postgresql@*/bin/pg_dump", "/usr/local/opt/postgresql@*/bin/pg_dump", "/usr/local/pgsql/bin/pg_dump"} {
		m, _ := filepath.Glob(pattern)
		candidates = append(candidates, m...)
	}
	var found []Tools
	var newest int
	for _, c := range candidates {
		t, err := probe(ctx, c)
		if err != nil {
			continue
		}
		newest = max(newest, t.Major)
		if t.Major >= sourceMajor {
			found = append(found, t)
		}
	}
	if len(found) == 0 {
		if newest > 0 {
			return Tools{}, fmt.Errorf("%w: the newest pg_dump found is version %d, the source runs %d: install PostgreSQL %d client tools or set PG_DUMP", ErrNoPgDump, newest, sourceMajor, sourceMajor)
		}
		return Tools{}, fmt.Errorf("%w: pg_dump not found in PATH or /usr/lib/postgresql/*/bin: install the PostgreSQL client tools or set PG_DUMP", ErrNoPgDump)
	}
	sort.SliceStable(found, func(i, j int) bool { return found[i].Major < found[j].Major })
	return found[0], nil
}

// probe checks that path is a pg_dump with a pg_restore beside it.
func probe(ctx context.Context, path string) (Tools, error) {
	out, err := exec.CommandContext(ctx, path, "--version").Output()
	if err != nil {
		return Tools{}, err
	}
	m := versionRe.FindSubmatch(out)
	if m == nil {
		return Tools{}, fmt.Errorf("unrecognised version %q", bytes.TrimSpace(out))
	}
	major, _ := strconv.Atoi(string(m[1]))
	restore := filepath.Join(filepath.Dir(path), "pg_restore")
	if _, err := os.Stat(restore); err != nil {
		// /usr/bin/pg_dump on Debian is a wrapper; its pg_restore sits beside it.
		return Tools{}, fmt.Errorf("no pg_restore beside %s", path)
	}
	return Tools{PgDump: path, PgRestore: restore, Major: major}, nil
}

// run executes a client program against conn, with the password in the
// environment and never on the command line. It returns stderr.
func run(ctx context.Context, conn *conninfo.Conn, prog string, args ...string) (stderr string, err error) {
	connString, env := conn.Libpq()
	cmd := exec.CommandContext(ctx, prog, append(args, "--dbname="+connString)...)
	cmd.Env = append(os.Environ(), env...)
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
