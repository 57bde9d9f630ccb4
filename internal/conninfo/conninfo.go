// Package conninfo parses PostgreSQL connection strings the way libpq does
// (URLs, keyword/value DSNs, PG* environment variables, .pgpass, TLS options)
// and keeps passwords out of everything the tool prints.
package conninfo

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// DefaultApplicationName is the application_name sent when neither the
// connection string nor PGAPPNAME sets one.
const DefaultApplicationName = "postgres-seren-replicator"

// DefaultConnectTimeout applies when neither the connection string nor
// PGCONNECT_TIMEOUT sets connect_timeout, so an unreachable host fails fast.
const DefaultConnectTimeout = 10 * time.Second

// ErrConfig marks errors caused by the user's connection string or the
// server refusing it (bad host, password, database): exit code 2.
var ErrConfig = errors.New("connection configuration")

// Conn is a parsed connection string: the libpq settings for one server and
// database, with the database replaceable for multi-database runs.
type Conn struct {
	cfg *pgconn.Config
	raw string
	// side is the part the server plays ("source", "target"), named in
	// connection errors; empty when unnamed.
	side string
}

// Parse reads a libpq connection string (URL or keyword/value) with libpq's
// fallbacks: PG* variables, the password file, sslmode and friends.
func Parse(dsn string) (*Conn, error) {
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		// pgconn redacts the password it can recognise; Redact is the backstop.
		return nil, &configError{msg: Redact(err.Error())}
	}
	Register(cfg.Password)
	if _, ok := cfg.RuntimeParams["application_name"]; !ok {
		cfg.RuntimeParams["application_name"] = DefaultApplicationName
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	return &Conn{cfg: cfg, raw: dsn}, nil
}

// Database is the database the connection string names (libpq's default,
// the user name, when it names none).
func (c *Conn) Database() string { return c.cfg.Database }

// User is the role the connection logs in as.
func (c *Conn) User() string { return c.cfg.User }

// Host is the first host the connection tries.
func (c *Conn) Host() string { return c.cfg.Host }

// ApplicationName is the application_name the connection reports to the
// server (DefaultApplicationName unless the string or PGAPPNAME sets one).
func (c *Conn) ApplicationName() string { return c.cfg.RuntimeParams["application_name"] }

// Port is the first port the connection tries.
func (c *Conn) Port() uint16 { return c.cfg.Port }

// String describes the connection without its password: user@host:port/db.
func (c *Conn) String() string {
	host := c.cfg.Host
	if strings.HasPrefix(host, "/") {
		host = "[" + host + "]"
	}
	return fmt.Sprintf("%s@%s/%s", c.cfg.User, net.JoinHostPort(host, fmt.Sprint(c.cfg.Port)), c.cfg.Database)
}

// WithDatabase returns the same server connection pointed at another database.
func (c *Conn) WithDatabase(db string) *Conn {
	cfg := c.cfg.Copy()
	cfg.Database = db
	return &Conn{cfg: cfg, raw: c.raw, side: c.side}
}

// Named returns the same connection labelled with the part its server
// plays ("source", "target"), which its connection errors name.
func (c *Conn) Named(side string) *Conn {
	return &Conn{cfg: c.cfg.Copy(), raw: c.raw, side: side}
}

// Config returns a copy of the pgconn configuration, safe to modify.
func (c *Conn) Config() *pgconn.Config { return c.cfg.Copy() }

// Connect opens an ordinary SQL session.
func (c *Conn) Connect(ctx context.Context) (*pgx.Conn, error) {
	return c.ConnectWith(ctx, nil)
}

// ConnectWith opens an ordinary SQL session with extra session settings
// (GUCs sent in the startup packet).
func (c *Conn) ConnectWith(ctx context.Context, settings map[string]string) (*pgx.Conn, error) {
	cc, err := pgx.ParseConfig("")
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", c, err)
	}
	cc.Config = *c.cfg.Copy()
	for k, v := range settings {
		cc.RuntimeParams[k] = v
	}
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return nil, connectError(c, err)
	}
	return conn, nil
}

// ConnectPg opens a low-level SQL session without pgx's statement cache.
func (c *Conn) ConnectPg(ctx context.Context) (*pgconn.PgConn, error) {
	conn, err := pgconn.ConnectConfig(ctx, c.cfg.Copy())
	if err != nil {
		return nil, connectError(c, err)
	}
	return conn, nil
}

// ConnectReplication opens a logical replication connection
// (replication=database) to the connection's database.
func (c *Conn) ConnectReplication(ctx context.Context) (*pgconn.PgConn, error) {
	return c.ConnectReplicationWith(ctx, nil)
}

// replicationReadBuffer is the read buffer of replication connections.
const replicationReadBuffer = 1 << 20

// ConnectReplicationWith opens a logical replication connection with extra
// session settings (GUCs sent in the startup packet).
func (c *Conn) ConnectReplicationWith(ctx context.Context, settings map[string]string) (*pgconn.PgConn, error) {
	cfg := c.cfg.Copy()
	for k, v := range settings {
		cfg.RuntimeParams[k] = v
	}
	cfg.RuntimeParams["replication"] = "database"
	// A stream of small messages: a large read buffer takes many of them
	// per system call.
	cfg.BuildFrontend = func(r io.Reader, w io.Writer) *pgproto3.Frontend {
		return pgproto3.NewFrontend(bufio.NewReaderSize(r, replicationReadBuffer), w)
	}
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, connectError(c, err)
	}
	return conn, nil
}
