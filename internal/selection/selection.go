// Package selection decides which databases and tables a run replicates,
// from the --include/--exclude flags.
//
// A filter entry is a name or a pattern: an unquoted * matches any run of
// characters (none included), and a part written in double quotes matches
// exactly what is between them (a doubled "" stands for one "), so a table
// literally named with a dot or a star is still selectable. Unquoted parts
// keep their case: names are matched exactly as PostgreSQL stores them.
// Include and exclude combine: a name is selected when some include entry
// matches it (or there is no include entry) and no exclude entry does.
package selection

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
)

// ErrInvalid marks a filter the user must correct: exit code 2.
var ErrInvalid = errors.New("invalid selection")

// MaintenanceDatabase is left out of "every database" (a source URL naming
// postgres or no database) and of database patterns; naming it exactly in
// --include-databases selects it.
const MaintenanceDatabase = "postgres"

// Table names one table of one database.
type Table struct {
	Database string
	Schema   string
	Name     string
}

// String renders the table as the flags accept it: db.schema.table, with
// double quotes around parts that need them.
func (t Table) String() string {
	return QuoteName(t.Database) + "." + QuoteName(t.Schema) + "." + QuoteName(t.Name)
}

// Qualified is schema.table, for messages about a table inside one database.
func (t Table) Qualified() string { return QuoteName(t.Schema) + "." + QuoteName(t.Name) }

