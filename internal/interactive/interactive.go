// Package interactive lets a user narrow a plan on a terminal: numbered
// lists of the databases and tables, answered with comma-separated numbers
// (enter for all). The choice comes back as include filters, so the same
// selection can be repeated with --include-databases and --include-tables.
package interactive

import (
	"bufio"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/serenorg/postgres-seren-replicator/internal/plan"
	"github.com/serenorg/postgres-seren-replicator/internal/selection"
)

// Choose shows p's databases and tables on out and reads the user's picks
// from in, one answer per line. It returns include filters that select
// exactly the choice out of p: every chosen database by name, and the chosen
// tables of each database where not all of them were picked. An invalid
// answer is explained and asked again; running out of input is an error.
func Choose(in io.Reader, out io.Writer, p plan.Plan) (selection.Filter, error) {
	var f selection.Filter
	if len(p.Databases) == 0 {
		return f, fmt.Errorf("%w: nothing to choose from: the plan selects no database", selection.ErrInvalid)
	}
	sc := bufio.NewScanner(in)
	dbs := p.Databases
	if len(dbs) > 1 {
		items := make([]string, len(dbs))
		for i, d := range dbs {
			items[i] = fmt.Sprintf("%s (%d tables)", d.Name, len(d.Tables))
		}
		picked, err := ask(sc, out, "Databases on the source:", "Replicate which databases?", items)
		if err != nil {
			return f, err
		}
		var chosen []plan.Database
		for _, i := range picked {
			chosen = append(chosen, dbs[i])
		}
		dbs = chosen
	} else {
		fmt.Fprintf(out, "Database: %s\n", dbs[0].Name)
	}
	for _, d := range dbs {
		f.IncludeDatabases = append(f.IncludeDatabases, d.Name)
		if len(d.Tables) == 0 {
			fmt.Fprintf(out, "Database %s has no tables.\n", d.Name)
			continue
		}
		items := make([]string, len(d.Tables))
		for i, t := range d.Tables {
			items[i] = t.Qualified()
		}
		picked, err := ask(sc, out, "Tables of "+d.Name+":", "Replicate which tables of "+d.Name+"?", items)
		if err != nil {
			return f, err
		}
		if len(picked) == len(d.Tables) {
			continue // all of them: the database filter alone says so
		}
		for _, i := range picked {
			f.IncludeTables = append(f.IncludeTables, d.Tables[i])
		}
	}
	return f, nil
}

// ask prints a numbered list and reads answers until one is valid. It
// returns the chosen indexes in list order, without duplicates.
func ask(sc *bufio.Scanner, out io.Writer, title, question string, items []string) ([]int, error) {
	fmt.Fprintln(out, title)
	width := len(strconv.Itoa(len(items)))
	for i, item := range items {
		fmt.Fprintf(out, "  %*d) %s\n", width, i+1, item)
	}
	for {
		fmt.Fprintf(out, "%s Numbers separated by commas (ranges like 2-4 allowed); enter for all: ", question)
		if !sc.Scan() {
			fmt.Fprintln(out)
			if err := sc.Err(); err != nil {
				return nil, fmt.Errorf("read answer: %w", err)
			}
			return nil, fmt.Errorf("%w: no answer on standard input (use --include-databases/--include-tables to choose without --interactive)", selection.ErrInvalid)
		}
		picked, err := ParseAnswer(sc.Text(), len(items))
		if err != nil {
			fmt.Fprintf(out, "  %v; try again.\n", err)
			continue
		}
		return picked, nil
	}
}

// ParseAnswer reads an answer such as "1,3,5-7" for a list of n items and
// returns the zero-based indexes it names, in ascending order without
// duplicates. An empty answer (or "all") means every item.
func ParseAnswer(answer string, n int) ([]int, error) {
	answer = strings.TrimSpace(answer)
	if answer == "" || strings.EqualFold(answer, "all") || answer == "*" {
		all := make([]int, n)
		for i := range all {
			all[i] = i
		}
		return all, nil
	}
	seen := make([]bool, n)
	for _, part := range strings.Split(answer, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(part, "-")
		from, err := number(lo, n)
		if err != nil {
			return nil, err
		}
		to := from
		if isRange {
			if to, err = number(hi, n); err != nil {
				return nil, err
			}
			if to < from {
				return nil, fmt.Errorf("range %q runs backwards", part)
			}
		}
		for i := from; i <= to; i++ {
			seen[i-1] = true
		}
	}
	var out []int
	for i, ok := range seen {
		if ok {
			out = append(out, i)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no number in %q", answer)
	}
	return out, nil
}

func number(s string, n int) (int, error) {
	v, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("%q is not a number", strings.TrimSpace(s))
	}
	if v < 1 || v > n {
		return 0, fmt.Errorf("%d is not between 1 and %d", v, n)
	}
	return v, nil
}

// Narrow returns the part of p that f selects: p's databases that f
// includes, each with its tables narrowed by f.
func Narrow(p plan.Plan, f selection.Filter) (plan.Plan, error) {
	out := plan.Plan{Multi: p.Multi}
	for _, d := range p.Databases {
		if len(f.IncludeDatabases) > 0 && !slices.Contains(f.IncludeDatabases, d.Name) {
			continue
		}
		if slices.Contains(f.ExcludeDatabases, d.Name) {
			continue
		}
		tables, err := f.Tables(d.Name, d.Tables)
		if err != nil {
			return plan.Plan{}, err
		}
		d.Tables = tables
		out.Databases = append(out.Databases, d)
	}
	if len(out.Databases) == 0 {
		return plan.Plan{}, fmt.Errorf("%w: the choice selects no database", selection.ErrInvalid)
	}
	return out, nil
}

// Explicit is the include filter that names every database and table of p,
// for repeating a selection whose original flags cannot be combined with
// an include list.
func Explicit(p plan.Plan) selection.Filter {
	var f selection.Filter
	for _, d := range p.Databases {
		f.IncludeDatabases = append(f.IncludeDatabases, d.Name)
		f.IncludeTables = append(f.IncludeTables, d.Tables...)
	}
	return f
}

// Flags renders f's include lists as command-line flags, quoted for a POSIX
// shell.
func Flags(f selection.Filter) string {
	var parts []string
	if len(f.IncludeDatabases) > 0 {
		parts = append(parts, "--include-databases="+shellQuote(strings.Join(f.IncludeDatabases, ",")))
	}
	if len(f.IncludeTables) > 0 {
		names := make([]string, len(f.IncludeTables))
		for i, t := range f.IncludeTables {
			names[i] = t.String()
		}
		parts = append(parts, "--include-tables="+shellQuote(strings.Join(names, ",")))
	}
	return strings.Join(parts, " ")
}

func shellQuote(s string) string {
	safe := strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("_.,-/", r))
	}) < 0
	if safe && s != "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
