package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/serenorg/postgres-seren-replicator/internal/plan"
	"github.com/serenorg/postgres-seren-replicator/stream"
)

// The fence stops writes on the source so that the drain can reach a
// position after which nothing is written. A read-only fence sets
// default_transaction_read_only on the databases and ends the sessions that
// began before it; it cannot stop a client that turns read-only off itself
// (SET, BEGIN READ WRITE), so cutover refuses where the catalog already
// does that for a role, and a prepared transaction, which outlives every
// session, blocks the fence until it is committed or rolled back.

// canFence checks, before anything changes, that the source role may fence
// the database and that nothing is known to get through the fence.
func (c *CutoverCmd) canFence(ctx context.Context, db plan.Database) error {
	conn, err := db.Source.Connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if err := noPreparedTransactions(ctx, conn, db); err != nil {
		return err
	}
	if c.Fence != "read-only" {
		return nil
	}
	var owner, signal bool
	if err := conn.QueryRow(ctx, `SELECT pg_has_role(current_user, d.datdba, 'MEMBER') OR r.rolsuper,
			pg_has_role(current_user, 'pg_signal_backend', 'MEMBER') OR r.rolsuper
		FROM pg_database d, pg_roles r WHERE d.datname = current_database() AND r.rolname = current_user`).Scan(&owner, &signal); err != nil {
		return fmt.Errorf("check the source role's rights on %s: %w", db.Name, err)
	}
	if !owner {
		return fmt.Errorf("%w: the source role may not run ALTER DATABASE %s (it must own the database): connect as its owner, or stop the application yourself and use --fence=none",
			ErrCheckFailed, pgx.Identifier{db.Name}.Sanitize())
	}
	var overrides []string
	rows, err := conn.Query(ctx, `SELECT coalesce(r.rolname, 'every role')
		FROM pg_db_role_setting s LEFT JOIN pg_roles r ON r.oid = s.setrole
		WHERE s.setrole <> 0 AND s.setdatabase IN (0, (SELECT oid FROM pg_database WHERE datname = current_database()))
		AND EXISTS (SELECT 1 FROM unnest(s.setconfig) AS c WHERE c ILIKE 'default_transaction_read_only=%')`)
	if err != nil {
		return fmt.Errorf("read role settings on %s: %w", db.Name, err)
	}
	for rows.Next() {
		var role string
		if err := rows.Scan(&role); err != nil {
			return err
		}
		overrides = append(overrides, role)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if len(overrides) > 0 {
		return fmt.Errorf("%w: role(s) %s set default_transaction_read_only themselves, which wins over the database's: their sessions would write through a read-only fence: run ALTER ROLE … RESET default_transaction_read_only, or stop the application yourself and use --fence=none",
			ErrCheckFailed, strings.Join(overrides, ", "))
	}
	if !signal {
		var others []string
		rows, err := conn.Query(ctx, `SELECT DISTINCT usename::text FROM pg_stat_activity
			WHERE datname = current_database() AND backend_type = 'client backend' AND usename <> current_user`)
		if err != nil {
			return fmt.Errorf("list sessions on %s: %w", db.Name, err)
		}
		for rows.Next() {
			var u string
			if err := rows.Scan(&u); err != nil {
				return err
			}
			others = append(others, u)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if len(others) > 0 {
			return fmt.Errorf("%w: sessions of %s are connected to %s and the source role may not end them: GRANT pg_signal_backend TO the role, or stop the application yourself and use --fence=none",
				ErrCheckFailed, strings.Join(others, ", "), db.Name)
		}
	}
	return nil
}

// noPreparedTransactions refuses while a prepared transaction waits in the
// database: COMMIT PREPARED works in a read-only session, after the fence.
func noPreparedTransactions(ctx context.Context, conn *pgx.Conn, db plan.Database) error {
	var gids []string
	rows, err := conn.Query(ctx, `SELECT gid FROM pg_prepared_xacts WHERE database = current_database() ORDER BY prepared`)
	if err != nil {
		return fmt.Errorf("list prepared transactions on %s: %w", db.Name, err)
	}
	for rows.Next() {
		var g string
		if err := rows.Scan(&g); err != nil {
			return err
		}
		gids = append(gids, g)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if len(gids) > 0 {
		return fmt.Errorf("%w: prepared transaction(s) %s wait in %s and would commit after the fence: COMMIT PREPARED or ROLLBACK PREPARED them first",
			ErrCheckFailed, strings.Join(gids, ", "), db.Name)
	}
	return nil
}

// fenceSession opens a source session that may write (the fence makes new
// sessions read-only).
func fenceSession(ctx context.Context, db plan.Database) (*pgx.Conn, error) {
	return db.Source.ConnectWith(ctx, map[string]string{"default_transaction_read_only": "off"})
}

// fence stops writes to the databases and returns the sessions it ended.
// read-only: every database is made read-only first, then the sessions
// that began before are given --grace to finish and are ended, and waited
// for. none: no client session may be connected after --grace. hook:
// --fence-command runs, then no write may be in flight after --grace.
func (c *CutoverCmd) fence(ctx context.Context, env *Env, dbs []plan.Database) ([]string, error) {
	if c.Fence == "hook" {
		if _, err := runHook(ctx, env.Stderr, "fence-command", c.FenceCommand, c.HookTimeout, dbs); err != nil {
			return nil, err
		}
		return []string{"fence-command done, no write in flight"}, c.noWrites(ctx, dbs, c.Grace)
	}
	fencedAt := map[string]time.Time{}
	if c.Fence == "read-only" {
		for _, db := range dbs {
			conn, err := fenceSession(ctx, db)
			if err != nil {
				return nil, err
			}
			var at time.Time
			_, err = conn.Exec(ctx, "ALTER DATABASE "+pgx.Identifier{db.Name}.Sanitize()+" SET default_transaction_read_only = on")
			if err == nil {
				// Taken after the ALTER committed: sessions starting later
				// read the new setting.
				err = conn.QueryRow(ctx, "SELECT clock_timestamp()").Scan(&at)
			}
			conn.Close(context.Background())
			if err != nil {
				return nil, fmt.Errorf("make %s read-only: %w", db.Name, err)
			}
			fencedAt[db.Name] = at
		}
	}
	if c.Fence == "none" {
		return nil, c.noClients(ctx, dbs, c.Grace)
	}
	deadline := time.Now().Add(c.Grace)
	var ended []string
	for _, db := range dbs {
		names, err := c.endSessions(ctx, db, fencedAt[db.Name], deadline)
		if err != nil {
			return nil, err
		}
		ended = append(ended, names...)
	}
	return ended, nil
}

// sessionsSQL lists the client sessions on the current database other than
// this tool's (which write no application data); $2 limits them to those
// that began before a time.
const sessionsSQL = `SELECT pid, format('pid %s (%s, %s, %s)', pid, coalesce(usename::text, '?'), coalesce(nullif(application_name, ''), '?'), coalesce(host(client_addr), 'local'))
	FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'
	AND application_name <> $1 AND backend_start < $2`

func listSessions(ctx context.Context, conn *pgx.Conn, app string, before time.Time) ([]int64, []string, error) {
	rows, err := conn.Query(ctx, sessionsSQL, app, before)
	if err != nil {
		return nil, nil, err
	}
	var pids []int64
	var names []string
	for rows.Next() {
		var pid int64
		var name string
		if err := rows.Scan(&pid, &name); err != nil {
			return nil, nil, err
		}
		pids, names = append(pids, pid), append(names, name)
	}
	return pids, names, rows.Err()
}

// endSessions waits until deadline for the sessions that began before the
// fence to end, ends the rest, and waits until they are gone: a backend
// past the point of no return in COMMIT still writes its commit.
func (c *CutoverCmd) endSessions(ctx context.Context, db plan.Database, fencedAt, deadline time.Time) ([]string, error) {
	conn, err := fenceSession(ctx, db)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	app := db.Source.ApplicationName()
	var ended []string
	empty := 0
	for {
		pids, names, err := listSessions(ctx, conn, app, fencedAt)
		if err != nil {
			return nil, fmt.Errorf("list sessions on %s: %w", db.Name, err)
		}
		if len(pids) == 0 {
			// Twice, a moment apart: a backend that started before the fence
			// shows in pg_stat_activity only once it has set up.
			if empty++; empty == 2 {
				break
			}
			time.Sleep(100 * time.Millisecond)
			continue
		}
		empty = 0
		if time.Now().Before(deadline) || len(ended) > 0 {
			if len(ended) > 0 && time.Now().After(deadline.Add(10*time.Second)) {
				return nil, fmt.Errorf("sessions on %s did not end: %s", db.Name, strings.Join(names, ", "))
			}
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if _, err := conn.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid`, pids); err != nil {
			return nil, fmt.Errorf("end sessions on %s: %w", db.Name, err)
		}
		for _, n := range names {
			ended = append(ended, "ended "+n)
		}
	}
	return ended, noPreparedTransactions(ctx, conn, db)
}

// noClients checks, until grace has passed, that no client session other
// than this tool's is connected to the databases (--fence=none: the user
// stopped the application).
func (c *CutoverCmd) noClients(ctx context.Context, dbs []plan.Database, grace time.Duration) error {
	deadline := time.Now().Add(grace)
	for _, db := range dbs {
		conn, err := db.Source.Connect(ctx)
		if err != nil {
			return err
		}
		for {
			_, names, err := listSessions(ctx, conn, db.Source.ApplicationName(), time.Now().Add(time.Hour))
			if err == nil && len(names) == 0 {
				err = noPreparedTransactions(ctx, conn, db)
			}
			if err == nil && len(names) > 0 && time.Now().After(deadline) {
				err = fmt.Errorf("%w: the application is still connected to %s: %s: stop it, or use --fence=read-only",
					ErrCheckFailed, db.Name, strings.Join(names, ", "))
			}
			if err != nil || len(names) == 0 {
				conn.Close(context.Background())
				if err != nil {
					return err
				}
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
}

// markFence writes a record to the source's WAL after every fenced write
// and returns its position: the drain reaches it once the target has applied
// everything before it (the record itself carries no change).
func markFence(ctx context.Context, db plan.Database) (pglogrepl.LSN, error) {
	conn, err := fenceSession(ctx, db)
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.Background())
	var s string
	if err := conn.QueryRow(ctx, `SELECT pg_logical_emit_message(false, $1, '')::text`, stream.FenceMessagePrefix).Scan(&s); err != nil {
		return 0, fmt.Errorf("mark the fence in the source WAL: %w", err)
	}
	return pglogrepl.ParseLSN(s)
}

// unfenceRetryFor is how long unfence keeps trying a source that does not
// answer: the fault that failed the cutover may be passing, and a source
// left read-only keeps the application from writing.
const unfenceRetryFor = 30 * time.Second

// unfence makes a database writable again, retrying while the source
// cannot be reached or refuses connections for a while (a restart).
func unfence(ctx context.Context, db plan.Database) error {
	deadline := time.Now().Add(unfenceRetryFor)
	for {
		err := unfenceOnce(ctx, db)
		var pgErr *pgconn.PgError
		answered := errors.As(err, &pgErr) && !strings.HasPrefix(pgErr.Code, "08") && !strings.HasPrefix(pgErr.Code, "57")
		if err == nil || answered || ctx.Err() != nil || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func unfenceOnce(ctx context.Context, db plan.Database) error {
	conn, err := fenceSession(ctx, db)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, "ALTER DATABASE "+pgx.Identifier{db.Name}.Sanitize()+" RESET default_transaction_read_only")
	return err
}
