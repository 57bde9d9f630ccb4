package apply

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"
)

// A table with FORCE ROW LEVEL SECURITY (forced on the source before init,
// or by a captured statement) refuses its owner's reads and writes under
// row_security = off, which every session of the tool runs with so that a
// policy can never filter rows; session_replication_role does not lift
// that. While the role does not bypass row security (superuser or
// BYPASSRLS), such a table is held without FORCE for the migration, in
// both apply modes, like the other holds (hold.go): when a session starts,
// every carried table (verify and cutover read the tables no change has
// reached, and a partitioned table's own FORCE governs reads through it);
// when a Relation message arrives; and after a captured statement, which
// first gets FORCE back (releaseRowSecurity) so that it meets the table as
// the source had it.

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

// holdForcedTables holds every carried table that needs it, in a
// transaction of its own, when a session starts.
func (a *Applier) holdForcedTables(ctx context.Context) error {
	var names []string
	for _, st := range a.byOID {
		names = append(names, pgx.Identifier{st.Schema, st.Name}.Sanitize())
	}
	if len(names) == 0 {
		return nil
	}
	sort.Strings(names)
	rows, err := a.query(ctx, `SELECT x FROM unnest($1::text[]) x WHERE EXISTS (`+fmt.Sprintf(rowSecurityHoldSQL, "to_regclass(x)")+`)`, textArray(names))
	if err != nil {
		return fmt.Errorf("read which tables are forced to row-level security on the target: %w", err)
	}
	if len(rows) == 0 {
		return nil
	}
	return a.inBatch(ctx, func() error {
		for _, row := range rows {
			if err := a.holdRowSecurity(ctx, string(row[0])); err != nil {
				return err
			}
		}
		return nil
	})
}

var arrayQuote = strings.NewReplacer(`\`, `\\`, `"`, `\"`)

// textArray is names as a text[] literal.
func textArray(names []string) string {
	var b strings.Builder
	b.WriteByte('{')
	for i, n := range names {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('"')
		b.WriteString(arrayQuote.Replace(n))
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.String()
}

// releaseRowSecurity gives back FORCE ROW LEVEL SECURITY, in the open
// batch, to the carried tables (by source OID) a captured statement is
// about to alter that are held without it, so that the statement meets
// each as the source had it: a captured NO FORCE must leave it off, and
// cleanup must not force it again. It returns the released tables' quoted
// names by OID: the statement's run holds each again under its name after
// the statement (execCaptured), and reholdRefused under the old one when
// the statement was refused.
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
