package pgtools

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseVersion(t *testing.T) {
	tests := []struct {
		out  string
		want int
		bad  bool
	}{
		{out: "pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n", want: 15},
		{out: "pg_dump (PostgreSQL) 17.0", want: 17},
		{out: "pg_dump (PostgreSQL) 18beta1", want: 18},
		{out: "pg_dump (PostgreSQL) 9.6.24", want: 9},
		{out: "pg_dump: command not found", bad: true},
	}
	for _, tc := range tests {
		got, err := ParseVersion(tc.out)
		switch {
		case tc.bad && err == nil:
			t.Errorf("ParseVersion(%q) = %d, want an error", tc.out, got)
		case !tc.bad && (err != nil || got != tc.want):
			t.Errorf("ParseVersion(%q) = %d, %v; want %d", tc.out, got, err, tc.want)
		}
	}
}

// fakeInstall writes a pg_dump script that reports version into its own
// directory, with an empty pg_restore beside it when withRestore is set.
func fakeInstall(t *testing.T, version string, withRestore bool) string {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "pg_dump")
	if err := os.WriteFile(path, []byte("#!/bin/sh\necho 'pg_dump (PostgreSQL) "+version+"'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if withRestore {
		if err := os.WriteFile(filepath.Join(dir, "pg_restore"), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return path
}

func TestFindHonoursEnv(t *testing.T) {
	ctx := context.Background()

	t.Run("new enough", func(t *testing.T) {
		path := fakeInstall(t, "17.2", true)
		t.Setenv(EnvVar, path)
		got, err := Find(ctx, 15)
		want := Tools{PgDump: path, PgRestore: filepath.Join(filepath.Dir(path), "pg_restore"), Major: 17}
		if err != nil || got != want {
			t.Errorf("Find = %+v, %v; want %+v", got, err, want)
		}
	})

	t.Run("too old", func(t *testing.T) {
		// No pg_restore either: the version is what the user must hear about.
		path := fakeInstall(t, "12.3", false)
		t.Setenv(EnvVar, path)
		_, err := Find(ctx, 15)
		tooOld, ok := errors.AsType[*TooOldError](err)
		if !ok || tooOld.Tools.PgDump != path || tooOld.Tools.Major != 12 || tooOld.Want != 15 {
			t.Fatalf("Find = %v; want a TooOldError for %s version 12", err, path)
		}
		if want := path + " is version 12, older than the source (15)"; !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	})

	t.Run("no pg_restore", func(t *testing.T) {
		path := fakeInstall(t, "17.2", false)
		t.Setenv(EnvVar, path)
		if _, err := Find(ctx, 15); err == nil || !strings.Contains(err.Error(), "no pg_restore beside "+path) {
			t.Errorf("Find = %v; want no pg_restore beside %s", err, path)
		}
	})

	t.Run("missing", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "no-pg_dump")
		t.Setenv(EnvVar, path)
		_, err := Find(ctx, 15)
		if want := EnvVar + "=" + path + ": run " + path + " --version: "; err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("Find = %v; want an error starting %q", err, want)
		}
	})
}

// TestFindOnThisMachine uses the PostgreSQL 15 client tools the test machine has.
func TestFindOnThisMachine(t *testing.T) {
	t.Setenv(EnvVar, "")
	got, err := Find(context.Background(), 15)
	if err != nil || got.Major < 15 || got.PgRestore == "" {
		t.Fatalf("Find = %+v, %v; want the machine's pg_dump 15 or later with its pg_restore", got, err)
	}
	if _, err := Find(context.Background(), 99); !isTooOld(err) {
		t.Errorf("Find for PostgreSQL 99 = %v, want a TooOldError", err)
	}
}

func TestPick(t *testing.T) {
	ctx := context.Background()
	v13 := fakeInstall(t, "13.9", true)
	v15 := fakeInstall(t, "15.4", true)
	v15b := fakeInstall(t, "15.8", true)
	v16NoRestore := fakeInstall(t, "16.1", false)
	v17 := fakeInstall(t, "17.0", true)
	broken := filepath.Join(t.TempDir(), "pg_dump")
	restore := func(p string) string { return filepath.Join(filepath.Dir(p), "pg_restore") }

	tests := []struct {
		name       string
		want       int
		candidates []string
		got        Tools
		tooOld     string // the pg_dump a TooOldError should name
		errHas     string
	}{
		{name: "oldest new enough", want: 14, candidates: []string{v17, broken, v13, v15},
			got: Tools{PgDump: v15, PgRestore: restore(v15), Major: 15}},
		{name: "equal versions: first found", want: 15, candidates: []string{v17, v15b, v15},
			got: Tools{PgDump: v15b, PgRestore: restore(v15b), Major: 15}},
		{name: "skips one without pg_restore", want: 16, candidates: []string{v16NoRestore, v17},
			got: Tools{PgDump: v17, PgRestore: restore(v17), Major: 17}},
		{name: "only one without pg_restore", want: 16, candidates: []string{v13, v16NoRestore},
			errHas: "no pg_restore beside " + v16NoRestore},
		{name: "too old names the newest", want: 18, candidates: []string{v15, v17, v13},
			tooOld: v17},
		{name: "none runs", want: 15, candidates: []string{broken},
			errHas: ErrNotFound.Error()},
		{name: "nothing", want: 15, errHas: ErrNotFound.Error()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := pick(ctx, tc.want, tc.candidates)
			switch {
			case tc.tooOld != "":
				e, ok := errors.AsType[*TooOldError](err)
				if !ok || e.Tools.PgDump != tc.tooOld || e.Want != tc.want {
					t.Errorf("pick = %+v, %v; want a TooOldError naming %s", got, err, tc.tooOld)
				}
			case tc.errHas != "":
				if err == nil || !strings.Contains(err.Error(), tc.errHas) {
					t.Errorf("pick = %+v, %v; want an error with %q", got, err, tc.errHas)
				}
			case err != nil || got != tc.got:
				t.Errorf("pick = %+v, %v; want %+v", got, err, tc.got)
			}
		})
	}
}

func isTooOld(err error) bool {
	_, ok := errors.AsType[*TooOldError](err)
	return ok
}
