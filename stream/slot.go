package stream

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/serenorg/postgres-seren-replicator/internal/selection"
	"github.com/serenorg/postgres-seren-replicator/internal/sqltext"
)

// DefaultSlotName derives a slot name from a database name: lower case
// letters, digits and underscores, at most 63 bytes. A hash suffix keeps
// names that had to be changed distinct.
func DefaultSlotName(db string) string {
	var b strings.Builder
	changed := false
	for _, r := range strings.ToLower(db) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '_':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
			changed = true
		}
	}
	name := "seren_" + b.String()
	if changed || strings.ToLower(db) != db || len(name) > 63 {
		sum := sha1.Sum([]byte(db))
		suffix := "_" + hex.EncodeToString(sum[:4])
		if len(name) > 63-len(suffix) {
			name = name[:63-len(suffix)]
		}
		name += suffix
	}
	return name
}

// SlotInfo describes a slot just created.
type SlotInfo struct {
	Name string
	// ConsistentPoint is where streaming must start so that it continues
	// exactly where the exported snapshot ends.
	ConsistentPoint pglogrepl.LSN
	// SnapshotName is the exported snapshot; valid until the replication
	// connection that created the slot runs another command or closes.
	SnapshotName string
}

// CreateSlot creates a logical pgoutput slot over the replication connection
// repl. With export, the slot's snapshot is exported for SET TRANSACTION
// SNAPSHOT; keep repl open and idle until every reader has imported it.
func CreateSlot(ctx context.Context, repl *pgconn.PgConn, name string, export bool) (SlotInfo, error) {
	action := "NOEXPORT_SNAPSHOT"
	if export {
		action = "EXPORT_SNAPSHOT"
	}
	if serverMajor(repl) >= 15 {
		action = "(SNAPSHOT 'nothing')"
		if export {
			action = "(SNAPSHOT 'export')"
		}
	}
	res, err := pglogrepl.CreateReplicationSlot(ctx, repl, pgx.Identifier{name}.Sanitize(), "pgoutput",
		pglogrepl.CreateReplicationSlotOptions{Mode: pglogrepl.LogicalReplication, SnapshotAction: action})
	if err != nil {
		return SlotInfo{}, fmt.Errorf("create replication slot %s: %w", name, err)
	}
	lsn, err := pglogrepl.ParseLSN(res.ConsistentPoint)
	if err != nil {
		return SlotInfo{}, fmt.Errorf("create replication slot %s: consistent point: %w", name, err)
	}
	return SlotInfo{Name: name, ConsistentPoint: lsn, SnapshotName: res.SnapshotName}, nil
}

// CreateTemporarySlot creates a temporary logical pgoutput slot with an
// exported snapshot over repl. The source drops the slot when repl closes,
// so nothing is left behind if the process dies; keep repl open and idle
// until every reader has imported the snapshot.
func CreateTemporarySlot(ctx context.Context, repl *pgconn.PgConn, name string) (SlotInfo, error) {
	action := "EXPORT_SNAPSHOT"
	if serverMajor(repl) >= 15 {
		action = "(SNAPSHOT 'export')"
	}
	res, err := pglogrepl.CreateReplicationSlot(ctx, repl, pgx.Identifier{name}.Sanitize(), "pgoutput",
		pglogrepl.CreateReplicationSlotOptions{Temporary: true, Mode: pglogrepl.LogicalReplication, SnapshotAction: action})
	if err != nil {
		return SlotInfo{}, fmt.Errorf("create temporary replication slot %s: %w", name, err)
	}
	lsn, err := pglogrepl.ParseLSN(res.ConsistentPoint)
	if err != nil {
		return SlotInfo{}, fmt.Errorf("create temporary replication slot %s: consistent point: %w", name, err)
	}
	return SlotInfo{Name: name, ConsistentPoint: lsn, SnapshotName: res.SnapshotName}, nil
}

func serverMajor(conn *pgconn.PgConn) int {
	var v int
	fmt.Sscanf(conn.ParameterStatus("server_version"), "%d", &v)
	return v
}

// SlotState is a slot as pg_replication_slots shows it.
type SlotState struct {
	Name     string
	Database string
	Plugin   string
	Active   bool
	// ConfirmedFlush is the position the source knows the client has durably applied.
	ConfirmedFlush pglogrepl.LSN
	// WALStatus is reserved, extended, unreserved or lost (empty before PG13).
	WALStatus string
	// RetainedBytes is the WAL the slot keeps on the source.
	RetainedBytes int64
}

// ErrSlotMissing means the slot does not exist on the source.
var ErrSlotMissing = errors.New("replication slot does not exist")

// LookupSlot reads the slot's state over an ordinary SQL session.
func LookupSlot(ctx context.Context, conn *pgx.Conn, name string) (SlotState, error) {
	s := SlotState{Name: name}
	var confirmed, walStatus *string
	var db, plugin *string
	walStatusCol := "NULL::text"
	if serverMajor(conn.PgConn()) >= 13 {
		walStatusCol = "wal_status"
	}
	err := conn.QueryRow(ctx, `SELECT database, plugin, active, confirmed_flush_lsn::text, `+walStatusCol+`,
		COALESCE(pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() ELSE pg_current_wal_lsn() END, restart_lsn), 0)::bigint
		FROM pg_replication_slots WHERE slot_name = $1`, name).
		Scan(&db, &plugin, &s.Active, &confirmed, &walStatus, &s.RetainedBytes)
	if errors.Is(err, pgx.ErrNoRows) {
		return s, fmt.Errorf("slot %s: %w", name, ErrSlotMissing)
	}
	if err != nil {
		return s, fmt.Errorf("look up slot %s: %w", name, err)
	}
	if db != nil {
		s.Database = *db
	}
	if plugin != nil {
		s.Plugin = *plugin
	}
	if walStatus != nil {
		s.WALStatus = *walStatus
	}
	if confirmed != nil {
		if s.ConfirmedFlush, err = pglogrepl.ParseLSN(*confirmed); err != nil {
			return s, fmt.Errorf("slot %s: %w", name, err)
		}
	}
	return s, nil
}

