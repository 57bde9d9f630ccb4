// Package pgtools finds the local PostgreSQL client programs (pg_dump and
// the pg_restore beside it) and reads their versions. init runs the tools it
// finds; validate checks the same choice, so both agree on which pg_dump is
// used.
package pgtools

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// EnvVar names the environment variable that selects the pg_dump binary;
// pg_restore is taken from the same directory.
const EnvVar = "PG_DUMP"

// versionTimeout bounds `pg_dump --version`, so a wrapper that hangs cannot
// stall init or validate.
const versionTimeout = 10 * time.Second

// searchPatterns are where PostgreSQL installations put pg_dump, after PATH:
// Debian/Ubuntu, RHEL (PGDG), Homebrew on Apple silicon and Intel, source builds.
var searchPatterns = []string{
	"/usr/lib/postgresql/*/bin/pg_dump",
	"/usr/pgsql-*/bin/pg_dump",
	"/opt/homebrew/opt/postgresql@*/bin/pg_dump",
	"/usr/local/opt/postgresql@*/bin/pg_dump",
	"/usr/local/pgsql/bin/pg_dump",
}

// Tools are the PostgreSQL client programs init runs, from one installation
// so that pg_restore reads what pg_dump wrote.
type Tools struct {
	// PgDump is the path of pg_dump.
	PgDump string
	// PgRestore is the path of the pg_restore in PgDump's directory.
	PgRestore string
	// Major is pg_dump's major version.
	Major int
}

// ErrNotFound means no pg_dump could be run at all.
var ErrNotFound = errors.New("no pg_dump found on PATH or in /usr/lib/postgresql/*/bin")

// TooOldError means the pg_dump found is older than the source server:
// pg_dump refuses servers of a newer major version than its own.
type TooOldError struct {
	// Tools is the rejected pg_dump: $PG_DUMP's, or the newest one found.
	// PgRestore is empty.
	Tools Tools
	// Want is the source server's major version.
	Want int
}

func (e *TooOldError) Error() string {
	return fmt.Sprintf("%s is version %d, older than the source (%d): it cannot dump the source's schema",
		e.Tools.PgDump, e.Tools.Major, e.Want)
}

var versionRe = regexp.MustCompile(`\(PostgreSQL\)\s+(\d+)`)

// ParseVersion reads the major version from `pg_dump --version` output such
// as "pg_dump (PostgreSQL) 15.4 (Debian 15.4-1)". Before PostgreSQL 10 the
// major version had two parts; 9.6 reads as 9.
func ParseVersion(out string) (int, error) {
	m := versionRe.FindStringSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("unrecognised pg_dump version %q", strings.TrimSpace(out))
	}
	return strconv.Atoi(m[1])
}

// Version runs path --version and returns its major version.
func Version(ctx context.Context, path string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, versionTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "--version").Output()
	if err != nil {
		return 0, fmt.Errorf("run %s --version: %w", path, err)
	}
	return ParseVersion(string(out))
}

// At returns the tools whose pg_dump is pgDump, for a source of major
// version want. It returns a *TooOldError when pgDump is older than want,
// and an error when it cannot be run or has no pg_restore beside it.
func At(ctx context.Context, pgDump string, want int) (Tools, error) {
	major, err := Version(ctx, pgDump)
	if err != nil {
		return Tools{}, err
	}
	t := Tools{PgDump: pgDump, Major: major}
	if major < want {
		return Tools{}, &TooOldError{Tools: t, Want: want}
	}
	if t.PgRestore, err = restoreBeside(pgDump); err != nil {
		return Tools{}, err
	}
	return t, nil
}

// InstallHint tells the user how to get a pg_dump for a source of major
// version want.
func InstallHint(want int) string {
	return fmt.Sprintf("install the PostgreSQL %d client (Debian/Ubuntu: apt-get install postgresql-client-%d) or set %s to a pg_dump of version %d or later",
		want, want, EnvVar, want)
}

// Find picks the client tools for a source of major version want. $PG_DUMP,
// when set, is the only candidate. Otherwise it looks on PATH, then in the
// usual installation directories (/usr/lib/postgresql/N/bin,
// /usr/pgsql-N/bin, Homebrew, /usr/local/pgsql/bin), and picks the oldest
// pg_dump with a pg_restore beside it whose major version is at least want:
// pg_dump refuses servers newer than itself, and the closest version writes
// the plainest SQL for the target. Of equal versions the first found wins.
//
// When no pg_dump is new enough, the error is a *TooOldError naming the
// newest one found; when none runs at all, it wraps ErrNotFound.
func Find(ctx context.Context, want int) (Tools, error) {
	if p := os.Getenv(EnvVar); p != "" {
		t, err := At(ctx, p, want)
		if err != nil {
			if _, ok := errors.AsType[*TooOldError](err); ok {
				return Tools{}, err
			}
			return Tools{}, fmt.Errorf("%s=%s: %w", EnvVar, p, err)
		}
		return t, nil
	}
	var candidates []string
	if p, err := exec.LookPath("pg_dump"); err == nil {
		candidates = append(candidates, p)
	}
	for _, pattern := range searchPatterns {
		m, _ := filepath.Glob(pattern)
		candidates = append(candidates, m...)
	}
	return pick(ctx, want, candidates)
}

// pick is Find's choice among candidate pg_dump paths, in search order.
func pick(ctx context.Context, want int, candidates []string) (Tools, error) {
	var best, newest Tools
	var noRestore error
	for _, c := range candidates {
		major, err := Version(ctx, c)
		if err != nil {
			continue
		}
		if major > newest.Major {
			newest = Tools{PgDump: c, Major: major}
		}
		if major < want || (best.PgDump != "" && major >= best.Major) {
			continue
		}
		restore, err := restoreBeside(c)
		if err != nil {
			if noRestore == nil {
				noRestore = err
			}
			continue
		}
		best = Tools{PgDump: c, PgRestore: restore, Major: major}
	}
	switch {
	case best.PgDump != "":
		return best, nil
	case noRestore != nil:
		return Tools{}, noRestore
	case newest.PgDump != "":
		return Tools{}, &TooOldError{Tools: newest, Want: want}
	}
	return Tools{}, ErrNotFound
}

// restoreBeside returns the pg_restore in pgDump's directory. /usr/bin/pg_dump
// on Debian is a wrapper, and its pg_restore sits beside it too.
func restoreBeside(pgDump string) (string, error) {
	restore := filepath.Join(filepath.Dir(pgDump), "pg_restore")
	if _, err := os.Stat(restore); err != nil {
		return "", fmt.Errorf("no pg_restore beside %s", pgDump)
	}
	return restore, nil
}
