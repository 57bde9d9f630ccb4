package apply

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/serenorg/postgres-seren-replicator/internal/sqltext"
	"github.com/serenorg/postgres-seren-replicator/stream"
)

// sourceColumn is what the source's catalog says of a column the source
// added: pgoutput sends only its name and type.
type sourceColumn struct {
	notNull bool
	// def is the column's default expression now ("" for none).
	def string
	// missing is the value the rows that existed before ADD COLUMN read
	// (attmissingval, as the text of a one-element array), or "" when the
	// source stored no such value: the column was added without a default,
	// or with a volatile one that rewrote the table with a value per row.
	missing string
}

// addColumn adds a column the source added, so that the rows the target
// already has read what the same rows read on the source: the value a
// non-volatile default gave them (kept by the source as attmissingval
// even if the default was changed since), NULL when there was no
// default. Where the source filled them with values the target cannot
// recompute (a volatile default such as clock_timestamp() or nextval(), or
// a table rewritten since), it stops instead of leaving them NULL. The
// column gets the source's current default and NOT NULL too.
func (a *Applier) addColumn(ctx context.Context, name, qualified string, c stream.RelationColumn, typ string) error {
	sc, err := a.describeSourceColumn(ctx, qualified, c.Name)
	if err != nil {
		return fmt.Errorf("table %s: describe column %s on the source: %w", name, c.Name, err)
	}
	col := pgx.Identifier{c.Name}.Sanitize()
	if sc.missing == "" && sc.def != "" {
		rows, err := a.query(ctx, "SELECT 1 FROM "+qualified+" LIMIT 1")
		if err != nil {
			return fmt.Errorf("table %s: %w", name, err)
		}
		if len(rows) > 0 {
			return permanent(fmt.Errorf("table %s: the source added column %s %s DEFAULT %s and filled the existing rows with values the target cannot recompute (a volatile default, or the table was rewritten since): copy the table again (init --drop-existing), or, if you know the values, add the column on the target yourself (ALTER TABLE %s ADD COLUMN %s %s …, then UPDATE the rows) and restart sync",
				name, c.Name, typ, sc.def, qualified, col, typ))
		}
	}
	add := fmt.Sprintf("ALTER TABLE %s ADD COLUMN %s %s", qualified, col, typ)
	if sc.missing != "" {
		// The existing rows' value as a constant default, so the target
		// fills them as the source did; then the source's own default.
		add += fmt.Sprintf(" DEFAULT (%s::%s[])[1]", sqltext.Literal(sc.missing), typ)
	}
	ddl := []string{add}
	alter := fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s ", qualified, col)
	switch {
	case sc.def != "":
		ddl = append(ddl, alter+"SET DEFAULT "+sc.def)
	case sc.missing != "":
		ddl = append(ddl, alter+"DROP DEFAULT")
	}
	if sc.notNull {
		ddl = append(ddl, alter+"SET NOT NULL")
	}
	for _, stmt := range ddl {
		if _, err := a.query(ctx, stmt); err != nil {
			return permanent(fmt.Errorf("table %s: add column %s that the source added: %s: %w", name, c.Name, stmt, err))
		}
	}
	a.log.Info("added column the source added", "table", name, "column", c.Name, "type", typ,
		"default", sc.def, "not_null", sc.notNull, "existing_rows", existingRows(sc))
	return nil
}

func existingRows(sc sourceColumn) string {
	if sc.missing != "" {
		return "set to " + sc.missing
	}
	return "NULL"
}

// describeSourceColumn reads a column's definition from the source catalog.
func (a *Applier) describeSourceColumn(ctx context.Context, qualified, column string) (sourceColumn, error) {
	var sc sourceColumn
	var def, missing *string
	err := a.source.QueryRow(ctx, `SELECT a.attnotnull, pg_get_expr(d.adbin, d.adrelid),
			CASE WHEN a.atthasmissing THEN a.attmissingval::text END
		FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
		WHERE a.attrelid = to_regclass($1) AND a.attname = $2 AND NOT a.attisdropped`, qualified, column).Scan(&sc.notNull, &def, &missing)
	if errors.Is(err, pgx.ErrNoRows) {
		return sc, permanent(fmt.Errorf("column %s is gone from the source table already (dropped or renamed since it was added)", column))
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
	return sc, nil
}
