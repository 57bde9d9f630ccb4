package tests

import (
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A target that turns read-only (a managed service during a failover or
// over its storage quota) stops the apply, not sync: it retries, says why,
// and resumes by itself once the target is writable again.
func TestSyncWaitsOutAReadOnlyTarget(t *testing.T) {
	src, dst := pgtestPair(t)
	prepareStreaming(t, src, dst, "ro", `CREATE TABLE t (id int PRIMARY KEY, v text);`, "public.t")
	cmd := startSync(t, nil, syncArgs(src, dst, "ro", "--max-retry-delay", "1s")...)
	src.Exec("ro", `INSERT INTO t VALUES (1, 'a')`)
	eventually(t, 30*time.Second, "first row applied", func() bool { return dst.QueryString("ro", "SELECT count(*) FROM t") == "1" })

	dst.Exec("postgres", `ALTER DATABASE ro SET default_transaction_read_only = on`)
	dst.Exec("postgres", `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'ro' AND pid <> pg_backend_pid()`)
	src.Exec("ro", `INSERT INTO t SELECT g, 'b' FROM generate_series(2, 500) g`)
	eventually(t, 30*time.Second, "the read-only target reported", func() bool {
		return strings.Contains(syncLog(cmd), "read-only transaction")
	})
	time.Sleep(3 * time.Second)
	if cmd.ProcessState != nil {
		t.Fatalf("sync exited on a read-only target:\n%s", syncLog(cmd))
	}
	dst.Exec("postgres", `ALTER DATABASE ro RESET default_transaction_read_only`)
	eventually(t, 30*time.Second, "rows applied once the target is writable", func() bool {
		return dst.QueryString("ro", "SELECT count(*) FROM t") == "500"
	})
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("sync: %v\n%s", err, syncLog(cmd))
	}
	assertSameTables(t, src, dst, "ro", "t")
}

// A target whose disk fills up (a table in a tablespace on a small tmpfs)
// makes sync retry, saying why, and resume once there is room: nothing is
// lost and nothing applied twice.
func TestSyncWaitsOutAFullTargetDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a small tmpfs needs root")
	}
	dir, err := os.MkdirTemp("", "seren-tmpfs-")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=3M,mode=0700", "tmpfs", dir).CombinedOutput(); err != nil {
		os.Remove(dir)
		t.Skipf("cannot mount a tmpfs here: %v %s", err, out)
	}
	t.Cleanup(func() {
		exec.Command("umount", "-l", dir).Run()
		os.Remove(dir)
	})
	if out, err := exec.Command("chown", "postgres:postgres", dir).CombinedOutput(); err != nil {
		t.Fatalf("chown: %v %s", err, out)
	}

	src, dst := pgtestPair(t)
	prepareStreaming(t, src, dst, "full_disk", `CREATE TABLE t (id int PRIMARY KEY, v text);`, "public.t")
	dst.Exec("postgres", "CREATE TABLESPACE small LOCATION '"+dir+"'")
	dst.Exec("full_disk", "ALTER TABLE t SET TABLESPACE small")

	cmd := startSync(t, nil, syncArgs(src, dst, "full_disk", "--max-retry-delay", "1s")...)
	// About 8 MB of rows: more than the 3 MB the target's tablespace holds.
	src.Exec("full_disk", `INSERT INTO t SELECT g, repeat(md5(g::text), 25) FROM generate_series(1, 10000) g`)
	eventually(t, 60*time.Second, "the full disk reported", func() bool {
		return strings.Contains(syncLog(cmd), "No space left on device")
	})
	if cmd.ProcessState != nil {
		t.Fatalf("sync exited on a full target disk:\n%s", syncLog(cmd))
	}
	if out, err := exec.Command("mount", "-o", "remount,size=64M", dir).CombinedOutput(); err != nil {
		t.Fatalf("grow the tmpfs: %v %s", err, out)
	}
	eventually(t, 60*time.Second, "rows applied once there is room", func() bool {
		return dst.QueryString("full_disk", "SELECT count(*) FROM t") == "10000"
	})
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("sync: %v\n%s", err, syncLog(cmd))
	}
	assertSameTables(t, src, dst, "full_disk", "t")
	dst.Stop("immediate") // before the tmpfs goes
}