// ErrSlotActive means another connection is streaming the slot.
var ErrSlotActive = errors.New("replication slot is in use")

// ReleaseSlot ends the walsender that holds the slot and waits (up to
// wait) until the slot is free. It is for a caller that knows no live
// client of its own can hold the slot: a walsender whose client vanished
// without a word (a crash, a network black hole) keeps the slot until its
// wal_sender_timeout, forever when that is 0. Only a walsender whose
// application_name is app is ended; another client of the slot is left
// alone and reported as ErrSlotActive. It returns a description of the
// session it ended ("" when the slot was free).
func ReleaseSlot(ctx context.Context, conn *pgx.Conn, name, app string, wait time.Duration) (string, error) {
	var pid *int64
	var holder string
	var holderApp *string
	err := conn.QueryRow(ctx, `SELECT s.active_pid, a.application_name,
			format('pid %s (user %s, application %s, from %s, streaming since %s)', s.active_pid,
				coalesce(a.usename::text, '?'), coalesce(nullif(a.application_name, ''), '?'),
				coalesce(host(a.client_addr), 'local'), coalesce(a.backend_start::timestamptz(0)::text, '?'))
		FROM pg_replication_slots s LEFT JOIN pg_stat_activity a ON a.pid = s.active_pid
		WHERE s.slot_name = $1`, name).Scan(&pid, &holderApp, &holder)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", fmt.Errorf("slot %s: %w", name, ErrSlotMissing)
	}
	if err != nil {
		return "", fmt.Errorf("look up the holder of slot %s: %w", name, err)
	}
	if pid == nil {
		return "", nil
	}
	if holderApp == nil || *holderApp != app {
		return "", fmt.Errorf("slot %s is streamed by %s, which is not this tool (application %s): stop that client: %w", name, holder, app, ErrSlotActive)
	}
	if _, err := conn.Exec(ctx, `SELECT pg_terminate_backend($1)`, *pid); err != nil {
		return holder, fmt.Errorf("end the walsender holding slot %s, %s: %w", name, holder, err)
	}
	deadline := time.Now().Add(wait)
	for {
		var active bool
		if err := conn.QueryRow(ctx, `SELECT active FROM pg_replication_slots WHERE slot_name = $1`, name).Scan(&active); err != nil {
			return holder, fmt.Errorf("slot %s: %w", name, err)
		}
		if !active {
			return holder, nil
		}
		if time.Now().After(deadline) {
			return holder, fmt.Errorf("slot %s is still held after ending %s: %w", name, holder, ErrSlotActive)
		}
		select {
		case <-ctx.Done():
			return holder, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// DropSlot drops the slot if it exists, waiting for it to become inactive.
func DropSlot(ctx context.Context, conn *pgx.Conn, name string) (dropped bool, err error) {
	tag, err := conn.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`, name)
	if err != nil {
		return false, fmt.Errorf("drop slot %s: %w", name, err)
	}
	return tag.RowsAffected() > 0, nil
}

// EnsurePublication creates the publication, or changes an existing one, so
// that it covers exactly tables (all four operations published).
func EnsurePublication(ctx context.Context, conn *pgx.Conn, name string, tables []selection.Table) error {
	list := make([]string, len(tables))
	for i, t := range tables {
		list[i] = pgx.Identifier{t.Schema, t.Name}.Sanitize()
	}
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)`, name).Scan(&exists); err != nil {
		return fmt.Errorf("publication %s: %w", name, err)
	}
	pub := pgx.Identifier{name}.Sanitize()
	var sql string
	switch {
	case !exists && len(list) == 0:
		sql = "CREATE PUBLICATION " + pub + " WITH (publish = 'insert, update, delete, truncate')"
	case !exists:
		sql = "CREATE PUBLICATION " + pub + " FOR TABLE " + strings.Join(list, ", ") + " WITH (publish = 'insert, update, delete, truncate')"
	case len(list) == 0:
		sql = "ALTER PUBLICATION " + pub + " SET (publish = 'insert, update, delete, truncate')"
		// An empty SET TABLE list is not valid SQL; drop whatever it had.
		if _, err := conn.Exec(ctx, `DO $$ DECLARE r record; BEGIN
			FOR r IN SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = `+sqltext.Literal(name)+` LOOP
				EXECUTE format('ALTER PUBLICATION %I DROP TABLE %I.%I', `+sqltext.Literal(name)+`, r.schemaname, r.tablename);
			END LOOP; END $$`); err != nil {
			return fmt.Errorf("publication %s: %w", name, err)
		}
	default:
		sql = "ALTER PUBLICATION " + pub + " SET TABLE " + strings.Join(list, ", ")
	}
	if _, err := conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("publication %s: %w", name, err)
	}
	return nil
}

// DropPublication drops the publication if it exists.
func DropPublication(ctx context.Context, conn *pgx.Conn, name string) (dropped bool, err error) {
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)`, name).Scan(&exists); err != nil {
		return false, fmt.Errorf("drop publication %s: %w", name, err)
	}
	if !exists {
		return false, nil
	}
	if _, err := conn.Exec(ctx, "DROP PUBLICATION "+pgx.Identifier{name}.Sanitize()); err != nil {
		return false, fmt.Errorf("drop publication %s: %w", name, err)
	}
	return true, nil
}
