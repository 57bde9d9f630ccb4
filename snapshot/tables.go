package snapshot

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/serenorg/postgres-seren-replicator/internal/selection"
)

// querier is what catalog reads need: a *pgx.Conn or a pgx.Tx.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// firstUserOID is FirstNormalObjectId: types below it are built in, with the
// same OID and binary format on every server.
const firstUserOID = 16384

// copyTable is one table whose rows are copied: an ordinary table or a leaf
// partition of a selected partitioned table.
type copyTable struct {
	Schema, Name string
	// Columns are the quoted names of the stored columns (generated columns
	// are left out: the target computes them).
	Columns []string
	// Binary is true when every column's type has the same binary form on
	// both servers (built-in types and enums); otherwise COPY uses text.
	Binary bool
	// Bytes is the table's size on disk (heap and TOAST), for planning and ETA.
	Bytes int64
	// Blocks is the heap size in blocks, for ctid ranges.
	Blocks int64
	// sel is the selected table this one is (or is a partition of).
	sel selection.Table
}

func (t *copyTable) ident() string { return pgx.Identifier{t.Schema, t.Name}.Sanitize() }

// String names the table for messages.
func (t *copyTable) String() string {
	return selection.Table{Schema: t.Schema, Name: t.Name}.Qualified()
}

// listCopyTables expands the selected tables into the tables holding rows:
// partitioned tables become their leaf partitions.
func listCopyTables(ctx context.Context, q querier, selected []selection.Table) ([]*copyTable, error) {
	var out []*copyTable
	for _, sel := range selected {
		rows, err := q.Query(ctx, `SELECT n.nspname, c.relname, c.oid
			FROM (SELECT $1::regclass AS relid, true AS isleaf, 0 AS level
			      UNION ALL SELECT relid, isleaf, level FROM pg_partition_tree($1::regclass) WHERE relid <> $1::regclass) p
			JOIN pg_class c ON c.oid = p.relid JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE p.isleaf AND c.relkind = 'r'
			ORDER BY p.level, c.relname`, pgx.Identifier{sel.Schema, sel.Name}.Sanitize())
		if err != nil {
			return nil, fmt.Errorf("list partitions of %s: %w", sel.Qualified(), err)
		}
		type leaf struct {
			schema, name string
			oid          uint32
		}
		var leaves []leaf
		for rows.Next() {
			var l leaf
			if err := rows.Scan(&l.schema, &l.name, &l.oid); err != nil {
				return nil, err
			}
			leaves = append(leaves, l)
		}
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("list partitions of %s: %w", sel.Qualified(), err)
		}
		for _, l := range leaves {
			t := &copyTable{Schema: l.schema, Name: l.name, sel: sel}
			if err := describeTable(ctx, q, t, l.oid); err != nil {
				return nil, err
			}
			out = append(out, t)
		}
	}
	return out, nil
}

