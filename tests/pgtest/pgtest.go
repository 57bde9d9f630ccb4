// Package pgtest starts throwaway PostgreSQL clusters for integration tests:
// initdb into a temporary directory, a free loopback port, wal_level=logical,
// torn down by t.Cleanup. As root the cluster runs as the postgres system
// user, since initdb and postgres refuse to run as root.
//
// PG_BINDIR selects the server binaries (default: the machine's PostgreSQL
// 15); PG_SOURCE_BINDIR and PG_TARGET_BINDIR override it for the source and
// target clusters of StartPair.
package pgtest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// DefaultBinDir holds the server binaries used when PG_BINDIR is unset.
const DefaultBinDir = "/usr/lib/postgresql/15/bin"

// SuperUser is the bootstrap superuser of every cluster; it has no password
// and logs in with trust over loopback. Roles made by CreateRole use
// scram-sha-256 passwords.
const SuperUser = "postgres"

// TB is the part of TB the harness uses, so programs such as the
// demo can run clusters outside a test.
type TB interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Logf(format string, args ...any)
	Cleanup(func())
	FailNow()
}

// Options tune a cluster.
type Options struct {
	// BinDir holds initdb, pg_ctl and postgres; empty means PG_BINDIR or DefaultBinDir.
	BinDir string
	// Settings are extra postgresql.conf lines, such as "wal_sender_timeout = '5s'".
	Settings []string
	// ServerCert and ServerKey, PEM encoded, turn TLS on (ssl = on) with
	// this certificate; without them the server refuses TLS.
	ServerCert, ServerKey []byte
}

// Cluster is one running PostgreSQL server.
type Cluster struct {
	t       TB
	BinDir  string
	DataDir string
	Port    int
	mu      sync.Mutex
	running bool
}

// Start initialises and starts a cluster, stopped and removed at cleanup.
func Start(t TB, opts Options) *Cluster {
	t.Helper()
	bin := opts.BinDir
	if bin == "" {
		bin = os.Getenv("PG_BINDIR")
	}
	if bin == "" {
		bin = DefaultBinDir
	}
	if _, err := os.Stat(filepath.Join(bin, "initdb")); err != nil {
		t.Fatalf("pgtest: no initdb in %s (install PostgreSQL server binaries or set PG_BINDIR): %v", bin, err)
	}
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		t.Fatal(err)
	}
	c := &Cluster{t: t, BinDir: bin, DataDir: filepath.Join(dir, "data")}
	t.Cleanup(func() {
		c.Stop("immediate")
		os.RemoveAll(dir)
	})
	chownToPostgres(t, dir)
	c.run("initdb", "-D", c.DataDir, "-U", SuperUser, "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")
	conf := []string{
		"listen_addresses = '127.0.0.1'",
		"unix_socket_directories = ''",
		"wal_level = logical",
		"max_replication_slots = 20",
		"max_wal_senders = 20",
		"max_connections = 100",
		"fsync = off",
		"full_page_writes = off",
		"shared_buffers = '64MB'",
		"log_min_messages = warning",
		"logging_collector = off",
	}
	if opts.ServerCert != nil {
		writeFile(t, filepath.Join(c.DataDir, "server.crt"), opts.ServerCert)
		writeFile(t, filepath.Join(c.DataDir, "server.key"), opts.ServerKey)
		conf = append(conf, "ssl = on", "ssl_cert_file = 'server.crt'", "ssl_key_file = 'server.key'")
	}
	conf = append(conf, opts.Settings...)
	appendFile(t, filepath.Join(c.DataDir, "postgresql.conf"), strings.Join(conf, "\n")+"\n")
	// Trust for the bootstrap superuser, passwords for every other role, so
	// tests can prove password handling against a real server.
	hba := "host all postgres 127.0.0.1/32 trust\nhost replication postgres 127.0.0.1/32 trust\n" +
		"host all all 127.0.0.1/32 scram-sha-256\nhost replication all 127.0.0.1/32 scram-sha-256\n"
	writeFile(t, filepath.Join(c.DataDir, "pg_hba.conf"), []byte(hba))
	chownToPostgres(t, c.DataDir)
	c.firstStart()
	return c
}

// portChosen, when set by a test, runs after a port is chosen and before the
// server binds it.
var portChosen func(port int)

// firstStart picks a port and starts the server, picking another port when
// somebody took the chosen one between the check and the server's bind
// (another test process, or a client's outgoing connection).
func (c *Cluster) firstStart() {
	c.t.Helper()
	const attempts = 5
	for i := 1; ; i++ {
		c.Port = freePort(c.t)
		if portChosen != nil {
			portChosen(c.Port)
		}
		appendFile(c.t, filepath.Join(c.DataDir, "postgresql.conf"), fmt.Sprintf("port = %d\n", c.Port))
		err := c.start()
		if err == nil {
			return
		}
		if i == attempts || !strings.Contains(c.Log(), "could not bind") {
			c.t.Fatalf("pgtest: %v\nserver log:\n%s", err, c.Log())
		}
		c.t.Logf("pgtest: port %d was taken before the server bound it; trying another", c.Port)
	}
}

// StartPair starts a source and a target cluster, honouring
// PG_SOURCE_BINDIR and PG_TARGET_BINDIR.
func StartPair(t TB) (source, target *Cluster) {
	t.Helper()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); source = Start(t, Options{BinDir: os.Getenv("PG_SOURCE_BINDIR")}) }()
	go func() { defer wg.Done(); target = Start(t, Options{BinDir: os.Getenv("PG_TARGET_BINDIR")}) }()
	wg.Wait()
	if source == nil || target == nil {
		t.FailNow()
	}
	return source, target
}

