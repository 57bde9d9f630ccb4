package apply

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/serenorg/postgres-seren-replicator/internal/sqltext"
	"github.com/serenorg/postgres-seren-replicator/stream"
)

// sourceColumn is what the source's catalog says now of a column the source
// added: pgoutput sends only its name and type.
type sourceColumn struct {
	gone    bool // dropped or renamed on the source since
	notNull bool
	// def is the column's default expression now ("" for none).
	def string
	// volatile: the default, or an identity, gives each row its own value.
	volatile bool
	// missing is the value the rows that existed before ADD COLUMN read
	// (attmissingval, as the text of a one-element array), or "" when the
	// source stored no such value: the column was added without a default,
	// or with a volatile one that rewrote the table with a value per row.
	missing string
}

// addColumn adds a column the source added, so that the rows the target
// already has read what the same rows read on the source: the value a
// non-volatile default gave them (kept by the source as attmissingval even
// if the default changed since), NULL when there was none. Where the source
// filled them with values the target cannot recompute (a volatile default
// such as clock_timestamp() or nextval(), an identity), it stops instead of
// leaving them NULL. The column gets the source's current default; NOT NULL
// follows later (alter.go).
func (a *Applier) addColumn(ctx context.Context, name, qualified string, relID uint32, c stream.RelationColumn, typ string) error {
	sc, err := a.describeSourceColumn(ctx, qualified, c.Name)
	if err != nil {
		return fmt.Errorf("table %s: describe column %s on the source: %w", name, c.Name, err)
	}
	if m, ok := a.capturedMissing(relID, c.Name); ok && sc.missing == "" {
		// What the capture recorded with the table's ALTER TABLE (ddl.go):
		// the catalog may no longer say (the table renamed, or rewritten).
		sc.missing, sc.gone = m, false
	}
	col := pgx.Identifier{c.Name}.Sanitize()
	empty, err := a.targetEmpty(ctx, qualified)
	if err != nil {
		return fmt.Errorf("table %s: %w", name, err)
	}
	switch {
	case empty || sc.missing != "":
	case sc.volatile:
		return cannotFollowError{why: fmt.Sprintf("the source added column %s with a default that gave every existing row its own value (%s)", c.Name, orIdentity(sc.def)),
			stop: fmt.Errorf("table %s: the source added column %s %s with a default that gave every existing row its own value (%s), which the target cannot recompute: copy the table again (init --drop-existing), or add the column on the target yourself with the same values (ALTER TABLE %s ADD COLUMN %s %s …, then UPDATE the rows) and restart sync",
				name, c.Name, typ, orIdentity(sc.def), qualified, col, typ)}
	case sc.def != "":
		// Either the default came after the column (existing rows NULL) or
		// the table was rewritten since (VACUUM FULL, CLUSTER), which
		// writes the default's value into the rows and forgets it.
		return cannotFollowError{why: fmt.Sprintf("the source added column %s, now with DEFAULT %s, and no longer records what its existing rows hold", c.Name, sc.def),
			stop: fmt.Errorf("table %s: the source added column %s %s, now with DEFAULT %s, but no longer records what its existing rows hold: if it was added without a default and the default set afterwards, run ALTER TABLE %s ADD COLUMN %s %s; ALTER TABLE %s ALTER COLUMN %s SET DEFAULT %s on the target; if it was added with that default, run ALTER TABLE %s ADD COLUMN %s %s DEFAULT %s on the target; then restart sync",
				name, c.Name, typ, sc.def, qualified, col, typ, qualified, col, sc.def, qualified, col, typ, sc.def)}
	}
	add := fmt.Sprintf("ALTER TABLE %s ADD COLUMN %s %s", qualified, col, typ)
	if sc.missing != "" {
		// The existing rows' value as a constant default, so the target
		// fills them as the source did; the source's own default follows.
		add += fmt.Sprintf(" DEFAULT (%s::text[])[1]::%s", sqltext.Literal(sc.missing), typ)
	}
	ddl := []string{add}
	alter := fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s ", qualified, col)
	switch {
	case sc.def != "":
		ddl = append(ddl, alter+"SET DEFAULT "+sc.def)
	case sc.missing != "":
		ddl = append(ddl, alter+"DROP DEFAULT")
	}
	// NOT NULL comes from syncColumnProps once the stream has passed the
	// source position where it was seen: the catalog may be past this
	// change, and rows still in the stream may be NULL (added nullable,
	// filled, then SET NOT NULL).
	if sc.gone {
		a.log.Warn("the source added a column and has dropped or renamed it since; added it as it streams, nullable", "table", name, "column", c.Name)
	}
	if err := a.runDDL(ctx, ddl); err != nil {
		return fmt.Errorf("table %s: add column %s that the source added: %w", name, c.Name, err)
	}
	a.log.Info("added column the source added", "table", name, "column", c.Name, "type", typ,
		"default", sc.def, "not_null", sc.notNull, "existing_rows", existingRows(sc))
	return nil
}

