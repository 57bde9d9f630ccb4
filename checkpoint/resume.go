package checkpoint

import (
	"context"
	"fmt"

	"github.com/jackc/pglogrepl"
)

// Init records each of its tables as copied at the slot's consistent point
// as soon as the table's copy has committed, so that an init interrupted
// before its checkpoint can be resumed: the tables copied keep their copy.
// When init completes, in the transaction that saves its checkpoint, those
// states become streaming.

// ForgetTables removes every table state of a slot: init starting afresh.
func (s Store) ForgetTables(ctx context.Context, q Querier, slot string) error {
	_, err := q.Exec(ctx, fmt.Sprintf(`DELETE FROM %s WHERE slot_name = $1`, s.tablesTable()), slot)
	if err != nil && !isUndefinedTable(err) {
		return fmt.Errorf("forget table states of slot %s: %w", slot, err)
	}
	return nil
}

// StreamCopied moves the slot's tables copied at exactly at (init's own
// tables, copied at the slot's consistent point) to streaming, inside the
// caller's transaction: init's last step, with the checkpoint at at.
// Tables copied later (a resumed init copies the unfinished ones again at a
// later point) stay copied: the stream skips their older changes.
func (s Store) StreamCopied(ctx context.Context, q Querier, slot string, at pglogrepl.LSN) error {
	_, err := q.Exec(ctx, fmt.Sprintf(`UPDATE %s SET state = 'streaming', copy_lsn = NULL, since = now()
WHERE slot_name = $1 AND state = 'copied' AND copy_lsn = $2::text::pg_lsn AND cardinality(COALESCE(pending, '{}')) = 0`, s.tablesTable()), slot, at.String())
	if err != nil {
		return fmt.Errorf("record the tables of slot %s as streaming: %w", slot, err)
	}
	return nil
}
