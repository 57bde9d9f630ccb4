package preflight

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

func TestParsePgDumpVersion(t *testing.T) {
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
		got, err := ParsePgDumpVersion(tc.out)
		switch {
		case tc.bad && err == nil:
			t.Errorf("ParsePgDumpVersion(%q) = %d, want an error", tc.out, got)
		case !tc.bad && (err != nil || got != tc.want):
			t.Errorf("ParsePgDumpVersion(%q) = %d, %v; want %d", tc.out, got, err, tc.want)
		}
	}
}

func TestFindPgDumpHonoursEnv(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pg_dump")
	if err := os.WriteFile(path, []byte("#!/bin/sh\necho 'pg_dump (PostgreSQL) 12.3'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv(PgDumpEnv, path)
	got, major, err := FindPgDump(context.Background(), 15)
	if err != nil || got != path || major != 12 {
		t.Errorf("FindPgDump = %s, %d, %v; want %s, 12", got, major, err, path)
	}
	t.Setenv(PgDumpEnv, "")
	got, major, err = FindPgDump(context.Background(), 15)
	if err != nil || major < 15 {
		t.Errorf("FindPgDump without %s = %s, %d, %v; want the machine's pg_dump 15 or later", PgDumpEnv, got, major, err)
	}
}