// QuoteName renders one name so that a filter matches exactly it: in double
// quotes when it holds upper case, a dot, a star, a double quote, a space or
// a comma, as is otherwise.
func QuoteName(s string) string {
	if s != "" && !strings.ContainsAny(s, `."* ,`) && strings.ToLower(s) == s {
		return s
	}
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

// Filter is the user's selection. The zero Filter selects everything.
//
// The exported lists hold exact names (as a program builds them); the
// patterns that New reads from the flags are kept apart. Both apply.
type Filter struct {
	IncludeDatabases []string
	ExcludeDatabases []string
	IncludeTables    []Table
	ExcludeTables    []Table

	dbInclude, dbExclude       []DatabasePattern
	tableInclude, tableExclude []TablePattern
}

// New builds a Filter from the flag values (already split at commas).
func New(includeDBs, excludeDBs, includeTables, excludeTables []string) (Filter, error) {
	var f Filter
	var err error
	if f.dbInclude, err = parseDatabases("--include-databases", includeDBs); err != nil {
		return f, err
	}
	if f.dbExclude, err = parseDatabases("--exclude-databases", excludeDBs); err != nil {
		return f, err
	}
	if f.tableInclude, err = parseTables("--include-tables", includeTables); err != nil {
		return f, err
	}
	if f.tableExclude, err = parseTables("--exclude-tables", excludeTables); err != nil {
		return f, err
	}
	return f, nil
}

func nonEmpty(in []string) []string {
	var out []string
	for _, s := range in {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func parseDatabases(flag string, in []string) ([]DatabasePattern, error) {
	var out []DatabasePattern
	for _, s := range nonEmpty(in) {
		p, err := ParseDatabasePattern(s)
		if err != nil {
			return nil, fmt.Errorf("%w: %s %q: %v", ErrInvalid, flag, s, err)
		}
		p.flag = flag
		out = append(out, p)
	}
	return out, nil
}

func parseTables(flag string, in []string) ([]TablePattern, error) {
	var out []TablePattern
	for _, s := range nonEmpty(in) {
		p, err := ParseTablePattern(s)
		if err != nil {
			return nil, fmt.Errorf("%w: %s %q: %v", ErrInvalid, flag, s, err)
		}
		p.flag = flag
		out = append(out, p)
	}
	return out, nil
}

// ParseTable reads db.table or db.schema.table as one exact table; an
// unqualified schema means public. Parts may be double-quoted to hold dots
// or upper case; a star is taken literally.
func ParseTable(s string) (Table, error) {
	p, err := ParseTablePattern(s)
	if err != nil {
		return Table{}, err
	}
	return Table{Database: p.Database.literal(), Schema: p.Schema.literal(), Name: p.Name.literal()}, nil
}

// databases returns the database patterns of f, the exact names included.
func (f Filter) databases() (include, exclude []DatabasePattern) {
	include = append(exactDatabases("--include-databases", f.IncludeDatabases), f.dbInclude...)
	exclude = append(exactDatabases("--exclude-databases", f.ExcludeDatabases), f.dbExclude...)
	return include, exclude
}

// tables returns the table patterns of f, the exact names included.
func (f Filter) tables() (include, exclude []TablePattern) {
	include = append(exactTables("--include-tables", f.IncludeTables), f.tableInclude...)
	exclude = append(exactTables("--exclude-tables", f.ExcludeTables), f.tableExclude...)
	return include, exclude
}

// Databases picks the databases to replicate. sourceDB is the database the
// source connection string names: any database but postgres means that one
// alone; postgres (or none) means every database in available, the
// non-template databases of the source server, but postgres itself unless
// --include-databases names it exactly. Include patterns narrow the
// candidates, exclude patterns then remove from them; a pattern that matches
// no database of the server is an error.
func (f Filter) Databases(sourceDB string, available []string) ([]string, error) {
	include, exclude := f.databases()
	for _, p := range slices.Concat(include, exclude) {
		if !slices.ContainsFunc(available, p.Match) {
			return nil, fmt.Errorf("%w: %s %s matches no database on the source%s", ErrInvalid, p.flag, p, didYouMean(suggestDatabases(p, available)))
		}
	}
	include2, exclude2 := f.tables()
	for _, p := range slices.Concat(include2, exclude2) {
		if !slices.ContainsFunc(available, p.Database.matchDB) {
			return nil, fmt.Errorf("%w: %s %s names database %s, which does not exist on the source%s", ErrInvalid, p.flag, p, p.Database,
				didYouMean(suggestDatabases(DatabasePattern{Name: p.Database}, available)))
		}
	}
	var candidates []string
	if sourceDB != "" && sourceDB != MaintenanceDatabase {
		if !slices.Contains(available, sourceDB) {
			return nil, fmt.Errorf("%w: database %q does not exist on the source", ErrInvalid, sourceDB)
		}
		candidates = []string{sourceDB}
	} else {
		for _, db := range available {
			if db != MaintenanceDatabase || slices.ContainsFunc(include, func(p DatabasePattern) bool { return p.Name.literal() == db && !p.Name.wild() }) {
				candidates = append(candidates, db)
			}
		}
	}
	var out []string
	for _, db := range candidates {
		if len(include) > 0 && !slices.ContainsFunc(include, func(p DatabasePattern) bool { return p.Match(db) }) {
			continue
		}
		if slices.ContainsFunc(exclude, func(p DatabasePattern) bool { return p.Match(db) }) {
			continue
		}
		out = append(out, db)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: the filters select no database (candidates: %s)", ErrInvalid, strings.Join(candidates, ", "))
	}
	return out, nil
}

// Tables narrows the tables of one database, available, to the selection:
// an include list whose patterns name no table of db (by their database
// part) leaves it whole; exclude patterns then remove tables. A pattern
// whose database part is exactly db and that matches none of its tables is
// an error, with the names it may have meant.
func (f Filter) Tables(db string, available []Table) ([]Table, error) {
	include, exclude := f.tables()
	for _, p := range slices.Concat(include, exclude) {
		if p.Database.wild() || p.Database.literal() != db {
			continue
		}
		if !slices.ContainsFunc(available, p.Match) {
			return nil, fmt.Errorf("%w: %s %s matches no table%s", ErrInvalid, p.flag, p, didYouMean(suggestTables(p, available)))
		}
	}
	var includes []TablePattern
	for _, p := range include {
		if p.Database.matchDB(db) {
			includes = append(includes, p)
		}
	}
	var out []Table
	for _, t := range available {
		if len(includes) > 0 && !slices.ContainsFunc(includes, func(p TablePattern) bool { return p.Match(t) }) {
			continue
		}
		if slices.ContainsFunc(exclude, func(p TablePattern) bool { return p.Match(t) }) {
			continue
		}
		out = append(out, t)
	}
	return out, nil
}

// Select narrows every selected database's tables (catalog: the tables of
// each database Databases picked) and checks that each table pattern
// matches some table of them: a pattern that matches nothing is an error
// naming it, with the names it may have meant.
func (f Filter) Select(catalog map[string][]Table) (map[string][]Table, error) {
	out := make(map[string][]Table, len(catalog))
	dbs := make([]string, 0, len(catalog))
	for db := range catalog {
		dbs = append(dbs, db)
	}
	sort.Strings(dbs)
	for _, db := range dbs {
		tables, err := f.Tables(db, catalog[db])
		if err != nil {
			return nil, err
		}
		out[db] = tables
	}
	include, exclude := f.tables()
	for _, p := range slices.Concat(include, exclude) {
		var seen []string
		var all []Table
		matched := false
		for _, db := range dbs {
			if p.Database.matchDB(db) {
				seen = append(seen, db)
				all = append(all, catalog[db]...)
				matched = matched || slices.ContainsFunc(catalog[db], p.Match)
			}
		}
		switch {
		case matched:
		case len(seen) == 0:
			return nil, fmt.Errorf("%w: %s %s matches no table: database %s is not selected (selected: %s)", ErrInvalid, p.flag, p, p.Database, strings.Join(dbs, ", "))
		default:
			return nil, fmt.Errorf("%w: %s %s matches no table%s", ErrInvalid, p.flag, p, didYouMean(suggestTables(p, all)))
		}
	}
	return out, nil
}

func didYouMean(names []string) string {
	if len(names) == 0 {
		return ""
	}
	return " (did you mean " + strings.Join(names, " or ") + "?)"
}
