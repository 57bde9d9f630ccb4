package apply

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/serenorg/postgres-seren-replicator/internal/usertype"
	"github.com/serenorg/postgres-seren-replicator/stream"
)

// targetColumns reads the target table's columns by name; none when the
// table does not exist.
func (a *Applier) targetColumns(ctx context.Context, name, qualified string) (map[string]targetColumn, error) {
	rows, err := a.query(ctx, `SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attgenerated <> '', a.attnotnull,
			COALESCE(pg_get_expr(d.adbin, d.adrelid), ''), a.attidentity <> ''
		FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
		WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped`, qualified)
	if err != nil {
		return nil, fmt.Errorf("read target columns of %s: %w", name, err)
	}
	target := map[string]targetColumn{}
	for _, row := range rows {
		target[string(row[0])] = targetColumn{typ: string(row[1]), generated: string(row[2]) == "t",
			notNull: string(row[3]) == "t", def: string(row[4]), identity: string(row[5]) == "t"}
	}
	return target, nil
}

// changeType changes a column's type on the target as the source did, when
// the change keeps the stored values as they are. pgoutput carries neither
// the USING expression the source's ALTER TABLE may have had nor the
// settings its conversion ran under, so any other type change is one DDL
// cannot follow (recopy.go).
func (a *Applier) changeType(ctx context.Context, name, qualified string, c stream.RelationColumn, from, to string) error {
	col := pgx.Identifier{c.Name}.Sanitize()
	if a.cfg.SchemaChanges == SchemaChangesStop {
		return permanent(fmt.Errorf("table %s: column %s is %s on the source but %s on the target: run ALTER TABLE %s ALTER COLUMN %s TYPE %s on the target (with the USING expression the source used), then restart sync",
			name, c.Name, to, from, qualified, col, to))
	}
	if err := a.ensureType(ctx, c.TypeOID); err != nil {
		return fmt.Errorf("table %s column %s: %w", name, c.Name, err)
	}
	// Only a change that keeps the stored values as they are (a typmod,
	// or a binary-coercible cast such as varchar to text) converts the
	// same way whatever the source's USING expression and session
	// settings (a cast to timestamptz depends on TimeZone); the rest is
	// copied again.
	rows, err := a.query(ctx, `SELECT $1::regtype = $2::regtype OR EXISTS (SELECT 1 FROM pg_cast WHERE castsource = $1::regtype AND casttarget = $2::regtype AND castmethod = 'b')`, from, to)
	if err != nil {
		return fmt.Errorf("table %s column %s: compare types %s and %s: %w", name, c.Name, from, to, err)
	}
	if string(rows[0][0]) != "t" {
		return cannotFollowError{why: fmt.Sprintf("column %s changed type on the source from %s to %s, which rewrote its values (with a USING expression and settings the stream does not carry)", c.Name, from, to),
			stop: fmt.Errorf("table %s: column %s is %s on the source but %s on the target: run ALTER TABLE %s ALTER COLUMN %s TYPE %s on the target (with the USING expression the source used), then restart sync",
				name, c.Name, to, from, qualified, col, to)}
	}
	stmt := fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s TYPE %s", qualified, col, to)
	if err := a.inBatch(ctx, func() error { return a.runDDL(ctx, []string{stmt}) }); err != nil {
		return cannotFollowError{why: fmt.Sprintf("column %s changed type on the source from %s to %s, and the target's values do not convert with a cast", c.Name, from, to), stop: fmt.Errorf("table %s: column %s changed type on the source from %s to %s, and the target could not follow (%w): run ALTER TABLE %s ALTER COLUMN %s TYPE %s USING <the expression the source used> on the target, then restart sync",
			name, c.Name, from, to, err, qualified, col, to)}
	}
	a.log.Info("column type changed on the source: changed on the target too (its values stay as they are)",
		"table", name, "column", c.Name, "from", from, "to", to)
	return nil
}

// ensureType creates on the target a type that the source created after
// init and a column now uses (usertype.Missing: enums, domains, and the
// element type of an array). Other kinds (a base type from an extension, a
// composite, a range) stop replication with what to do.
func (a *Applier) ensureType(ctx context.Context, oid uint32) error {
	src, err := a.sourceConn(ctx)
	if err != nil {
		return err
	}
	has := func(ctx context.Context, sql, arg string) (bool, error) {
		rows, err := a.query(ctx, sql, arg)
		if err != nil {
			return false, err
		}
		return string(rows[0][0]) == "t", nil
	}
	missing, err := usertype.Missing(ctx, src, has, oid)
	var unsupported *usertype.UnsupportedError
	if errors.As(err, &unsupported) {
		return permanent(fmt.Errorf("%v: run on the target %s, then restart sync", unsupported, unsupported.Fix()))
	}
	if err != nil {
		return err
	}
	for _, t := range missing {
		if err := a.inBatch(ctx, func() error { return a.runDDL(ctx, t.SQL) }); err != nil {
			return fmt.Errorf("create type %s that the source created: %w", t.Name, err)
		}
		a.log.Info("created a type the source created", "type", t.Name, "sql", t.SQL[len(t.SQL)-1])
	}
	return nil
}