// runDDL runs statements in the batch's transaction. In ordered mode the
// batch defers foreign-key checks, and PostgreSQL refuses ALTER TABLE on a
// table with checks pending: then they run first, as the source ran them at
// the end of the statements before its own ALTER TABLE.
func (a *Applier) runDDL(ctx context.Context, ddl []string) error {
	run := func(ddl []string) error {
		for _, stmt := range ddl {
			if _, err := a.query(ctx, stmt); err != nil {
				return permanent(fmt.Errorf("%s: %w", stmt, err))
			}
		}
		return nil
	}
	return a.inBatch(ctx, func() error {
		if a.replicaMode {
			return run(ddl)
		}
		return a.runDDLOrdered(ctx, ddl, run)
	})
}

func (a *Applier) runDDLOrdered(ctx context.Context, ddl []string, run func([]string) error) error {
	// Checking every deferred constraint first would also check the
	// source's own DEFERRABLE INITIALLY DEFERRED ones in the middle of the
	// transaction that defers them: only a table with checks pending needs
	// it (SQLSTATE 55006), so the statements are tried without it first.
	if _, err := a.query(ctx, "SAVEPOINT seren_replicator_runddl"); err != nil {
		return err
	}
	err := run(ddl)
	var pgErr *pgconn.PgError
	if err == nil || !errors.As(err, &pgErr) || pgErr.Code != "55006" {
		if err == nil {
			_, err = a.query(ctx, "RELEASE SAVEPOINT seren_replicator_runddl")
		}
		return err
	}
	if _, err := a.query(ctx, "ROLLBACK TO SAVEPOINT seren_replicator_runddl"); err != nil {
		return err
	}
	return run(append(append([]string{"SET CONSTRAINTS ALL IMMEDIATE"}, ddl...), "SET CONSTRAINTS ALL DEFERRED"))
}

func orIdentity(def string) string {
	if def == "" {
		return "an identity"
	}
	return def
}

func existingRows(sc sourceColumn) string {
	if sc.missing != "" {
		return "set to " + sc.missing
	}
	return "NULL"
}

func (a *Applier) targetEmpty(ctx context.Context, qualified string) (bool, error) {
	rows, err := a.query(ctx, "SELECT 1 FROM "+qualified+" LIMIT 1")
	return len(rows) == 0, err
}

// funcRef finds the functions an expression's node tree calls.
var funcRef = regexp.MustCompile(`:(?:op)?funcid (\d+)`)

// describeSourceColumn reads a column's definition from the source catalog.
func (a *Applier) describeSourceColumn(ctx context.Context, qualified, column string) (sourceColumn, error) {
	var sc sourceColumn
	var def, tree, missing *string
	var identity bool
	src, err := a.sourceConn(ctx)
	if err != nil {
		return sc, err
	}
	err = src.QueryRow(ctx, `SELECT a.attnotnull, a.attidentity <> '', pg_get_expr(d.adbin, d.adrelid), d.adbin::text,
			CASE WHEN a.atthasmissing THEN a.attmissingval::text END
		FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
		WHERE a.attrelid = to_regclass($1) AND a.attname = $2 AND NOT a.attisdropped`, qualified, column).
		Scan(&sc.notNull, &identity, &def, &tree, &missing)
	if errors.Is(err, pgx.ErrNoRows) {
		return sourceColumn{gone: true}, nil
	}
	if err != nil {
		return sc, err
	}
	if def != nil {
		sc.def = *def
	}
	if missing != nil {
		sc.missing = *missing
	}
	sc.volatile = identity
	if tree != nil {
		var oids []int64
		for _, m := range funcRef.FindAllStringSubmatch(*tree, -1) {
			oid, _ := strconv.ParseInt(m[1], 10, 64)
			oids = append(oids, oid)
		}
		var volatile *bool
		if err := src.QueryRow(ctx, `SELECT bool_or(provolatile = 'v') FROM pg_proc WHERE oid = ANY($1::oid[])`, oids).Scan(&volatile); err != nil {
			return sc, fmt.Errorf("volatility of the default of %s: %w", column, err)
		}
		sc.volatile = sc.volatile || volatile != nil && *volatile
	}
	return sc, nil
}
