package preflight

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// PgDumpEnv names the environment variable that selects the pg_dump binary.
const PgDumpEnv = "PG_DUMP"

// pgDumpDirs is where Debian and Ubuntu install each major version.
const pgDumpDirs = "/usr/lib/postgresql/*/bin/pg_dump"

var pgDumpVersion = regexp.MustCompile(`\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?`)

// ParsePgDumpVersion reads the major version from `pg_dump --version`
// output such as "pg_dump (PostgreSQL) 15.4 (Debian 15.4-1)". Before
// PostgreSQL 10 the major version had two parts; 9.6 reads as 9.
func ParsePgDumpVersion(out string) (int, error) {
	m := pgDumpVersion.FindStringSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("unrecognised pg_dump version %q", strings.TrimSpace(out))
	}
	return strconv.Atoi(m[1])
}

// PgDumpMajor runs path --version and returns its major version.
func PgDumpMajor(ctx context.Context, path string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "--version").Output()
	if err != nil {
		return 0, fmt.Errorf("run %s --version: %w", path, err)
	}
	return ParsePgDumpVersion(string(out))
}

// FindPgDump picks the pg_dump for a source of major version want. $PG_DUMP,
// when set, is the only candidate. Otherwise pg_dump on PATH comes first,
// then /usr/lib/postgresql/<N>/bin/pg_dump from the newest N down; the first
// whose major version is at least want wins. When none is new enough, the
// newest found is returned, so the caller can say which version it has.
func FindPgDump(ctx context.Context, want int) (path string, major int, err error) {
	if p := os.Getenv(PgDumpEnv); p != "" {
		m, err := PgDumpMajor(ctx, p)
		if err != nil {
			return p, 0, fmt.Errorf("%s=%s: %w", PgDumpEnv, p, err)
		}
		return p, m, nil
	}
	var candidates []string
	if p, err := exec.LookPath("pg_dump"); err == nil {
		candidates = append(candidates, p)
	}
	installed, _ := filepath.Glob(pgDumpDirs)
	sort.Slice(installed, func(i, j int) bool { return dirVersion(installed[i]) > dirVersion(installed[j]) })
	candidates = append(candidates, installed...)
	bestPath, best := "", -1
	for _, p := range candidates {
		m, err := PgDumpMajor(ctx, p)
		if err != nil {
			continue
		}
		if m >= want {
			return p, m, nil
		}
		if m > best {
			bestPath, best = p, m
		}
	}
	if best < 0 {
		return "", 0, errors.New("no pg_dump found on PATH or in /usr/lib/postgresql/*/bin")
	}
	return bestPath, best, nil
}

// dirVersion is N in /usr/lib/postgresql/N/bin/pg_dump.
func dirVersion(path string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(path))))
	return v
}

// checkPgDump checks that the local pg_dump can dump the source: pg_dump
// refuses servers of a newer major version than its own.
func checkPgDump(ctx context.Context, path string, sourceMajor int) (Check, error) {
	c := Check{Name: "pg_dump version", Status: Pass}
	var major int
	var err error
	if path != "" {
		major, err = PgDumpMajor(ctx, path)
	} else {
		path, major, err = FindPgDump(ctx, sourceMajor)
	}
	install := fmt.Sprintf("install the PostgreSQL %d client (Debian/Ubuntu: apt-get install postgresql-client-%d) or set %s to a pg_dump of version %d or later",
		sourceMajor, sourceMajor, PgDumpEnv, sourceMajor)
	switch {
	case err != nil:
		c.Status = Fail
		c.Detail = err.Error()
		c.Fix = install
	case major < sourceMajor:
		c.Status = Fail
		c.Detail = fmt.Sprintf("%s is version %d, older than the source (%d): it cannot dump the source's schema", path, major, sourceMajor)
		c.Fix = install
	default:
		c.Detail = fmt.Sprintf("%s is version %d; the source is %d", path, major, sourceMajor)
	}
	return c, nil
}
