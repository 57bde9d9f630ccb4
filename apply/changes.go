package apply

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/serenorg/postgres-seren-replicator/stream"
)

// stmtInfo says what a pipelined statement is, to check its result and to
// name the table when it fails.
type stmtInfo struct {
	table     string // schema.table; empty for BEGIN, COMMIT and the checkpoint
	op        string // insert, update, delete, truncate
	want      int64  // rows it must change; 0 means any number
	atMostOne bool   // may change no row or one, no more
	keyValues string // for error messages
	// checkpoint: the statement reads or moves the checkpoint row and must
	// find it at the position this applier wrote last.
	checkpoint bool
}

// ErrCheckpointMoved means the target's checkpoint row no longer holds the
// position this applier wrote last: another process applied changes of the
// same slot. The batch is rolled back; reloading the checkpoint resumes
// exactly where the other writer left off.
var ErrCheckpointMoved = errors.New("the checkpoint on the target was moved by another writer")

// query runs one statement outside the pipeline (catalog lookups, DDL) and
// returns its rows as text.
func (a *Applier) query(ctx context.Context, sql string, params ...string) ([][][]byte, error) {
	if err := a.settle(ctx); err != nil {
		return nil, err
	}
	args := make([][]byte, len(params))
	for i, p := range params {
		args[i] = []byte(p)
	}
	res := a.conn.ExecParams(ctx, sql, args, nil, nil, nil).Read()
	if res.Err != nil {
		return nil, classify(res.Err)
	}
	return res.Rows, nil
}

// change queues the work for one row change or truncate: merged into the
// batch's set-based statements where that is safe (merge.go), otherwise one
// statement in source order.
func (a *Applier) change(ctx context.Context, msg stream.Message) error {
	var id uint32
	var op string
	switch m := msg.(type) {
	case *stream.Insert:
		id, op = m.RelationID, "insert"
	case *stream.Update:
		id, op = m.RelationID, "update"
	case *stream.Delete:
		id, op = m.RelationID, "delete"
	case *stream.Truncate:
		if err := a.emitMerged(ctx); err != nil {
			return err
		}
		return a.ordered(ctx, msg)
	}
	r, err := a.relation(id)
	if err != nil {
		return err
	}
	a.rowCounts[[3]string{r.name, op}]++
	merged, err := a.merge(id, r, msg)
	if err != nil || merged {
		return err
	}
	if r.mergeable && !a.merged.empty() {
		// Keep this table's order: what was merged goes first.
		if err := a.emitMerged(ctx); err != nil {
			return err
		}
	}
	return a.ordered(ctx, msg)
}

