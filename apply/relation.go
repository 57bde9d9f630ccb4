package apply

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/serenorg/postgres-seren-replicator/stream"
)

// relation is what the applier knows of one published table: the source's
// latest Relation message and the statements prepared for it on the target.
type relation struct {
	msg    *stream.Relation
	name   string   // schema.table, for messages
	target string   // quoted "schema"."table"
	cols   []string // quoted column names, in message order
	key    []int    // indexes of replica identity columns
	full   bool     // REPLICA IDENTITY FULL: match whole rows, one at a time
	types  []string // column types, for casts in multi-row statements
	// mergeable: changes may be merged into set-based statements (merge.go).
	mergeable bool
	// cascadeTarget: a foreign key of this table deletes its rows when the
	// referenced row goes (ON DELETE CASCADE on the target).
	cascadeTarget bool
	// deferred: not yet compared with the target (a table added after init
	// whose copy holds the changes around this Relation message; join.go).
	deferred bool
	stmts    map[string]string
}

func newRelation(msg *stream.Relation) *relation {
	r := &relation{
		msg:    msg,
		name:   msg.Namespace + "." + msg.Name,
		target: pgx.Identifier{msg.Namespace, msg.Name}.Sanitize(),
		full:   msg.ReplicaIdentity == 'f',
		stmts:  map[string]string{},
	}
	for i, c := range msg.Columns {
		r.cols = append(r.cols, pgx.Identifier{c.Name}.Sanitize())
		if c.Key {
			r.key = append(r.key, i)
		}
	}
	return r
}

// targetColumn is a column of the target table.
type targetColumn struct {
	typ       string
	generated bool
	notNull   bool
	def       string // default expression, "" for none
	identity  bool
}

// reconcile compares a Relation message with the target table and follows
// the source's schema changes (unless Config.SchemaChanges is
// SchemaChangesStop): a column the source renamed is renamed, told from a
// drop and an add by its attribute number on the source (columns.go); a
// column the source added is added (addcolumn.go), with a type the source
// created after init (alter.go); a column the source dropped is dropped; a
// type change converts the target's values with a cast; defaults and NOT
// NULL follow the source's. What DDL cannot follow (names that cannot tell
// a rename from a drop and an add, values the target cannot recompute or
// cast) is a RecopyError, or stops replication with the fix when the caller
// does not copy tables again (recopy.go): guessing could lose data.
func (a *Applier) reconcile(ctx context.Context, msg *stream.Relation) (*relation, error) {
	r, err := a.compare(ctx, msg)
	return r, a.cannotFollow(msg, err)
}

