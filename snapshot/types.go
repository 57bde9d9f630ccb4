package snapshot

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/jackc/pgx/v5"

	"github.com/serenorg/postgres-seren-replicator/internal/selection"
	"github.com/serenorg/postgres-seren-replicator/internal/usertype"
)

// userTypesSQL lists the user-defined types (or arrays of them) the
// columns of a set of tables use.
const userTypesSQL = `SELECT DISTINCT a.atttypid FROM pg_attribute a
	WHERE a.attrelid = ANY($1::text[]::regclass[]) AND a.attnum > 0 AND NOT a.attisdropped AND a.atttypid >= 16384
	ORDER BY 1`

// makeTypes gives the target what the tables' rows at the snapshot need of
// the source's types: the enums and domains that create's columns use and
// the target lacks (pg_dump -t leaves them out: a table added to the
// migration, or copied again after a schema change, may use a type the
// source created after init), and the labels the source's enums have that
// the target's lack, for every table of present. Statements run on the
// target in autocommit, each logged.
func makeTypes(ctx context.Context, snap pgx.Tx, dst *pgx.Conn, create, present []selection.Table, log *slog.Logger) error {
	idents := func(ts []selection.Table) []string {
		out := make([]string, len(ts))
		for i, t := range ts {
			out[i] = pgx.Identifier{t.Schema, t.Name}.Sanitize()
		}
		return out
	}
	if len(create) > 0 {
		rows, err := snap.Query(ctx, userTypesSQL, idents(create))
		if err != nil {
			return fmt.Errorf("list the types the tables use on the source: %w", err)
		}
		oids, err := pgx.CollectRows(rows, pgx.RowTo[uint32])
		if err != nil {
			return fmt.Errorf("list the types the tables use on the source: %w", err)
		}
		has := func(ctx context.Context, sql, arg string) (ok bool, err error) {
			err = dst.QueryRow(ctx, sql, arg).Scan(&ok)
			return ok, err
		}
		for _, oid := range oids {
			missing, err := usertype.Missing(ctx, snap, has, oid)
			var unsupported *usertype.UnsupportedError
			if errors.As(err, &unsupported) {
				return fmt.Errorf("a table being copied uses a type the target lacks and that is neither an enum nor a domain: %w", unsupported)
			}
			if err != nil {
				return err
			}
			for _, t := range missing {
				for _, stmt := range t.SQL {
					if _, err := dst.Exec(ctx, stmt); err != nil {
						return fmt.Errorf("create type %s on the target: %s: %w", t.Name, stmt, err)
					}
				}
				log.Info("created on the target a type the source created", "type", t.Name, "sql", t.SQL[len(t.SQL)-1])
			}
		}
	}
	for i, ident := range idents(present) {
		labels, err := missingLabels(ctx, snap, dst, present[i], ident)
		if err != nil {
			return fmt.Errorf("compare the enum labels %s uses: %w", present[i].Qualified(), err)
		}
		for _, o := range labels {
			for _, stmt := range o.SQL {
				if _, err := dst.Exec(ctx, stmt); err != nil {
					return fmt.Errorf("add enum labels to %s on the target: %s: %w", o.Name, stmt, err)
				}
			}
			log.Info("added to an enum on the target the labels the source added", "type", o.Name, "sql", o.SQL)
		}
	}
	return nil
}