// DSN is a keyword/value connection string for the superuser and database db.
func (c *Cluster) DSN(db string) string {
	return fmt.Sprintf("host=127.0.0.1 port=%d user=%s dbname=%s sslmode=disable", c.Port, SuperUser, db)
}

// URL is a postgres:// URL for user (with password, may be empty) and db.
func (c *Cluster) URL(user, password, db string) string {
	u := user
	if password != "" {
		u += ":" + password
	}
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", u, c.Port, db)
}

// Connect opens a superuser session on db, closed at cleanup.
func (c *Cluster) Connect(db string) *pgx.Conn {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.DSN(db))
	if err != nil {
		c.t.Fatalf("pgtest: connect %s: %v", db, err)
	}
	c.t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// Exec runs SQL (several statements allowed) as the superuser on db.
func (c *Cluster) Exec(db, sql string, args ...any) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.DSN(db))
	if err != nil {
		c.t.Fatalf("pgtest: connect %s: %v", db, err)
	}
	defer conn.Close(ctx)
	if len(args) == 0 {
		err = conn.PgConn().Exec(ctx, sql).Close()
	} else {
		_, err = conn.Exec(ctx, sql, args...)
	}
	if err != nil {
		c.t.Fatalf("pgtest: exec on %s: %v\n%s", db, err, sql)
	}
}

// QueryString runs a query returning one value and returns it as text
// ("" for NULL).
func (c *Cluster) QueryString(db, sql string, args ...any) string {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.DSN(db))
	if err != nil {
		c.t.Fatalf("pgtest: connect %s: %v", db, err)
	}
	defer conn.Close(ctx)
	var s *string
	if err := conn.QueryRow(ctx, "SELECT ("+sql+")::text", args...).Scan(&s); err != nil {
		c.t.Fatalf("pgtest: query on %s: %v\n%s", db, err, sql)
	}
	if s == nil {
		return ""
	}
	return *s
}

// CreateRole creates a LOGIN role with a password and extra attributes
// (for example "REPLICATION" or "CREATEDB").
func (c *Cluster) CreateRole(name, password string, attrs ...string) {
	c.t.Helper()
	// SCRAM whatever the server's default (md5 before PostgreSQL 14), as
	// pg_hba.conf asks for it.
	c.Exec("postgres", fmt.Sprintf("SET password_encryption = 'scram-sha-256'; CREATE ROLE %s LOGIN PASSWORD '%s' %s",
		pgx.Identifier{name}.Sanitize(), strings.ReplaceAll(password, "'", "''"), strings.Join(attrs, " ")))
}

// Stop stops the server with the given pg_ctl mode (smart, fast, immediate).
// Stopping a stopped cluster does nothing.
func (c *Cluster) Stop(mode string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.running {
		return
	}
	c.running = false
	cmd := c.command("pg_ctl", "-D", c.DataDir, "-m", mode, "-w", "-t", "60", "stop")
	if out, err := cmd.CombinedOutput(); err != nil {
		c.t.Logf("pgtest: pg_ctl stop: %v\n%s", err, out)
	}
}

// Restart starts the server (stopping it first when it runs) and waits until
// it accepts connections.
func (c *Cluster) Restart() {
	c.t.Helper()
	c.Stop("fast")
	if err := c.start(); err != nil {
		c.t.Fatalf("pgtest: %v\nserver log:\n%s", err, c.Log())
	}
}

func (c *Cluster) start() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	logFile := filepath.Join(filepath.Dir(c.DataDir), "server.log")
	args := []string{"-D", c.DataDir, "-l", logFile, "-w", "-t", "120", "start"}
	if out, err := c.command("pg_ctl", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("pg_ctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	c.running = true
	return nil
}

// Log returns the server log, for failing tests to show.
func (c *Cluster) Log() string {
	b, _ := os.ReadFile(filepath.Join(filepath.Dir(c.DataDir), "server.log"))
	return string(b)
}

func (c *Cluster) run(name string, args ...string) {
	c.t.Helper()
	if out, err := c.command(name, args...).CombinedOutput(); err != nil {
		c.t.Fatalf("pgtest: %s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// command runs a server binary, as the postgres system user when we are root.
func (c *Cluster) command(name string, args ...string) *exec.Cmd {
	bin := filepath.Join(c.BinDir, name)
	if os.Geteuid() == 0 {
		return exec.Command("runuser", append([]string{"-u", "postgres", "--", bin}, args...)...)
	}
	return exec.Command(bin, args...)
}

// freePort returns a loopback port that is free now, chosen at random below
// the kernel's ephemeral range (32768 and up) so that outgoing client
// connections never take it while the cluster is stopped for a restart.
func freePort(t TB) int {
	t.Helper()
	for range 1000 {
		port := 20000 + rand.IntN(12000)
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		l.Close()
		return port
	}
	t.Fatal("pgtest: no free loopback port between 20000 and 32000")
	return 0
}

// writeFile writes a file only its owner may read (the server refuses a
// private key others can read).
func writeFile(t TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func appendFile(t TB, path, text string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(text); err != nil {
		t.Fatal(err)
	}
}

// chownToPostgres hands a directory tree to the postgres system user when we
// run as root, so the server may use it.
func chownToPostgres(t TB, dir string) {
	t.Helper()
	if os.Geteuid() != 0 {
		return
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		t.Fatalf("pgtest: running as root needs a postgres system user: %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	err = filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
	if err != nil {
		t.Fatal(err)
	}
}
