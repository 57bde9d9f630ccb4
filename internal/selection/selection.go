// Package selection decides which databases and tables a run replicates,
// from the --include/--exclude flags.
package selection

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// ErrInvalid marks a filter the user must correct: exit code 2.
var ErrInvalid = errors.New("invalid selection")

// Table names one table of one database.
type Table struct {
	Database string
	Schema   string
	Name     string
}

// String renders the table as the flags accept it: db.schema.table, with
// double quotes around parts that need them.
func (t Table) String() string {
	return quotePart(t.Database) + "." + quotePart(t.Schema) + "." + quotePart(t.Name)
}

// Qualified is schema.table, for messages about a table inside one database.
func (t Table) Qualified() string { return quotePart(t.Schema) + "." + quotePart(t.Name) }

func quotePart(s string) string {
	if s != "" && !strings.ContainsAny(s, `." `) && strings.ToLower(s) == s {
		return s
	}
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

// Filter is the user's selection. The zero Filter selects everything.
type Filter struct {
	IncludeDatabases []string
	ExcludeDatabases []string
	IncludeTables    []Table
	ExcludeTables    []Table
}

// New builds a Filter from the flag values (already split at commas) and
// checks that include and exclude of the same kind are not both given.
func New(includeDBs, excludeDBs, includeTables, excludeTables []string) (Filter, error) {
	var f Filter
	if len(includeDBs) > 0 && len(excludeDBs) > 0 {
		return f, fmt.Errorf("%w: --include-databases and --exclude-databases cannot be used together: keep one", ErrInvalid)
	}
	if len(includeTables) > 0 && len(excludeTables) > 0 {
		return f, fmt.Errorf("%w: --include-tables and --exclude-tables cannot be used together: keep one", ErrInvalid)
	}
	f.IncludeDatabases = nonEmpty(includeDBs)
	f.ExcludeDatabases = nonEmpty(excludeDBs)
	var err error
	if f.IncludeTables, err = parseTables("--include-tables", includeTables); err != nil {
		return f, err
	}
	if f.ExcludeTables, err = parseTables("--exclude-tables", excludeTables); err != nil {
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

func parseTables(flag string, in []string) ([]Table, error) {
	var out []Table
	for _, s := range nonEmpty(in) {
		t, err := ParseTable(s)
		if err != nil {
			return nil, fmt.Errorf("%w: %s %q: %v", ErrInvalid, flag, s, err)
		}
		out = append(out, t)
	}
	return out, nil
}

// ParseTable reads db.table or db.schema.table; an unqualified schema means
// public. Parts may be double-quoted to hold dots or upper case.
func ParseTable(s string) (Table, error) {
	parts, err := splitIdent(s)
	if err != nil {
		return Table{}, err
	}
	switch len(parts) {
	case 2:
		return Table{Database: parts[0], Schema: "public", Name: parts[1]}, nil
	case 3:
		return Table{Database: parts[0], Schema: parts[1], Name: parts[2]}, nil
	default:
		return Table{}, errors.New("write a table as db.table or db.schema.table")
	}
}

// splitIdent splits at dots outside double quotes. Unquoted parts keep their
// case: table names are matched exactly as PostgreSQL stores them.
func splitIdent(s string) ([]string, error) {
	var parts []string
	var cur strings.Builder
	quoted, wasQuoted := false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quoted && c == '"' && i+1 < len(s) && s[i+1] == '"':
			cur.WriteByte('"')
			i++
		case c == '"':
			quoted = !quoted
			wasQuoted = true
		case c == '.' && !quoted:
			if cur.Len() == 0 && !wasQuoted {
				return nil, errors.New("empty name part")
			}
			parts = append(parts, cur.String())
			cur.Reset()
			wasQuoted = false
		default:
			cur.WriteByte(c)
		}
	}
	if quoted {
		return nil, errors.New("unterminated double quote")
	}
	if cur.Len() == 0 && !wasQuoted {
		return nil, errors.New("empty name part")
	}
	return append(parts, cur.String()), nil
}

// Databases picks the databases to replicate. sourceDB is the database the
// source connection string names: any database but postgres means that one
// alone; postgres (or none) means every database in available, the
// non-template user databases of the source server. Filters narrow the set;
// a filter naming a database that does not exist is an error.
func (f Filter) Databases(sourceDB string, available []string) ([]string, error) {
	for _, names := range [][]string{f.IncludeDatabases, f.ExcludeDatabases} {
		for _, n := range names {
			if !slices.Contains(available, n) {
				return nil, fmt.Errorf("%w: database %q does not exist on the source (it has: %s)", ErrInvalid, n, strings.Join(available, ", "))
			}
		}
	}
	for _, names := range [][]Table{f.IncludeTables, f.ExcludeTables} {
		for _, t := range names {
			if !slices.Contains(available, t.Database) {
				return nil, fmt.Errorf("%w: table %s names database %q, which does not exist on the source", ErrInvalid, t, t.Database)
			}
		}
	}
	candidates := available
	if sourceDB != "" && sourceDB != "postgres" {
		if !slices.Contains(available, sourceDB) {
			return nil, fmt.Errorf("%w: database %q does not exist on the source", ErrInvalid, sourceDB)
		}
		candidates = []string{sourceDB}
	}
	var out []string
	for _, db := range candidates {
		if len(f.IncludeDatabases) > 0 && !slices.Contains(f.IncludeDatabases, db) {
			continue
		}
		if slices.Contains(f.ExcludeDatabases, db) {
			continue
		}
		out = append(out, db)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: the filters select no database (candidates: %s)", ErrInvalid, strings.Join(candidates, ", "))
	}
	return out, nil
}

// Tables narrows the tables of one database, available, to the selection.
// A table filter naming a table of db that is not in available is an error.
func (f Filter) Tables(db string, available []Table) ([]Table, error) {
	for _, list := range [][]Table{f.IncludeTables, f.ExcludeTables} {
		for _, t := range list {
			if t.Database == db && !slices.Contains(available, t) {
				return nil, fmt.Errorf("%w: table %s does not exist on the source", ErrInvalid, t)
			}
		}
	}
	includes := 0
	for _, t := range f.IncludeTables {
		if t.Database == db {
			includes++
		}
	}
	var out []Table
	for _, t := range available {
		if len(f.IncludeTables) > 0 {
			// An include list that names no table of this database leaves it whole.
			if includes > 0 && !slices.Contains(f.IncludeTables, t) {
				continue
			}
		}
		if slices.Contains(f.ExcludeTables, t) {
			continue
		}
		out = append(out, t)
	}
	return out, nil
}
