package pgtest

import (
	"fmt"
	"net"
	"testing"
)

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

// TestStartSurvivesATakenPort takes the chosen port before the server binds
// it, as another process may, and expects the cluster to start on another.
func TestStartSurvivesATakenPort(t *testing.T) {
	taken := 0
	portChosen = func(port int) {
		if taken != 0 {
			return
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		taken = port
	}
	t.Cleanup(func() { portChosen = nil })
	c := Start(t, Options{})
	if c.Port == taken {
		t.Fatalf("cluster claims port %d, which the test holds", taken)
	}
	if got := c.QueryString("postgres", "current_setting('port')"); got != fmt.Sprint(c.Port) {
		t.Fatalf("server port = %s, cluster says %d", got, c.Port)
	}
}