// ordered queues one statement for one change, in source order.
func (a *Applier) ordered(ctx context.Context, msg stream.Message) error {
	switch m := msg.(type) {
	case *stream.Insert:
		r, err := a.relation(m.RelationID)
		if err != nil {
			return err
		}
		params, err := values(r, m.New, "insert")
		if err != nil {
			return err
		}
		name, err := a.prepare(ctx, r, "i", r.insertSQL)
		if err != nil {
			return err
		}
		a.pipe.add("", name, params, stmtInfo{table: r.name, op: "insert"})
	case *stream.Update:
		r, err := a.relation(m.RelationID)
		if err != nil {
			return err
		}
		if len(m.New) != len(r.cols) {
			return fmt.Errorf("update on table %s: %d values for %d columns", r.name, len(m.New), len(r.cols))
		}
		var set []int
		var params [][]byte
		for i, v := range m.New {
			switch v.Kind {
			case stream.ValueUnchangedToast:
				continue // not sent: the target keeps its value
			case stream.ValueNull:
				params = append(params, nil)
			case stream.ValueText:
				params = append(params, v.Data)
			default:
				return fmt.Errorf("update on table %s: column %d has value kind %q", r.name, i, v.Kind)
			}
			set = append(set, i)
		}
		old := m.Old
		if m.OldKind == 0 {
			old = m.New // key unchanged: the new tuple carries it
		}
		where, keyParams, err := a.match(r, old, m.OldKind, "update")
		if err != nil {
			return err
		}
		if len(set) == 0 {
			return nil // only unchanged TOAST values: nothing to write
		}
		shape := "u" + setKey(set) + "/" + where.key()
		name, err := a.prepare(ctx, r, shape, func() string { return r.updateSQL(set, where) })
		if err != nil {
			return err
		}
		a.pipe.add("", name, append(params, keyParams...), stmtInfo{table: r.name, op: "update", want: 1, keyValues: describeKey(r, where, keyParams)})
	case *stream.Delete:
		r, err := a.relation(m.RelationID)
		if err != nil {
			return err
		}
		where, keyParams, err := a.match(r, m.Old, m.OldKind, "delete")
		if err != nil {
			return err
		}
		name, err := a.prepare(ctx, r, "d/"+where.key(), func() string { return r.deleteSQL(where) })
		if err != nil {
			return err
		}
		info := stmtInfo{table: r.name, op: "delete", want: 1, keyValues: describeKey(r, where, keyParams)}
		if !a.replicaMode && r.cascadeTarget {
			// Foreign-key actions run on the target in ordered mode: a parent's
			// DELETE CASCADE may already have removed this row, which is the
			// state the DELETE asks for. More than one row is still an error.
			info.want, info.atMostOne = 0, true
		}
		a.pipe.add("", name, keyParams, info)
	case *stream.Truncate:
		var names, shown []string
		for _, id := range m.RelationIDs {
			r, err := a.relation(id)
			if err != nil {
				return err
			}
			names = append(names, r.target)
			shown = append(shown, r.name)
		}
		sql := "TRUNCATE ONLY " + strings.Join(names, ", ")
		if m.RestartIdentity() {
			sql += " RESTART IDENTITY"
		}
		if m.Cascade() {
			sql += " CASCADE"
		}
		for _, name := range shown {
			a.rowCounts[[3]string{name, "truncate"}]++
		}
		a.pipe.add(sql, "", nil, stmtInfo{table: strings.Join(shown, ", "), op: "truncate"})
	}
	return nil
}

func (a *Applier) relation(id uint32) (*relation, error) {
	r, ok := a.rels[id]
	if !ok {
		return nil, fmt.Errorf("apply %s: change for relation %d before its Relation message", a.cfg.Database, id)
	}
	return r, nil
}

// values turns a tuple into text parameters, one per column.
func values(r *relation, t stream.Tuple, op string) ([][]byte, error) {
	if len(t) != len(r.cols) {
		return nil, fmt.Errorf("%s on table %s: %d values for %d columns", op, r.name, len(t), len(r.cols))
	}
	params := make([][]byte, len(t))
	for i, v := range t {
		switch v.Kind {
		case stream.ValueNull:
		case stream.ValueText:
			params[i] = v.Data
		default:
			return nil, fmt.Errorf("%s on table %s: column %s has value kind %q", op, r.name, r.msg.Columns[i].Name, v.Kind)
		}
	}
	return params, nil
}

