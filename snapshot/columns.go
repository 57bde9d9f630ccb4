package snapshot

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/serenorg/postgres-seren-replicator/checkpoint"
)

// tableColumns is a source table's OID and its columns as pgoutput sends
// them (not generated ones) by attribute number, read in a copy's snapshot:
// what the target's copy has. Recorded with the table's state, it lets the
// stream tell a column's rename from a drop and an add
// (checkpoint.SourceColumns).
type tableColumns struct {
	relid uint32
	cols  checkpoint.SourceColumns
}

// readTableColumns reads a table's columns in the snapshot q is in; ident
// is the table's quoted name.
func readTableColumns(ctx context.Context, q pgx.Tx, ident string) (tableColumns, error) {
	tc := tableColumns{cols: checkpoint.SourceColumns{}}
	rows, err := q.Query(ctx, `SELECT a.attrelid::int8, a.attnum, a.attname FROM pg_attribute a
		WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''`, ident)
	if err != nil {
		return tc, fmt.Errorf("read the columns of %s on the source: %w", ident, err)
	}
	defer rows.Close()
	for rows.Next() {
		var relid int64
		var num int16
		var name string
		if err := rows.Scan(&relid, &num, &name); err != nil {
			return tc, fmt.Errorf("read the columns of %s on the source: %w", ident, err)
		}
		tc.relid, tc.cols[num] = uint32(relid), name
	}
	if err := rows.Err(); err != nil {
		return tc, fmt.Errorf("read the columns of %s on the source: %w", ident, err)
	}
	return tc, nil
}

// record records the columns on the target in the caller's transaction.
func (tc tableColumns) record(ctx context.Context, q checkpoint.Querier, store checkpoint.Store, slot string) error {
	if tc.relid == 0 {
		return nil
	}
	return store.RecordColumns(ctx, q, slot, tc.relid, tc.cols)
}
