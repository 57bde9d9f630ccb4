package apply

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/serenorg/postgres-seren-replicator/checkpoint"
)

// A table with FORCE ROW LEVEL SECURITY (forced on the source before init,
// or by a captured statement) refuses its owner's reads and writes under
// row_security = off, which every session of the tool runs with so that a
// policy can never filter rows; session_replication_role does not lift
// that. While the role does not bypass row security (superuser or
// BYPASSRLS), such a table is held without FORCE for the migration, in
// both apply modes, like the other holds (hold.go): once init has copied
// it (HoldForcedTables); when a Relation message arrives; and after a
// captured statement on a carried table, which first gets FORCE back
// (releaseRowSecurity) so that it meets the table as the source had it.

// rowSecurityHoldSQL is the row security hold a table needs: %s is how the
// query names the table ($1).
const rowSecurityHoldSQL = `SELECT 'row security', n.nspname, c.relname, 'force', true
	FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
	WHERE c.oid = %s AND c.relforcerowsecurity AND pg_has_role(c.relowner, 'USAGE')
		AND NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = current_user AND (rolsuper OR rolbypassrls))`

// holdRowSecurity holds table (quoted) without FORCE where it needs it.
func (a *Applier) holdRowSecurity(ctx context.Context, table string) error {
	rows, err := a.query(ctx, fmt.Sprintf(rowSecurityHoldSQL, "to_regclass($1)"), table)
	if err != nil {
		return fmt.Errorf("read whether table %s is forced to row-level security on the target: %w", table, err)
	}
	return a.makeHolds(ctx, table, rows)
}

// HoldForcedTables holds, in a transaction of its own on conn, those of
// tables (quoted names) that need it, and returns what it held. init calls
// it once a database is copied, so that verify and cutover read the tables
// no change reaches, and a partitioned table whose own FORCE governs reads
// through it. A sync session does not call it when it starts: after a
// cutover (which restores every hold) a sync started again must leave the
// live tables as they are.
func HoldForcedTables(ctx context.Context, conn *pgx.Conn, s checkpoint.Store, tables []string) ([]string, error) {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, ensureHeldSQL(s)); err != nil {
		return nil, fmt.Errorf("create the table of holds on the target: %w", err)
	}
	rows, err := tx.Query(ctx, `SELECT h.* FROM unnest($1::text[]) x, LATERAL (`+fmt.Sprintf(rowSecurityHoldSQL, "to_regclass(x)")+`) h`, tables)
	if err != nil {
		return nil, fmt.Errorf("read which tables are forced to row-level security on the target: %w", err)
	}
	var holds []hold
	for rows.Next() {
		var h hold
		var owned bool
		if err := rows.Scan(&h.kind, &h.schema, &h.table, &h.object, &owned); err != nil {
			return nil, err
		}
		holds = append(holds, h)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read which tables are forced to row-level security on the target: %w", err)
	}
	var held []string
	for _, h := range holds {
		if _, err := tx.Exec(ctx, h.holdSQL()); err != nil {
			return nil, fmt.Errorf("target table %s: %s: %w", h.tableName(), h.holdSQL(), err)
		}
		if _, err := tx.Exec(ctx, recordHoldSQL(s),
			h.kind, h.schema, h.table, h.object); err != nil {
			return nil, fmt.Errorf("record %s: %w", h, err)
		}
		held = append(held, h.String())
	}
	return held, tx.Commit(ctx)
}

// releaseRowSecurity gives back FORCE ROW LEVEL SECURITY, in the open
// batch, to the carried tables (by source OID) a captured statement is
// about to alter that are held without it, so that the statement meets
// each as the source had it: a captured NO FORCE must leave it off, and
// cleanup must not force it again. It returns the released tables' quoted
// names by OID, for reholdRefused when the statement is refused (the run of
// a statement holds every carried table it altered, execCaptured).
func (a *Applier) releaseRowSecurity(ctx context.Context, oids []uint32) (map[uint32]string, error) {
	released := map[uint32]string{}
	for _, id := range oids {
		st, ok := a.byOID[id]
		if !ok {
			continue
		}
		rows, err := a.query(ctx, fmt.Sprintf(`DELETE FROM %s WHERE kind = 'row security' AND schema_name = $1 AND table_name = $2 RETURNING object`, heldTable(a.cfg.Store)),
			st.Schema, st.Name)
		if err != nil {
			return nil, fmt.Errorf("release the row-level security hold of %s.%s: %w", st.Schema, st.Name, err)
		}
		if len(rows) == 0 {
			continue
		}
		h := hold{kind: "row security", schema: st.Schema, table: st.Name, object: string(rows[0][0])}
		if _, err := a.query(ctx, h.restoreSQL()); err != nil {
			return nil, permanent(fmt.Errorf("target table %s: %s: %w", h.tableName(), h.restoreSQL(), err))
		}
		released[id] = h.tableName()
	}
	return released, nil
}

// reholdRefused holds again the tables released for a captured statement
// the target refused (rolled back, so they have their old names).
func (a *Applier) reholdRefused(ctx context.Context, released map[uint32]string) error {
	for _, table := range released {
		if err := a.holdRowSecurity(ctx, table); err != nil {
			return err
		}
	}
	return nil
}
