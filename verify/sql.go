package verify

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// column is one table column as the comparison reads it.
type column struct {
	name  string
	typ   string // format_type, for casting text key bounds back
	money bool
	// base is the type's qualified name without length or precision (a
	// domain's base type), for casting a key's text on a side whose column
	// may be wider.
	base string
}

// ident is the column's quoted name.
func (c column) ident() string { return pgx.Identifier{c.name}.Sanitize() }

// expr is the column as it enters the row text: money prints with the
// server's lc_monetary, so it is compared as numeric.
func (c column) expr() string {
	if c.money {
		return c.ident() + "::numeric"
	}
	return c.ident()
}

// keyRange is [from, to) over the key columns; nil bounds are open.
type keyRange struct {
	from, to []string
	// exact makes the range the one key from.
	exact bool
}

// hashFunc turns a text expression into a bigint row hash.
type hashFunc struct {
	name string
	sql  func(text string) string
}

var (
	hashExtended = hashFunc{name: "hashtextextended", sql: func(x string) string {
		return "hashtextextended(" + x + ", 0)"
	}}
	hashMD5 = hashFunc{name: "md5", sql: func(x string) string {
		return "('x' || left(md5(" + x + "), 16))::bit(64)::bigint"
	}}
)

// chooseHash picks hashtextextended when both servers have it and agree on
// a probe value, md5 otherwise.
func chooseHash(ctx context.Context, w *worker) (hashFunc, error) {
	const probe = `SELECT hashtextextended('postgres-seren-replicator verify probe ' || g::text, 0)::text FROM generate_series(1, 4) g`
	var vals [2]string
	for i, c := range []*pgx.Conn{w.src, w.dst} {
		rows, err := c.Query(ctx, probe)
		if err != nil {
			return hashFunc{}, fmt.Errorf("probe hash function: %w", err)
		}
		got, err := pgx.CollectRows(rows, pgx.RowTo[string])
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "42883" { // undefined function (before PostgreSQL 11)
			return hashMD5, nil
		}
		if err != nil {
			return hashFunc{}, fmt.Errorf("probe hash function: %w", err)
		}
		vals[i] = strings.Join(got, ",")
	}
	if vals[0] != vals[1] {
		return hashMD5, nil
	}
	return hashExtended, nil
}

// describe reads the table's columns and key from the source.
func (st *dbState) describe(ctx context.Context, w *worker, t *tableJob) error {
	t.ident = pgx.Identifier{t.rep.Schema, t.rep.Name}.Sanitize()
	rows, err := w.src.Query(ctx, `SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.atttypid = 'money'::regtype,
		(SELECT quote_ident(n.nspname) || '.' || quote_ident(b.typname) FROM pg_type t
		 JOIN pg_type b ON b.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
		 JOIN pg_namespace n ON n.oid = b.typnamespace WHERE t.oid = a.atttypid)
		FROM pg_attribute a WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped
		ORDER BY a.attnum`, t.ident)
	if err != nil {
		return fmt.Errorf("columns of %s: %w", t.ident, err)
	}
	t.cols, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (column, error) {
		var c column
		return c, r.Scan(&c.name, &c.typ, &c.money, &c.base)
	})
	if err != nil {
		return fmt.Errorf("columns of %s: %w", t.ident, err)
	}
	t.rep.cols = t.cols
	// The primary key, else the replica identity index: both are unique
	// and NOT NULL, so ranges over them partition the rows.
	rows, err = w.src.Query(ctx, `SELECT a.attname, format_type(a.atttypid, a.atttypmod), false,
		(SELECT quote_ident(n.nspname) || '.' || quote_ident(b.typname) FROM pg_type t
		 JOIN pg_type b ON b.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
		 JOIN pg_namespace n ON n.oid = b.typnamespace WHERE t.oid = a.atttypid)
		FROM (SELECT i.indkey FROM pg_index i
		      WHERE i.indrelid = $1::regclass AND (i.indisprimary OR i.indisreplident) AND i.indexprs IS NULL
		      ORDER BY i.indisprimary DESC LIMIT 1) i
		CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
		JOIN pg_attribute a ON a.attrelid = $1::regclass AND a.attnum = k.attnum
		ORDER BY k.ord`, t.ident)
	if err != nil {
		return fmt.Errorf("key of %s: %w", t.ident, err)
	}
	t.key, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (column, error) {
		var c column
		return c, r.Scan(&c.name, &c.typ, &c.money, &c.base)
	})
	if err != nil {
		return fmt.Errorf("key of %s: %w", t.ident, err)
	}
	t.rep.Key = []string{}
	for _, k := range t.key {
		t.rep.Key = append(t.rep.Key, k.name)
	}
	return nil
}