// match builds the WHERE that finds the changed row: from the old key (kind
// 'K'), the whole old row ('O', REPLICA IDENTITY FULL), or the key columns of
// the tuple itself when the key did not change.
func (a *Applier) match(r *relation, old stream.Tuple, kind byte, op string) (matcher, [][]byte, error) {
	if len(old) != len(r.cols) {
		return matcher{}, nil, fmt.Errorf("%s on table %s: old tuple has %d values for %d columns", op, r.name, len(old), len(r.cols))
	}
	m := matcher{full: r.full}
	cols := r.key
	if r.full {
		cols = make([]int, len(r.cols))
		for i := range cols {
			cols[i] = i
		}
	}
	if len(cols) == 0 {
		return m, nil, permanent(fmt.Errorf("%s on table %s: the table has no replica identity to find the row by: add a primary key or run ALTER TABLE %s REPLICA IDENTITY FULL on the source, then re-run init for it", op, r.name, r.target))
	}
	var params [][]byte
	for _, c := range cols {
		v := old[c]
		switch v.Kind {
		case stream.ValueText:
			m.cols = append(m.cols, c)
			m.nulls = append(m.nulls, false)
			params = append(params, v.Data)
		case stream.ValueNull:
			m.cols = append(m.cols, c)
			m.nulls = append(m.nulls, true)
		case stream.ValueUnchangedToast:
			if r.full {
				continue // cannot happen for FULL (the old row is complete); never guess
			}
			return m, nil, permanent(fmt.Errorf("%s on table %s: key column %s was not sent (unchanged TOAST value): use REPLICA IDENTITY FULL for this table on the source, then re-run init for it", op, r.name, r.msg.Columns[c].Name))
		default:
			return m, nil, fmt.Errorf("%s on table %s: key column %s has value kind %q", op, r.name, r.msg.Columns[c].Name, v.Kind)
		}
	}
	if !r.full && kind != 'O' {
		for i := range m.nulls {
			if m.nulls[i] {
				return m, nil, permanent(fmt.Errorf("%s on table %s: key column %s is NULL: the replica identity index must cover NOT NULL columns", op, r.name, r.msg.Columns[m.cols[i]].Name))
			}
		}
	}
	return m, params, nil
}

// prepare returns the name of the prepared statement for shape, preparing
// it on first use.
func (a *Applier) prepare(ctx context.Context, r *relation, shape string, sql func() string) (string, error) {
	if name, ok := r.stmts[shape]; ok {
		return name, nil
	}
	if err := a.settle(ctx); err != nil {
		return "", err
	}
	a.seq++
	name := fmt.Sprintf("seren_%d", a.seq)
	if _, err := a.conn.Prepare(ctx, name, sql(), nil); err != nil {
		return "", classify(fmt.Errorf("prepare statement for table %s: %w", r.name, err))
	}
	r.stmts[shape] = name
	return name, nil
}

func setKey(set []int) string {
	var b strings.Builder
	for _, c := range set {
		fmt.Fprintf(&b, "%d,", c)
	}
	return b.String()
}

// describeKey renders the key of a change for an error message, shortened.
func describeKey(r *relation, m matcher, params [][]byte) string {
	var parts []string
	p := 0
	for i, c := range m.cols {
		v := "NULL"
		if !m.nulls[i] {
			v = string(params[p])
			p++
			if len(v) > 40 {
				v = v[:40] + "…"
			}
		}
		parts = append(parts, r.msg.Columns[c].Name+"="+v)
		if len(parts) == 4 && len(m.cols) > 4 {
			parts = append(parts, "…")
			break
		}
	}
	return strings.Join(parts, ", ")
}

// ErrPermanent marks errors that a retry cannot fix (schema differences, a
// diverged target, constraint violations): sync stops and says what to do.
var ErrPermanent = errors.New("permanent apply error")

type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() []error {
	return []error{e.err, ErrPermanent}
}

func permanent(err error) error { return permanentError{err} }

// classify marks errors that retrying will not fix as permanent: every
// server error except those of connections, shutdowns, exhausted resources
// (a full disk), deadlocks, serialization failures and a read-only target
// (managed services switch a database to read-only during a failover or
// when its storage quota is reached, and back once fixed), and a value of
// an enum label the target does not have yet.
func classify(err error) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return err // network and context errors: retry
	}
	switch {
	case strings.HasPrefix(pgErr.Code, "08"), strings.HasPrefix(pgErr.Code, "57"), strings.HasPrefix(pgErr.Code, "53"),
		pgErr.Code == "40001", pgErr.Code == "40P01", pgErr.Code == "55P03", pgErr.Code == "25006":
		return err
	case pgErr.Code == "22P02" && strings.HasPrefix(pgErr.Message, "invalid input value for enum"):
		// A label the source added (ALTER TYPE … ADD VALUE, which sends no
		// Relation message): sync adds the source's labels before it
		// streams again.
		return err
	}
	return permanent(err)
}

func isPermissionError(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "42501"
}
