// Package preflight checks that a source and a target server are ready for
// replication: settings, privileges, versions and table properties. Each
// finding is a Check with, when something is wrong, the exact SQL or setting
// that fixes it. Only problems the user fixes in the command line itself
// (an unreachable server, a refused login, source equal to target) are
// returned as errors.
package preflight

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/serenorg/postgres-seren-replicator/checkpoint"
	"github.com/serenorg/postgres-seren-replicator/internal/conninfo"
	"github.com/serenorg/postgres-seren-replicator/internal/plan"
	"github.com/serenorg/postgres-seren-replicator/stream"
)

// Status is the outcome of one check.
type Status string

// The three outcomes. Only Fail makes validation fail; Warn reports a risk
// the user should know about before replicating.
const (
	Pass Status = "pass"
	Warn Status = "warn"
	Fail Status = "fail"
)

// Check is the result of one check.
type Check struct {
	// Name says what was checked ("wal_level", "target tables").
	Name string `json:"name"`
	// Database is the database a per-database check looked at; empty for
	// server-wide checks.
	Database string `json:"database,omitempty"`
	Status   Status `json:"status"`
	// Detail says what was found.
	Detail string `json:"detail"`
	// Fix is the SQL or setting that resolves a failure or warning.
	Fix string `json:"fix,omitempty"`
}

// DefaultRetainedWALWarn is the WAL an inactive slot may hold on the source
// before validation warns about it: 1 GiB.
const DefaultRetainedWALWarn int64 = 1 << 30

// Options tune the checks. The zero Options uses the defaults.
type Options struct {
	// PgDump is the pg_dump binary to check; empty means the one init would
	// pick (pgtools.Find: $PG_DUMP, then PATH and the usual installation
	// directories).
	PgDump string
	// RetainedWALWarn is the WAL in bytes an inactive slot may retain before
	// a warning; DefaultRetainedWALWarn when zero.
	RetainedWALWarn int64
	// CheckpointSchema is the target schema for checkpoints;
	// checkpoint.DefaultSchema when empty.
	CheckpointSchema string
	// IdentityFull says init will set REPLICA IDENTITY FULL on tables
	// without a key (init --replica-identity-full) instead of refusing them.
	IdentityFull bool
	// Slot is the replication slot of the (only) database, as init --slot;
	// empty means stream.DefaultSlotName of each database.
	Slot string
	// Publication is the source publication, as init --publication; empty
	// means the one named from the slot (stream.FindPublication).
	Publication string
	// DropExisting checks as for init --drop-existing, which drops a slot
	// left by an earlier init instead of refusing it.
	DropExisting bool
}

// slotFor is the slot of database db.
func (o Options) slotFor(db string) string {
	if o.Slot != "" {
		return o.Slot
	}
	return stream.DefaultSlotName(db)
}

// ErrSameDatabase means the source and the target are one database on one
// server. It is returned wrapped in conninfo.ErrConfig (exit code 2).
var ErrSameDatabase = errors.New("source and target are the same database")

// server is what the checks need to know about one server and the role the
// tool logs in as.
type server struct {
	versionNum int
	version    string
	// identity tells servers apart: the system identifier when the role may
	// read it, otherwise the postmaster start time.
	identity    string
	user        string
	super       bool
	createDB    bool
	replication bool
}

func (s server) major() int { return s.versionNum / 10000 }

// Run checks the source and target of every database of p.
func Run(ctx context.Context, p plan.Plan, opts Options) ([]Check, error) {
	if len(p.Databases) == 0 {
		return nil, errors.New("preflight: the plan selects no database")
	}
	if opts.RetainedWALWarn <= 0 {
		opts.RetainedWALWarn = DefaultRetainedWALWarn
	}
	if opts.CheckpointSchema == "" {
		opts.CheckpointSchema = checkpoint.DefaultSchema
	}
	first := p.Databases[0]
	src, err := first.Source.Connect(ctx)
	if err != nil {
		return nil, err
	}
	defer src.Close(context.WithoutCancel(ctx))
	srcInfo, err := readServer(ctx, src)
	if err != nil {
		return nil, fmt.Errorf("source %s: %w", first.Source, err)
	}
	dst, err := connectTargetServer(ctx, first.Target)
	if err != nil {
		return nil, err
	}
	defer dst.Close(context.WithoutCancel(ctx))
	dstInfo, err := readServer(ctx, dst)
	if err != nil {
		return nil, fmt.Errorf("target %s: %w", first.Target, err)
	}
	if err := checkDistinct(p, srcInfo, dstInfo); err != nil {
		return nil, err
	}
	checks := []Check{
		{Name: "source reachable", Status: Pass, Detail: fmt.Sprintf("PostgreSQL %s, logged in as %s", srcInfo.version, srcInfo.user)},
		{Name: "target reachable", Status: Pass, Detail: fmt.Sprintf("PostgreSQL %s, logged in as %s", dstInfo.version, dstInfo.user)},
		{Name: "source and target differ", Status: Pass, Detail: distinctDetail(srcInfo, dstInfo)},
	}
	add := func(c []Check, err error) error {
		checks = append(checks, c...)
		return err
	}
	src1 := &sourceServer{conn: src, info: srcInfo, plan: p, slotFor: opts.slotFor}
	steps := []func() ([]Check, error){
		func() ([]Check, error) { return src1.walLevel(ctx) },
		func() ([]Check, error) { return src1.capacity(ctx) },
		func() ([]Check, error) { return src1.replicationRole(ctx, first.Source) },
		func() ([]Check, error) { return one(checkPgDump(ctx, opts.PgDump, srcInfo.major())) },
		func() ([]Check, error) { return src1.retainedWAL(ctx, opts.RetainedWALWarn) },
		func() ([]Check, error) { return src1.preparedTransactions(ctx) },
	}
	for _, step := range steps {
		if err := add(step()); err != nil {
			return nil, err
		}
	}
	tgt := &targetServer{conn: dst, info: dstInfo, schema: opts.CheckpointSchema}
	for _, d := range p.Databases {
		if err := add(checkSourceDatabase(ctx, d, opts)); err != nil {
			return nil, err
		}
		if err := add(tgt.extensions(ctx, d)); err != nil {
			return nil, err
		}
		if err := add(tgt.database(ctx, d)); err != nil {
			return nil, err
		}
		if err := add(checkMigration(ctx, d, opts)); err != nil {
			return nil, err
		}
	}
	if err := add(one(tgt.applyMode(ctx))); err != nil {
		return nil, err
	}
	return checks, nil
}