func describeTable(ctx context.Context, q querier, t *copyTable, oid uint32) error {
	err := q.QueryRow(ctx, `SELECT pg_table_size($1::oid), pg_relation_size($1::oid) / current_setting('block_size')::bigint`, oid).
		Scan(&t.Bytes, &t.Blocks)
	if err != nil {
		return fmt.Errorf("size of %s: %w", t, err)
	}
	rows, err := q.Query(ctx, `SELECT a.attname,
			CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE a.atttypid END AS base,
			COALESCE(bt.typtype, t.typtype) = 'e' AS is_enum
		FROM pg_attribute a
		JOIN pg_type t ON t.oid = a.atttypid
		LEFT JOIN pg_type bt ON t.typtype = 'd' AND bt.oid = t.typbasetype
		WHERE a.attrelid = $1::oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
		ORDER BY a.attnum`, oid)
	if err != nil {
		return fmt.Errorf("columns of %s: %w", t, err)
	}
	defer rows.Close()
	t.Binary = true
	for rows.Next() {
		var name string
		var base uint32
		var isEnum bool
		if err := rows.Scan(&name, &base, &isEnum); err != nil {
			return err
		}
		t.Columns = append(t.Columns, pgx.Identifier{name}.Sanitize())
		if base >= firstUserOID && !isEnum {
			t.Binary = false
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("columns of %s: %w", t, err)
	}
	return nil
}

// piece is one unit of copy work: a whole table, or a range of its heap
// blocks when the table is big enough to share between workers.
type piece struct {
	table *copyTable
	// from and to are block numbers; to < 0 means "to the end".
	from, to int64
	split    bool
	estBytes int64
}

// key identifies the piece in init_progress.
func (p piece) key() string {
	if !p.split {
		return p.table.ident()
	}
	return fmt.Sprintf("%s@%d", p.table.ident(), p.from)
}

func (p piece) String() string {
	if !p.split {
		return p.table.String()
	}
	end := "end"
	if p.to >= 0 {
		end = fmt.Sprint(p.to)
	}
	return fmt.Sprintf("%s [blocks %d-%s]", p.table, p.from, end)
}

func (p piece) columns() string { return strings.Join(p.table.Columns, ", ") }

func (p piece) format() string {
	if p.table.Binary {
		return " (FORMAT binary)"
	}
	return ""
}

// sourceSQL is the COPY TO statement. Whole tables use COPY table, which
// reads only that table (not inheritance children); ranges select by ctid,
// which PostgreSQL 14 and later answer with a TID range scan.
func (p piece) sourceSQL() string {
	if !p.split {
		return fmt.Sprintf("COPY %s (%s) TO STDOUT%s", p.table.ident(), p.columns(), p.format())
	}
	where := fmt.Sprintf("ctid >= '(%d,0)'::tid", p.from)
	if p.to >= 0 {
		where += fmt.Sprintf(" AND ctid < '(%d,0)'::tid", p.to)
	}
	return fmt.Sprintf("COPY (SELECT %s FROM ONLY %s WHERE %s) TO STDOUT%s", p.columns(), p.table.ident(), where, p.format())
}

func (p piece) targetSQL() string {
	return fmt.Sprintf("COPY %s (%s) FROM STDIN%s", p.table.ident(), p.columns(), p.format())
}

// planPieces splits tables into pieces, biggest first. A table larger than
// chunk bytes is cut into block ranges of about chunk bytes, and a table that
// would otherwise leave workers idle is cut into at least jobs ranges (never
// below minPiece bytes each), so that one big table keeps every worker busy.
// Splitting uses only the relation size: no count(*), no scan.
func planPieces(tables []*copyTable, jobs int, chunk, minPiece int64, canSplit bool) []piece {
	var out []piece
	for _, t := range tables {
		n := int64(1)
		if canSplit && t.Blocks > 1 && t.Bytes >= 2*minPiece {
			n = (t.Bytes + chunk - 1) / chunk
			if n < int64(jobs) {
				n = min(int64(jobs), t.Bytes/minPiece)
			}
			if n < 4*int64(jobs) && n > 1 { // round up to whole rounds of workers
				n = (n + int64(jobs) - 1) / int64(jobs) * int64(jobs)
			}
			n = min(n, t.Blocks)
		}
		if n <= 1 {
			out = append(out, piece{table: t, to: -1, estBytes: t.Bytes})
			continue
		}
		step := (t.Blocks + n - 1) / n
		for from := int64(0); from < t.Blocks; from += step {
			to := from + step
			if to >= t.Blocks {
				to = -1 // the last range is open: it takes whatever lies beyond
			}
			out = append(out, piece{table: t, from: from, to: to, split: true, estBytes: t.Bytes / n})
		}
	}
	// Longest first: the classic way to finish a set of jobs on n workers early.
	slices.SortStableFunc(out, func(a, b piece) int { return cmp.Compare(b.estBytes, a.estBytes) })
	return out
}
