package snapshot

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/serenorg/postgres-seren-replicator/internal/conninfo"
	"github.com/serenorg/postgres-seren-replicator/internal/plan"
	"github.com/serenorg/postgres-seren-replicator/internal/sqltext"
)

// InspectTarget reports what the target database of db holds: whether it
// exists, whether it has user objects, and what an earlier init left there.
func InspectTarget(ctx context.Context, db plan.Database, schema, slot string) (TargetState, error) {
	// A bare pgconn attempt keeps the server's error code, which tells a
	// missing database from every other failure.
	probe, err := pgconn.ConnectConfig(ctx, db.Target.Config())
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "3D000" {
			return TargetState{}, nil
		}
	} else {
		probe.Close(ctx)
	}
	conn, err := db.Target.Connect(ctx)
	if err != nil {
		return TargetState{}, err
	}
	defer conn.Close(context.Background())
	return inspectTarget(ctx, conn, schema, slot)
}

// maintenance connects to the target server's maintenance database, to
// create and drop databases.
func maintenance(ctx context.Context, target *conninfo.Conn) (*pgx.Conn, error) {
	var firstErr error
	for _, name := range []string{"postgres", "template1"} {
		conn, err := target.WithDatabase(name).Connect(ctx)
		if err == nil {
			return conn, nil
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	return nil, fmt.Errorf("connect to the target server's maintenance database: %w", firstErr)
}

// CreateDatabase creates the target database of db with the source's
// encoding (falling back to the server default when the target's locale does
// not fit it).
func CreateDatabase(ctx context.Context, db plan.Database, encoding string) error {
	conn, err := maintenance(ctx, db.Target)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	name := pgx.Identifier{db.Target.Database()}.Sanitize()
	if encoding != "" {
		if _, err := conn.Exec(ctx, "CREATE DATABASE "+name+" TEMPLATE template0 ENCODING "+sqltext.Literal(encoding)); err == nil {
			return nil
		}
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return fmt.Errorf("create target database %s: %w", name, err)
	}
	return nil
}

// ResetTarget empties the target database of db so init can start over.
// With recreate it drops the database (ending other sessions on it) and
// creates it again; when that is refused, or without recreate, it drops
// every schema and large object inside instead.
func ResetTarget(ctx context.Context, db plan.Database, encoding string, recreate bool, log *slog.Logger) error {
	if recreate {
		err := dropDatabase(ctx, db.Target)
		if err == nil {
			log.Info("dropped target database", "db", db.Target.Database())
			return CreateDatabase(ctx, db, encoding)
		}
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "42501" {
			return err
		}
		log.Warn("cannot drop the target database; dropping its contents instead", "db", db.Target.Database(), "err", err)
	}
	conn, err := db.Target.Connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if err := wipeTarget(ctx, conn); err != nil {
		return err
	}
	log.Info("emptied target database", "db", db.Target.Database())
	return nil
}

// DropDatabase drops the target database of db (init created it and failed).
func DropDatabase(ctx context.Context, db plan.Database) error { return dropDatabase(ctx, db.Target) }

func dropDatabase(ctx context.Context, target *conninfo.Conn) error {
	conn, err := maintenance(ctx, target)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	name := target.Database()
	if _, err := conn.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()`, name); err != nil {
		return fmt.Errorf("end sessions on target database %s: %w", name, err)
	}
	sql := "DROP DATABASE IF EXISTS " + pgx.Identifier{name}.Sanitize()
	if serverMajor(conn.PgConn()) >= 13 { // WITH (FORCE) also ends sessions that raced in
		sql += " WITH (FORCE)"
	}
	if _, err := conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("drop target database %s: %w", name, err)
	}
	return nil
}

// serverMajor is the connected server's major version.
func serverMajor(conn *pgconn.PgConn) int {
	var v int
	fmt.Sscanf(conn.ParameterStatus("server_version"), "%d", &v)
	return v
}
