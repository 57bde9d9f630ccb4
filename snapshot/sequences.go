package snapshot

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// userSequencesSQL lists user sequences, leaving out system schemas, the
// tool's own schema and sequences that belong to extensions, with whether
// the session's role may reach each (USAGE on its schema), read it
// (SELECT) and, with $1, set it (UPDATE).
const userSequencesSQL = `SELECT n.nspname, c.relname,
	has_schema_privilege(n.oid, 'USAGE') AND has_sequence_privilege(c.oid, 'SELECT') AND (NOT $1 OR has_sequence_privilege(c.oid, 'UPDATE'))
	FROM pg_class c
	JOIN pg_namespace n ON n.oid = c.relnamespace
	WHERE c.relkind = 'S' AND n.nspname NOT LIKE 'pg\_%' AND n.nspname NOT IN ('information_schema', 'seren_replicator')
	  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
	ORDER BY 1, 2`

// listSequencesSQL lists user sequences (see userSequencesSQL).
const listSequencesSQL = `SELECT nspname, relname FROM (` + userSequencesSQL + `) s ORDER BY 1, 2`

// BlockedSequence is a sequence SyncSequences could not copy for lack of
// privileges on one side.
type BlockedSequence struct {
	OnTarget     bool // else on the source
	Schema, Name string
}

// SequencesBlocked returns the sequences SyncSequences could not copy for
// lack of privileges: a source sequence the source role may not reach and
// read (USAGE on its schema, SELECT), and a target sequence of the same
// name the target role may not reach, read and set (USAGE, SELECT and
// UPDATE: setval compares with the current value).
func SequencesBlocked(ctx context.Context, src, dst *pgx.Conn) ([]BlockedSequence, error) {
	list := func(c *pgx.Conn, set bool) (map[[2]string]bool, error) {
		rows, err := c.Query(ctx, userSequencesSQL, set)
		if err != nil {
			return nil, err
		}
		out := map[[2]string]bool{}
		var s, n string
		var allowed bool
		_, err = pgx.ForEachRow(rows, []any{&s, &n, &allowed}, func() error {
			out[[2]string{s, n}] = allowed
			return nil
		})
		return out, err
	}
	onSource, err := list(src, false)
	if err != nil {
		return nil, fmt.Errorf("list source sequences: %w", err)
	}
	onTarget, err := list(dst, true)
	if err != nil {
		return nil, fmt.Errorf("list target sequences: %w", err)
	}
	var blocked []BlockedSequence
	for _, name := range slices.SortedFunc(maps.Keys(onSource), func(a, b [2]string) int { return cmp.Compare(a[0]+"\x00"+a[1], b[0]+"\x00"+b[1]) }) {
		if !onSource[name] {
			blocked = append(blocked, BlockedSequence{Schema: name[0], Name: name[1]})
		}
		if allowed, ok := onTarget[name]; ok && !allowed {
			blocked = append(blocked, BlockedSequence{OnTarget: true, Schema: name[0], Name: name[1]})
		}
	}
	return blocked, nil
}

// SyncSequences moves every sequence of the target database forward to the
// value the same sequence has on the source (last_value and is_called), and
// returns how many it moved. Logical decoding does not carry sequence
// values, so init calls this after the copy and sync calls it periodically,
// after a catch-up and when it stops. A target sequence already at or past
// the source's next value is left alone: once the application writes to the
// target, moving it back would hand out values already used. Sequences
// missing on the target are left alone too.
func SyncSequences(ctx context.Context, src, dst *pgx.Conn) (int, error) {
	type seq struct {
		ident    string
		last     int64
		isCalled bool
	}
	rows, err := src.Query(ctx, listSequencesSQL, false)
	if err != nil {
		return 0, fmt.Errorf("list source sequences: %w", err)
	}
	var seqs []seq
	for rows.Next() {
		var s, n string
		if err := rows.Scan(&s, &n); err != nil {
			return 0, err
		}
		seqs = append(seqs, seq{ident: pgx.Identifier{s, n}.Sanitize()})
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("list source sequences: %w", err)
	}
	if len(seqs) == 0 {
		return 0, nil
	}
	onTarget := map[string]bool{}
	rows, err = dst.Query(ctx, listSequencesSQL, false)
	if err != nil {
		return 0, fmt.Errorf("list target sequences: %w", err)
	}
	for rows.Next() {
		var s, n string
		if err := rows.Scan(&s, &n); err != nil {
			return 0, err
		}
		onTarget[pgx.Identifier{s, n}.Sanitize()] = true
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("list target sequences: %w", err)
	}
	read := &pgx.Batch{}
	for i := range seqs {
		read.Queue("SELECT last_value, is_called FROM " + seqs[i].ident).QueryRow(func(r pgx.Row) error {
			return r.Scan(&seqs[i].last, &seqs[i].isCalled)
		})
	}
	if err := src.SendBatch(ctx, read).Close(); err != nil {
		return 0, fmt.Errorf("read source sequences: %w", err)
	}
	write := &pgx.Batch{}
	n := 0
	for _, s := range seqs {
		if !onTarget[s.ident] {
			continue
		}
		// The next value each side would hand out, compared in the
		// sequence's direction (numeric: last_value + increment may pass
		// the bigint range at the sequence's end).
		write.Queue(`SELECT setval($1::regclass, $2::bigint, $3::bool)
			FROM (SELECT last_value::numeric + CASE WHEN is_called THEN q.seqincrement ELSE 0 END AS next,
					$2::numeric + CASE WHEN $3 THEN q.seqincrement ELSE 0 END AS want, q.seqincrement AS inc
				FROM `+s.ident+`, pg_sequence q WHERE q.seqrelid = $1::regclass) v
			WHERE CASE WHEN v.inc > 0 THEN v.next < v.want ELSE v.next > v.want END`, s.ident, s.last, s.isCalled).
			Exec(func(tag pgconn.CommandTag) error {
				n += int(tag.RowsAffected())
				return nil
			})
	}
	if write.Len() == 0 {
		return 0, nil
	}
	if err := dst.SendBatch(ctx, write).Close(); err != nil {
		return 0, fmt.Errorf("set target sequences: %w", err)
	}
	return n, nil
}