// compare does reconcile's work; a change it cannot follow by DDL is a
// cannotFollowError.
func (a *Applier) compare(ctx context.Context, msg *stream.Relation) (*relation, error) {
	r := newRelation(msg)
	name := msg.Namespace + "." + msg.Name
	qualified := pgx.Identifier{msg.Namespace, msg.Name}.Sanitize()
	target, err := a.targetColumns(ctx, name, qualified)
	if err != nil {
		return nil, err
	}
	if len(target) == 0 {
		return nil, permanent(fmt.Errorf("table %s is published on the source but does not exist on the target: create it there (re-run init, or run the source's CREATE TABLE on the target), then restart sync", name))
	}
	if r, ok, err := a.deferToCapture(ctx, msg, qualified, target); err != nil || ok {
		return r, err // captured DDL still to come changes the table (ddl.go)
	}
	shape, err := a.readSourceShape(ctx, msg)
	if err != nil {
		return nil, err
	}
	// The stream describes partitions; their columns are their root's,
	// which the column changes below go to (from there to every
	// partition). The partition's own name serves the rest.
	leaf := qualified
	if rows, err := a.query(ctx, `SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.oid = pg_partition_root(to_regclass($1)) AND c.oid <> to_regclass($1)`, qualified); err != nil {
		return nil, fmt.Errorf("look up the partition root of %s on the target: %w", name, err)
	} else if len(rows) == 1 {
		qualified = string(rows[0][0])
	}
	names := make([]string, len(msg.Columns))
	for i, c := range msg.Columns {
		names[i] = c.Name
	}
	recorded := a.srcCols[msg.ID]
	align := a.capturedAlignment(msg, shape) // ddl.go
	nums, aligned := alignColumns(align, recorded)
	byNumber := false
	if aligned && recorded != nil {
		if drops, renames, ok := columnChanges(target, recorded, names, nums); ok {
			byNumber = true
			if len(drops) > 0 {
				if err := a.dropColumns(ctx, name, qualified, drops, nil, true); err != nil {
					return nil, err
				}
				for _, col := range drops {
					delete(target, col)
				}
			}
			if err := a.followColumnRenames(ctx, name, qualified, renames, target); err != nil {
				return nil, err
			}
		}
	}
	if !byNumber {
		if err := nameMoved(name, msg, target, recorded, align); err != nil {
			return nil, err
		}
	}
	inStream := map[string]bool{}
	var added []string
	for _, c := range msg.Columns {
		inStream[c.Name] = true
		if _, ok := target[c.Name]; !ok {
			added = append(added, c.Name)
		}
	}
	var missing []string
	for col, tc := range target {
		if !inStream[col] && !tc.generated {
			missing = append(missing, col)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		if err := a.dropColumns(ctx, name, qualified, missing, added, false); err != nil {
			return nil, err
		}
	}
	for _, c := range msg.Columns {
		want, err := a.typeName(ctx, c.TypeOID, c.TypeMod)
		if err != nil {
			return nil, fmt.Errorf("table %s column %s: %w", name, c.Name, err)
		}
		r.types = append(r.types, want)
		have, ok := target[c.Name]
		switch {
		case !ok && a.cfg.SchemaChanges == SchemaChangesStop:
			return nil, permanent(fmt.Errorf("table %s: the source added column %s %s: add it on the target (ALTER TABLE %s ADD COLUMN %s %s, with the source's default), or let sync do it with --schema-changes=apply, then restart sync",
				name, c.Name, want, qualified, pgx.Identifier{c.Name}.Sanitize(), want))
		case !ok:
			if err := a.ensureType(ctx, c.TypeOID); err != nil {
				return nil, fmt.Errorf("table %s column %s: %w", name, c.Name, err)
			}
			if err := a.addColumn(ctx, name, qualified, msg.ID, c, want); err != nil {
				return nil, err
			}
		case have.typ != want:
			// With captured statements ahead in the stream that touch the
			// table, the source's type now may be what they make of it later
			// (a type renamed): the target's type stays until they run.
			if ahead, err := a.captureAhead(ctx, msg); err != nil {
				return nil, err
			} else if ahead {
				r.types[len(r.types)-1] = have.typ
				continue
			}
			if err := a.changeType(ctx, name, qualified, c, have.typ, want); err != nil {
				return nil, err
			}
		}
	}
	if shape.found && a.cfg.SchemaChanges != SchemaChangesStop {
		if err := a.syncColumnProps(ctx, name, qualified, shape); err != nil {
			return nil, err
		}
	}
	if err := a.recordColumns(ctx, msg.ID, names, nums); err != nil {
		return nil, err
	}
	return a.finishRelation(ctx, r, leaf)
}

// finishRelation holds the table and reads how its changes may be
// written: merged or not, cascades on the target.
func (a *Applier) finishRelation(ctx context.Context, r *relation, leaf string) (*relation, error) {
	if err := a.holdTable(ctx, r); err != nil {
		return nil, err
	}
	var err error
	if r.mergeable, err = a.mergeable(ctx, r, leaf); err != nil {
		return nil, err
	}
	cascade, err := a.query(ctx, `SELECT 1 FROM pg_constraint WHERE conrelid = to_regclass($1) AND contype = 'f' AND confdeltype = 'c'`, leaf)
	if err != nil {
		return nil, fmt.Errorf("read foreign keys of %s: %w", r.name, err)
	}
	r.cascadeTarget = len(cascade) > 0
	return r, nil
}

// dropColumns drops on the target the columns the source no longer sends,
// when that is what happened: the source's table lacks them and either
// their attribute numbers are gone on the source (certain) or no column
// appeared in their place (that could be a rename, whose data a drop would
// lose).
func (a *Applier) dropColumns(ctx context.Context, name, qualified string, missing, added []string, certain bool) error {
	list := strings.Join(missing, ", ")
	if len(added) > 0 && !certain || a.cfg.SchemaChanges == SchemaChangesStop {
		why := "dropped or renamed on the source"
		if len(added) > 0 {
			why = fmt.Sprintf("while the source sends new %s %s: renamed, or dropped and added?", plural(len(added), "column", "columns"), strings.Join(added, ", "))
		}
		stop := fmt.Errorf("table %s: %s %s on the target but the source no longer sends %s (%s): apply the same change on the target (ALTER TABLE %s RENAME COLUMN … TO …, or DROP COLUMN), then restart sync",
			name, list, plural(len(missing), "exists", "exist"), plural(len(missing), "it", "them"), why, qualified)
		if len(added) == 0 {
			return permanent(stop)
		}
		return cannotFollowError{why: fmt.Sprintf("%s %s on the target, the source sends %s instead, and its catalog has changed again since: renamed, or dropped and added?", plural(len(missing), "column", "columns"), list, strings.Join(added, ", ")), stop: stop}
	}
	src, err := a.sourceConn(ctx)
	if err != nil {
		return err
	}
	var ddl []string
	for _, col := range missing {
		if certain { // by attribute number: gone on the source
			ddl = append(ddl, fmt.Sprintf("ALTER TABLE %s DROP COLUMN %s", qualified, pgx.Identifier{col}.Sanitize()))
			continue
		}
		var present bool
		if err := src.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass($1) AND attname = $2 AND attnum > 0 AND NOT attisdropped)`,
			qualified, col).Scan(&present); err != nil {
			return fmt.Errorf("table %s: look up column %s on the source: %w", name, col, err)
		}
		if present {
			return permanent(fmt.Errorf("table %s: the source has column %s but does not send it (a publication column list?): publish every column, then restart sync", name, col))
		}
		ddl = append(ddl, fmt.Sprintf("ALTER TABLE %s DROP COLUMN %s", qualified, pgx.Identifier{col}.Sanitize()))
	}
	if err := a.runDDL(ctx, ddl); err != nil {
		return fmt.Errorf("table %s: drop the columns the source dropped (add CASCADE on the target yourself if other objects use them, then restart sync): %w", name, err)
	}
	a.log.Info("dropped columns the source dropped", "table", name, "columns", list)
	return nil
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// mergeable reports whether the table's changes may be merged into
// set-based statements: identity by key (not FULL), every unique or
// exclusion constraint is exactly that key, and no trigger is set to fire
// even in replica mode.
func (a *Applier) mergeable(ctx context.Context, r *relation, qualified string) (bool, error) {
	if r.full || r.msg.ReplicaIdentity == 'n' && len(r.key) > 0 {
		return false, nil
	}
	rows, err := a.query(ctx, `SELECT i.indisexclusion OR i.indpred IS NOT NULL OR i.indexprs IS NOT NULL,
		(SELECT string_agg(a.attname, ',' ORDER BY a.attname) FROM pg_attribute a
		  WHERE a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey))
		FROM pg_index i WHERE i.indrelid = to_regclass($1) AND (i.indisunique OR i.indisexclusion)
		UNION ALL
		SELECT true, NULL FROM pg_trigger t WHERE t.tgrelid = to_regclass($1) AND t.tgenabled = 'A'`, qualified)
	if err != nil {
		return false, fmt.Errorf("read constraints of %s: %w", r.name, err)
	}
	keyCols := make([]string, len(r.key))
	for i, c := range r.key {
		keyCols[i] = r.msg.Columns[c].Name
	}
	sort.Strings(keyCols)
	key := strings.Join(keyCols, ",")
	for _, row := range rows {
		if string(row[0]) == "t" || string(row[1]) != key {
			return false, nil
		}
	}
	return true, nil
}

// typeName renders a source column type as format_type prints it on the
// source. The source's catalog is asked because pgoutput's Type message
// names a domain's base type, not the domain.
func (a *Applier) typeName(ctx context.Context, oid uint32, typmod int32) (string, error) {
	key := [2]int64{int64(oid), int64(typmod)}
	if name, ok := a.typeNames[key]; ok {
		return name, nil
	}
	src, err := a.sourceConn(ctx)
	if err != nil {
		return "", err
	}
	var name *string
	if err := src.QueryRow(ctx, `SELECT format_type($1::oid, $2::int)`, oid, typmod).Scan(&name); err != nil {
		return "", fmt.Errorf("look up source type %d: %w", oid, err)
	}
	if name == nil || *name == "???" {
		err := fmt.Errorf("source type %d no longer exists (dropped on the source since the change being applied)", oid)
		return "", cannotFollowError{why: err.Error(), stop: err}
	}
	a.typeNames[key] = *name
	return *name, nil
}

// sourceConn is a session on the source for catalog questions, opened on
// first use.
func (a *Applier) sourceConn(ctx context.Context) (*pgx.Conn, error) {
	if a.source == nil {
		conn, err := a.cfg.Source.ConnectWith(ctx, map[string]string{"search_path": "public"})
		if err != nil {
			return nil, fmt.Errorf("connect to the source to read its catalog: %w", err)
		}
		a.source = conn
	}
	return a.source, nil
}

// The statements below are built per relation, operation and "shape" (which
// columns are present, which old values are NULL) and prepared once.

func (r *relation) insertSQL() string {
	params := make([]string, len(r.cols))
	for i := range r.cols {
		params[i] = "$" + strconv.Itoa(i+1)
	}
	return fmt.Sprintf("INSERT INTO %s (%s) VALUES (%s)", r.target, strings.Join(r.cols, ", "), strings.Join(params, ", "))
}

// updateSQL sets the columns in set (unchanged TOAST columns are left out, so
// the target keeps its value) and matches the row by where.
func (r *relation) updateSQL(set []int, where matcher) string {
	parts := make([]string, len(set))
	for i, c := range set {
		parts[i] = r.cols[c] + " = $" + strconv.Itoa(i+1)
	}
	return fmt.Sprintf("UPDATE %s SET %s WHERE %s", r.target, strings.Join(parts, ", "), where.sql(r, len(set)+1))
}

func (r *relation) deleteSQL(where matcher) string {
	return fmt.Sprintf("DELETE FROM %s WHERE %s", r.target, where.sql(r, 1))
}

// matcher selects the row a change applies to: by key columns, or, under
// REPLICA IDENTITY FULL, exactly one row equal to the old tuple (tables
// without a key may hold duplicates; the source changed one of them).
type matcher struct {
	cols  []int  // columns compared, in parameter order
	nulls []bool // per cols entry: the old value is NULL
	full  bool
}

func (m matcher) key() string {
	var b strings.Builder
	for i, c := range m.cols {
		fmt.Fprintf(&b, "%d", c)
		if m.nulls[i] {
			b.WriteByte('n')
		}
		b.WriteByte(',')
	}
	return b.String()
}

func (m matcher) sql(r *relation, firstParam int) string {
	conds := make([]string, 0, len(m.cols))
	p := firstParam
	for i, c := range m.cols {
		switch {
		case m.nulls[i]:
			conds = append(conds, r.cols[c]+" IS NULL")
		case m.full:
			// Compare text forms: every type has one (json, point, xml have no
			// equality operator), and both sides print with the same settings.
			conds = append(conds, r.cols[c]+"::text = $"+strconv.Itoa(p)+"::text")
			p++
		default:
			conds = append(conds, r.cols[c]+" = $"+strconv.Itoa(p))
			p++
		}
	}
	cond := strings.Join(conds, " AND ")
	if m.full {
		return fmt.Sprintf("ctid = (SELECT ctid FROM %s WHERE %s LIMIT 1)", r.target, cond)
	}
	return cond
}
