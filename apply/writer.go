package apply

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// One process applies a slot's changes to a target database at a time. The
// applier's target session holds an advisory lock named after the slot for
// as long as it lives (the server releases it when the session ends, however
// the process died), so a second sync, or an init about to drop the target,
// finds the first one and refuses before it changes anything. The checkpoint
// statements guard the same rule inside each batch (see batcher.go).

// ErrBusy means another session holds the slot's writer lock on the target.
var ErrBusy = errors.New("another process is applying this migration")

// writerWait is how long a new applier waits for the lock: a session of a
// process that was just killed may still be finishing its statement.
const writerWait = 5 * time.Second

// writerLockKey is the advisory lock of a slot ($1) as one bigint.
const writerLockKey = `hashtextextended('postgres-seren-replicator/' || $1, 0)`

// holderSQL describes the session holding the slot's lock ($1).
const holderSQL = `SELECT format('pid %s on the target, %s, application %s, connected since %s',
		a.pid, coalesce('from ' || host(a.client_addr), 'local'), coalesce(nullif(a.application_name, ''), '(none)'),
		to_char(a.backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS UTC'))
	FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
	WHERE l.locktype = 'advisory' AND l.granted AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
	AND (l.classid::bigint << 32 | l.objid::bigint) = ` + writerLockKey + ` AND l.objsubid = 1`

// lockWriter takes the slot's writer lock on the applier's session, waiting
// up to writerWait, and says who holds it when it cannot.
func lockWriter(ctx context.Context, conn *pgconn.PgConn, slot string) error {
	deadline := time.Now().Add(writerWait)
	for {
		res := conn.ExecParams(ctx, `SELECT pg_try_advisory_lock(`+writerLockKey+`)`, [][]byte{[]byte(slot)}, nil, nil, nil).Read()
		if res.Err != nil {
			return classify(fmt.Errorf("take the writer lock on the target: %w", res.Err))
		}
		if len(res.Rows) == 1 && string(res.Rows[0][0]) == "t" {
			return nil
		}
		if time.Now().After(deadline) {
			holder := conn.ExecParams(ctx, holderSQL, [][]byte{[]byte(slot)}, nil, nil, nil).Read()
			who := "a session that no longer shows in pg_stat_activity"
			if holder.Err == nil && len(holder.Rows) > 0 {
				who = string(holder.Rows[0][0])
			}
			return fmt.Errorf("slot %s: %w (%s)", slot, ErrBusy, who)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Holder reports whether a sync is applying slot's changes to the target
// database conn is connected to, and who: callers about to change the
// target refuse while one is.
func Holder(ctx context.Context, conn *pgx.Conn, slot string) (who string, busy bool, err error) {
	err = conn.QueryRow(ctx, holderSQL, slot).Scan(&who)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("look for a running sync on the target: %w", err)
	}
	return who, true, nil
}
