// Package plan resolves a run's connection strings and filters into the
// concrete list of databases and tables to replicate.
package plan

import (
	"context"
	"fmt"

	"github.com/serenorg/postgres-seren-replicator/internal/conninfo"
	"github.com/serenorg/postgres-seren-replicator/internal/selection"
)

// Database is one database to replicate: where it comes from, where it goes
// and which of its tables are selected.
type Database struct {
	Name   string
	Source *conninfo.Conn
	Target *conninfo.Conn
	// Tables are the selected ordinary and partitioned tables, sorted by schema and name.
	Tables []selection.Table
}

// Plan is every database of a run.
type Plan struct {
	Databases []Database
	// Multi is true when the source URL names the postgres database (or
	// none): each database then goes to the target database of the same name.
	Multi bool
}

// ListDatabases returns the source server's non-template databases that
// accept connections, in name order. The maintenance database postgres is
// among them: the selection leaves it out unless it is named.
func ListDatabases(ctx context.Context, src *conninfo.Conn) ([]string, error) {
	conn, err := src.Connect(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT datname FROM pg_database
		WHERE NOT datistemplate AND datallowconn ORDER BY datname`)
	if err != nil {
		return nil, fmt.Errorf("list databases on %s: %w", src, err)
	}
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, err
		}
		names = append(names, n)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list databases on %s: %w", src, err)
	}
	return names, nil
}

// listTablesSQL lists user tables: ordinary and partitioned, outside system
// schemas, the tool's own schema, and tables that belong to extensions.
const listTablesSQL = `SELECT n.nspname, c.relname FROM pg_class c
	JOIN pg_namespace n ON n.oid = c.relnamespace
	WHERE c.relkind IN ('r','p') AND NOT c.relispartition
	  AND n.nspname NOT IN ('pg_catalog','information_schema','seren_replicator')
	  AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp%'
	  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
	                  AND d.objid = c.oid AND d.deptype = 'e')
	ORDER BY 1, 2`

// ListTables returns the user tables of the database src points at. Leaf
// partitions are left out: selecting their root selects them.
func ListTables(ctx context.Context, src *conninfo.Conn) ([]selection.Table, error) {
	conn, err := src.Connect(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, listTablesSQL)
	if err != nil {
		return nil, fmt.Errorf("list tables of %s: %w", src, err)
	}
	defer rows.Close()
	var out []selection.Table
	for rows.Next() {
		t := selection.Table{Database: src.Database()}
		if err := rows.Scan(&t.Schema, &t.Name); err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list tables of %s: %w", src, err)
	}
	return out, nil
}

// Resolve connects to the source, picks the databases and tables the filter
// selects, and pairs each database with its target: the target database of
// the same name when the source URL names postgres or no database (every
// database) or when the target URL names no database, else the target
// URL's database.
func Resolve(ctx context.Context, src, dst *conninfo.Conn, f selection.Filter) (Plan, error) {
	all, err := ListDatabases(ctx, src)
	if err != nil {
		return Plan{}, err
	}
	p := Plan{Multi: src.Database() == "" || src.Database() == selection.MaintenanceDatabase}
	if !p.Multi {
		found := false
		for _, n := range all {
			found = found || n == src.Database()
		}
		if !found {
			return Plan{}, fmt.Errorf("%w: database %q does not exist on the source (or does not accept connections)", selection.ErrInvalid, src.Database())
		}
	}
	names, err := f.Databases(src.Database(), all)
	if err != nil {
		return Plan{}, err
	}
	catalog := make(map[string][]selection.Table, len(names))
	for _, name := range names {
		d := Database{Name: name, Source: src.WithDatabase(name), Target: dst}
		if p.Multi || dst.Database() == "" {
			d.Target = dst.WithDatabase(name)
		}
		if catalog[name], err = ListTables(ctx, d.Source); err != nil {
			return Plan{}, err
		}
		p.Databases = append(p.Databases, d)
	}
	selected, err := f.Select(catalog)
	if err != nil {
		return Plan{}, err
	}
	for i := range p.Databases {
		p.Databases[i].Tables = selected[p.Databases[i].Name]
	}
	return p, nil
}
