package pgtest

import "testing"

func TestStartPair(t *testing.T) {
	src, dst := StartPair(t)
	if got := src.QueryString("postgres", "current_setting('wal_level')"); got != "logical" {
		t.Fatalf("wal_level = %q, want logical", got)
	}
	if src.Port == dst.Port {
		t.Fatal("source and target share a port")
	}
	dst.CreateRole("alice", "s3cret")
	dst.Restart()
	if got := dst.QueryString("postgres", "(SELECT count(*) FROM pg_roles WHERE rolname = 'alice')"); got != "1" {
		t.Fatalf("role count = %q", got)
	}
}