// rowHash is the SQL of one row's hash.
func (st *dbState) rowHash(t *tableJob) string {
	exprs := make([]string, len(t.cols))
	for i, c := range t.cols {
		exprs[i] = c.expr()
	}
	return st.hash.sql("ROW(" + strings.Join(exprs, ", ") + ")::text")
}

func keyList(key []column, prefix string) string {
	parts := make([]string, len(key))
	for i, k := range key {
		parts[i] = prefix + k.ident()
	}
	return strings.Join(parts, ", ")
}

func keyTextList(key []column, prefix string) string {
	parts := make([]string, len(key))
	for i, k := range key {
		parts[i] = prefix + k.ident() + "::text"
	}
	return strings.Join(parts, ", ")
}

// where renders the range as a predicate with parameters from $1.
func where(key []column, r keyRange) (string, []any) {
	var conds []string
	var args []any
	bound := func(vals []string, op string) {
		lhs := keyList(key, "")
		params := make([]string, len(key))
		for i, k := range key {
			args = append(args, vals[i])
			params[i] = "$" + strconv.Itoa(len(args)) + "::text::" + k.typ
		}
		if len(key) > 1 {
			conds = append(conds, "("+lhs+") "+op+" ("+strings.Join(params, ", ")+")")
		} else {
			conds = append(conds, lhs+" "+op+" "+params[0])
		}
	}
	if r.exact {
		bound(r.from, "=")
		return strings.Join(conds, " AND "), args
	}
	if r.from != nil {
		bound(r.from, ">=")
	}
	if r.to != nil {
		bound(r.to, "<")
	}
	if len(conds) == 0 {
		return "true", nil
	}
	return strings.Join(conds, " AND "), args
}

// planChunks cuts a table into top-level ranges from a sample of its keys,
// and estimates its rows.
func (st *dbState) planChunks(ctx context.Context, w *worker, t *tableJob) ([]keyRange, int64, error) {
	var pages int64
	var tuples float64
	sizeSQL := `SELECT coalesce(sum(pg_relation_size(c.oid)), 0)::bigint / current_setting('block_size')::bigint,
		coalesce(sum(greatest(c.reltuples, 0)), 0)::float8
		FROM pg_class c WHERE c.oid = $1::regclass
		   OR c.oid IN (SELECT relid FROM pg_partition_tree($1::regclass) WHERE isleaf)`
	if serverMajor(w.src) < 12 {
		sizeSQL = `SELECT pg_relation_size(oid) / current_setting('block_size')::bigint, greatest(reltuples, 0)::float8
			FROM pg_class WHERE oid = $1::regclass`
	}
	if err := w.src.QueryRow(ctx, sizeSQL, t.ident).Scan(&pages, &tuples); err != nil {
		return nil, 0, fmt.Errorf("size of %s: %w", t.ident, err)
	}
	whole := []keyRange{{}}
	if len(t.key) == 0 || pages <= 64 {
		return whole, int64(tuples), nil
	}
	guess := tuples
	if guess <= 0 {
		guess = float64(pages) * 60
	}
	chunkRows := max(float64(st.v.ChunkRows), guess/maxChunksPerTable)
	fraction := min(1, max(10/chunkRows, 300/float64(pages)))
	keys := keyList(t.key, "")
	q := fmt.Sprintf(`SELECT %s FROM (SELECT %s FROM %s TABLESAMPLE SYSTEM (%s) REPEATABLE (7)) s ORDER BY %s`,
		keyTextList(t.key, "s."), keys, t.ident, strconv.FormatFloat(fraction*100, 'f', 6, 64), keyList(t.key, "s."))
	rows, err := w.src.Query(ctx, q)
	if err != nil {
		return nil, 0, fmt.Errorf("sample keys of %s: %w", t.ident, err)
	}
	sample, err := pgx.CollectRows(rows, scanKey(len(t.key)))
	if err != nil {
		return nil, 0, fmt.Errorf("sample keys of %s: %w", t.ident, err)
	}
	est := int64(float64(len(sample)) / fraction)
	n := int(min(math.Ceil(float64(est)/chunkRows), maxChunksPerTable))
	if n <= 1 {
		return whole, est, nil
	}
	var ranges []keyRange
	var prev []string
	for i := 1; i < n; i++ {
		b := sample[i*len(sample)/n]
		if prev != nil && slices.Equal(b, prev) {
			continue
		}
		ranges = append(ranges, keyRange{from: prev, to: b})
		prev = b
	}
	ranges = append(ranges, keyRange{from: prev})
	return ranges, est, nil
}