func one(c Check, err error) ([]Check, error) { return []Check{c}, err }

// Failed counts the failed checks.
func Failed(checks []Check) int {
	n := 0
	for _, c := range checks {
		if c.Status == Fail {
			n++
		}
	}
	return n
}

func readServer(ctx context.Context, conn *pgx.Conn) (server, error) {
	var s server
	err := conn.QueryRow(ctx, `SELECT current_setting('server_version_num')::int, current_setting('server_version'),
		current_user, r.rolsuper, r.rolcreatedb, r.rolreplication
		FROM pg_roles r WHERE r.rolname = current_user`).
		Scan(&s.versionNum, &s.version, &s.user, &s.super, &s.createDB, &s.replication)
	if err != nil {
		return s, fmt.Errorf("read server settings: %w", err)
	}
	// Some managed services revoke pg_control_system(); the postmaster start
	// time, to the microsecond, is as good for telling two servers apart.
	if err := conn.QueryRow(ctx, `SELECT system_identifier::text FROM pg_control_system()`).Scan(&s.identity); err != nil {
		if err := conn.QueryRow(ctx, `SELECT 'started ' || pg_postmaster_start_time()::text`).Scan(&s.identity); err != nil {
			return s, fmt.Errorf("read server identity: %w", err)
		}
	}
	return s, nil
}

// connectTargetServer connects to the target's database or, when that
// database does not exist yet (init creates it), to a maintenance database of
// the same server.
func connectTargetServer(ctx context.Context, target *conninfo.Conn) (*pgx.Conn, error) {
	conn, err := target.Connect(ctx)
	if err == nil || !errors.Is(err, conninfo.ErrConfig) {
		return conn, err
	}
	for _, alt := range []string{"postgres", "template1"} {
		if alt == target.Database() {
			continue
		}
		c, altErr := target.WithDatabase(alt).Connect(ctx)
		if altErr != nil {
			continue
		}
		var exists bool
		if qErr := c.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, target.Database()).Scan(&exists); qErr != nil || exists {
			c.Close(ctx)
			return nil, err // the database exists: the first error is the real one
		}
		return c, nil
	}
	return nil, err
}

// checkDistinct refuses a target that is the source database itself:
// replicating a database onto itself would loop or destroy it.
func checkDistinct(p plan.Plan, src, dst server) error {
	if src.identity != dst.identity {
		return nil
	}
	for _, d := range p.Databases {
		if d.Source.Database() == d.Target.Database() {
			return fmt.Errorf("%w: %w: database %q on %s (system identifier %s); point --target at another server or database",
				conninfo.ErrConfig, ErrSameDatabase, d.Name, hostPort(d.Target), src.identity)
		}
	}
	return nil
}

func distinctDetail(src, dst server) string {
	if src.identity != dst.identity {
		return fmt.Sprintf("different servers (system identifiers %s and %s)", src.identity, dst.identity)
	}
	return "same server, different databases"
}

func hostPort(c *conninfo.Conn) string { return fmt.Sprintf("%s:%d", c.Host(), c.Port()) }

func ident(parts ...string) string { return pgx.Identifier(parts).Sanitize() }

func literal(s string) string {
	out := []byte{'\''}
	for i := 0; i < len(s); i++ {
		if s[i] == '\'' {
			out = append(out, '\'')
		}
		out = append(out, s[i])
	}
	return string(append(out, '\''))
}
