package interactive

import (
	"slices"

	"github.com/serenorg/postgres-seren-replicator/internal/plan"
	"github.com/serenorg/postgres-seren-replicator/internal/selection"
)

// Flags are the values of the four selection flags, as the command line
// takes them (one name or pattern per element).
type Flags struct {
	IncludeDatabases []string
	ExcludeDatabases []string
	IncludeTables    []string
	ExcludeTables    []string
}

// Repeat returns the selection flags that make a run without --interactive
// select c, written as close to the user's own flags as can be. given are
// the flags the interactive run started with: the lists offered were
// already narrowed by them.
//
// In a multi-database run the chosen databases are named. The given table
// entries are kept, but for those that can only name databases left out (a
// pattern that matches no table is an error), and the tables excluded on
// the terminal are added by name to --exclude-tables. The caller checks
// the result against the catalog, and falls back on Explicit when a kept
// pattern matched only tables of the databases left out.
func Repeat(c Choice, multi bool, given Flags) Flags {
	out := Flags{IncludeDatabases: given.IncludeDatabases, ExcludeDatabases: given.ExcludeDatabases}
	if multi {
		out.IncludeDatabases, out.ExcludeDatabases = slices.Clone(c.Databases), nil
	}
	out.IncludeTables = forChosen(given.IncludeTables, c.Databases)
	out.ExcludeTables = forChosen(given.ExcludeTables, c.Databases)
	for _, db := range c.Databases {
		for _, t := range c.Excluded[db] {
			out.ExcludeTables = append(out.ExcludeTables, t.String())
		}
	}
	return out
}

// forChosen keeps the table entries whose database part can match one of
// the chosen databases.
func forChosen(entries, chosen []string) []string {
	var out []string
	for _, e := range entries {
		p, err := selection.ParseTablePattern(e)
		if err != nil || slices.ContainsFunc(chosen, p.Database.Match) {
			out = append(out, e)
		}
	}
	return out
}

// Explicit returns flags that select c by name alone: the chosen databases
// (in a multi-database run; otherwise the given database flags) and, as
// --exclude-tables, every table of all (the chosen databases with no table
// filter) that c does not keep. dbs are the lists the user chose from.
func Explicit(c Choice, dbs []Database, all plan.Plan, multi bool, given Flags) Flags {
	out := Flags{IncludeDatabases: given.IncludeDatabases, ExcludeDatabases: given.ExcludeDatabases}
	if multi {
		out.IncludeDatabases, out.ExcludeDatabases = slices.Clone(c.Databases), nil
	}
	kept := map[selection.Table]bool{}
	for _, d := range dbs {
		for _, t := range d.Tables {
			kept[t.Table] = slices.Contains(c.Databases, d.Name) && !slices.Contains(c.Excluded[d.Name], t.Table)
		}
	}
	for _, d := range all.Databases {
		for _, t := range d.Tables {
			if !kept[t] {
				out.ExcludeTables = append(out.ExcludeTables, t.String())
			}
		}
	}
	return out
}