// syncColumnProps gives the target's columns the source's defaults and NOT
// NULL. Neither changes what the stream writes (every change carries all
// its columns), so a default or a dropped NOT NULL is applied at once; a
// default the target cannot take (a function or sequence it lacks) is
// logged with its statement and left. A NOT NULL the source added is set
// only once the stream has passed the source's position when it was seen
// (notNullLater): before that, the target's rows may still hold NULLs the
// source filled in later transactions.
func (a *Applier) syncColumnProps(ctx context.Context, name, qualified string, shape sourceShape) error {
	target, err := a.targetColumns(ctx, name, qualified)
	if err != nil {
		return err
	}
	for col, tc := range target {
		sc, ok := shape.byName(col)
		if !ok || tc.generated {
			continue
		}
		alter := fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s ", qualified, pgx.Identifier{col}.Sanitize())
		if !sc.identity && !tc.identity && sc.def != tc.def {
			stmt := alter + "DROP DEFAULT"
			if sc.def != "" {
				stmt = alter + "SET DEFAULT " + sc.def
			}
			if err := a.optionalDDL(ctx, name, stmt, "the column's default changed on the source"); err != nil {
				return err
			}
		}
		switch {
		case tc.notNull && !sc.notNull:
			if err := a.optionalDDL(ctx, name, alter+"DROP NOT NULL", "the column is nullable on the source"); err != nil {
				return err
			}
		case !tc.notNull && sc.notNull:
			a.notNullLater(name, alter+"SET NOT NULL", shape.at)
		}
	}
	return nil
}

// optionalDDL runs a statement that keeps the target's schema like the
// source's without bearing on the data, under a savepoint: a failure is
// logged with the statement and replication goes on.
func (a *Applier) optionalDDL(ctx context.Context, table, stmt, why string) error {
	return a.inBatch(ctx, func() error {
		if _, err := a.query(ctx, "SAVEPOINT seren_replicator_ddl"); err != nil {
			return err
		}
		if err := a.runDDL(ctx, []string{stmt}); err != nil {
			if _, rerr := a.query(ctx, "ROLLBACK TO SAVEPOINT seren_replicator_ddl"); rerr != nil {
				return rerr
			}
			a.log.Warn("could not follow a schema change of the source on the target; run the statement there once it can succeed", "table", table, "why", why, "sql", stmt, "error", err)
			return nil
		}
		if _, err := a.query(ctx, "RELEASE SAVEPOINT seren_replicator_ddl"); err != nil {
			return err
		}
		a.log.Info("followed a schema change of the source", "table", table, "why", why, "sql", stmt)
		return nil
	})
}

// pendingDDL is a statement to run once a batch ends at or after a source
// position.
type pendingDDL struct {
	table, stmt string
	at          pglogrepl.LSN
}

// notNullLater queues SET NOT NULL for the first batch that ends at or
// after at: the target's rows are then the source's rows at a position
// where the source had the constraint.
func (a *Applier) notNullLater(table, stmt string, at pglogrepl.LSN) {
	for _, p := range a.pending {
		if p.stmt == stmt {
			return
		}
	}
	a.pending = append(a.pending, pendingDDL{table: table, stmt: stmt, at: at})
	a.log.Info("column is NOT NULL on the source: set on the target once the stream passes the source position where it was seen", "table", table, "sql", stmt, "at", at)
}

// runPending runs, in the batch ending at end, the queued statements that
// are due.
func (a *Applier) runPending(ctx context.Context, end pglogrepl.LSN) error {
	if len(a.pending) == 0 {
		return nil
	}
	keep := a.pending[:0]
	var due []pendingDDL
	for _, p := range a.pending {
		if p.at <= end {
			due = append(due, p)
		} else {
			keep = append(keep, p)
		}
	}
	a.pending = keep
	for _, p := range due {
		if err := a.optionalDDL(ctx, p.table, p.stmt, "the column is NOT NULL on the source"); err != nil {
			return err
		}
	}
	return nil
}