func scanKey(n int) pgx.RowToFunc[[]string] {
	return func(r pgx.CollectableRow) ([]string, error) {
		vals := make([]string, n)
		ptrs := make([]any, n)
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		return vals, r.Scan(ptrs...)
	}
}

// querier is a session or a transaction.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// rangeHash is a range's row count and sum of row hashes.
type rangeHash struct {
	count int64
	sum   string
}

func (st *dbState) hashRange(ctx context.Context, q querier, t *tableJob, r keyRange) (rangeHash, error) {
	cond, args := where(t.key, r)
	var h rangeHash
	err := q.QueryRow(ctx, fmt.Sprintf(`SELECT count(*), coalesce(sum(%s), 0)::text FROM %s WHERE %s`,
		st.rowHash(t), t.ident, cond), args...).Scan(&h.count, &h.sum)
	if err != nil {
		return h, fmt.Errorf("hash %s %s: %w", t.ident, FormatRange(t.rep.Key, r.from, r.to), err)
	}
	return h, nil
}

// keyedHash is one row's key (as text) and hash.
type keyedHash struct {
	key  []string
	hash int64
}

func (st *dbState) rowHashes(ctx context.Context, q querier, t *tableJob, r keyRange) ([]keyedHash, error) {
	cond, args := where(t.key, r)
	rows, err := q.Query(ctx, fmt.Sprintf(`SELECT %s, %s FROM %s WHERE %s ORDER BY %s`,
		keyTextList(t.key, ""), st.rowHash(t), t.ident, cond, keyList(t.key, "")), args...)
	if err != nil {
		return nil, fmt.Errorf("read rows of %s %s: %w", t.ident, FormatRange(t.rep.Key, r.from, r.to), err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (keyedHash, error) {
		k := keyedHash{key: make([]string, len(t.key))}
		ptrs := make([]any, len(t.key)+1)
		for i := range k.key {
			ptrs[i] = &k.key[i]
		}
		ptrs[len(t.key)] = &k.hash
		return k, row.Scan(ptrs...)
	})
	if err != nil {
		return nil, fmt.Errorf("read rows of %s %s: %w", t.ident, FormatRange(t.rep.Key, r.from, r.to), err)
	}
	return out, nil
}

// splitKeys returns every step-th key of the range in key order: the
// boundaries of sub-ranges of step rows each.
func (st *dbState) splitKeys(ctx context.Context, q querier, t *tableJob, r keyRange, step int64) ([][]string, error) {
	cond, args := where(t.key, r)
	args = append(args, step)
	rows, err := q.Query(ctx, fmt.Sprintf(`SELECT %s FROM (SELECT %s, row_number() OVER (ORDER BY %s) AS seren_rn FROM %s WHERE %s) s
		WHERE s.seren_rn %% $%d = 0 ORDER BY s.seren_rn`,
		keyTextList(t.key, "s."), keyList(t.key, ""), keyList(t.key, ""), t.ident, cond, len(args)), args...)
	if err != nil {
		return nil, fmt.Errorf("split %s %s: %w", t.ident, FormatRange(t.rep.Key, r.from, r.to), err)
	}
	keys, err := pgx.CollectRows(rows, scanKey(len(t.key)))
	if err != nil {
		return nil, fmt.Errorf("split %s %s: %w", t.ident, FormatRange(t.rep.Key, r.from, r.to), err)
	}
	return keys, nil
}
