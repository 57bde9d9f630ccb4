// Package interactive lets a user narrow a plan on a terminal: a checklist
// of the databases, then for each chosen database a checklist of the tables
// to leave out, a summary and a confirmation. The choice comes back as the
// include/exclude flag values that select it, so the same run can be
// repeated without a terminal.
//
// The screens are a bubbletea program (model.go, view.go); what they show
// is read from the source catalog by Load, and the flags that repeat a
// choice are worked out by Repeat, both apart from the terminal so they
// are tested on their own.
package interactive

import (
	"context"
	"errors"
	"fmt"
	"io"

	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/x/ansi"

	"github.com/serenorg/postgres-seren-replicator/internal/plan"
	"github.com/serenorg/postgres-seren-replicator/internal/selection"
)

// ErrCanceled is returned when the user pressed Ctrl-C (or the process was
// interrupted) before confirming: nothing was chosen.
var ErrCanceled = errors.New("canceled")

// ErrDeclined is returned when the user answered n to the summary's
// confirmation.
var ErrDeclined = errors.New("not confirmed")

// Database is one database offered for selection, with what the lists
// show about it.
type Database struct {
	Name string
	// Bytes is the database's size on disk (pg_database_size).
	Bytes int64
	// Tables are the database's selectable tables, in plan order.
	Tables []Table
}

// Table is one selectable table.
type Table struct {
	selection.Table
	// Bytes is the table's total size: heap, indexes and TOAST, summed over
	// the partitions of a partitioned table.
	Bytes int64
	// Rows is the planner's row estimate (reltuples), or -1 when the table
	// was never vacuumed or analysed.
	Rows int64
}

// Choice is what the user confirmed.
type Choice struct {
	// Databases are the chosen databases, in list order.
	Databases []string
	// Excluded are, for each chosen database, the tables to leave out.
	Excluded map[string][]selection.Table
}

// Options are the settings of one Run.
type Options struct {
	// Multi shows the database checklist. Without it the only database is
	// taken as chosen (the source URL named it).
	Multi bool
	// In and Out are the terminal: keys are read from In, screens drawn on
	// Out.
	In  io.Reader
	Out io.Writer
}

// Run shows the checklists on the terminal and returns the confirmed
// choice. It returns ErrCanceled on Ctrl-C or when ctx ends, and
// ErrDeclined when the user answers n to the summary.
func Run(ctx context.Context, dbs []Database, opts Options) (Choice, error) {
	if len(dbs) == 0 {
		return Choice{}, fmt.Errorf("%w: nothing to choose from: the selection holds no database", selection.ErrInvalid)
	}
	m := newModel(dbs, opts.Multi)
	prog := tea.NewProgram(m,
		tea.WithContext(ctx),
		tea.WithInput(opts.In),
		tea.WithOutput(opts.Out),
		// Ctrl-C arrives as a key in raw mode; a SIGINT from elsewhere
		// reaches the caller's signal context, which ends the program.
		tea.WithoutSignalHandler(),
	)
	final, err := prog.Run()
	if err != nil {
		if errors.Is(err, tea.ErrProgramKilled) || errors.Is(err, tea.ErrInterrupted) {
			return Choice{}, ErrCanceled
		}
		return Choice{}, fmt.Errorf("terminal: %w", err)
	}
	fm := final.(*model)
	if fm.canceled {
		return Choice{}, ErrCanceled
	}
	// The screens are gone with the alternate screen: what was answered
	// stays in the terminal's history.
	fmt.Fprintln(opts.Out, ansi.Strip(fm.render()))
	if !fm.confirmed {
		return Choice{}, ErrDeclined
	}
	return fm.choice(), nil
}

// Load reads, for each database of p, its size and the size and row
// estimate of each of its selected tables. It connects to every database of
// the plan once.
func Load(ctx context.Context, p plan.Plan) ([]Database, error) {
	var out []Database
	for _, d := range p.Databases {
		db, err := loadDatabase(ctx, d)
		if err != nil {
			return nil, err
		}
		out = append(out, db)
	}
	return out, nil
}

// tableStatsSQL lists the size and row estimate of every table the plan can
// select: a partitioned table counts its leaf partitions; reltuples is
// negative for a table never vacuumed or analysed (PostgreSQL 14 and later).
const tableStatsSQL = `SELECT n.nspname, c.relname, s.bytes, s.rows
	FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
	CROSS JOIN LATERAL (
		SELECT coalesce(sum(pg_total_relation_size(l.oid)), 0)::bigint AS bytes,
		       coalesce(sum(l.reltuples) FILTER (WHERE l.reltuples >= 0), -1)::bigint AS rows
		FROM pg_class l
		WHERE (c.relkind = 'r' AND l.oid = c.oid)
		   OR (c.relkind = 'p' AND l.oid IN (SELECT relid FROM pg_partition_tree(c.oid) WHERE isleaf))
	) s
	WHERE c.relkind IN ('r','p') AND NOT c.relispartition`

func loadDatabase(ctx context.Context, d plan.Database) (Database, error) {
	out := Database{Name: d.Name}
	conn, err := d.Source.Connect(ctx)
	if err != nil {
		return out, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := conn.QueryRow(ctx, `SELECT pg_database_size(current_database())`).Scan(&out.Bytes); err != nil {
		return out, fmt.Errorf("size of database %s: %w", d.Name, err)
	}
	rows, err := conn.Query(ctx, tableStatsSQL)
	if err != nil {
		return out, fmt.Errorf("table sizes of %s: %w", d.Name, err)
	}
	defer rows.Close()
	type stats struct{ bytes, rows int64 }
	byName := map[selection.Table]stats{}
	for rows.Next() {
		t := selection.Table{Database: d.Name}
		var s stats
		if err := rows.Scan(&t.Schema, &t.Name, &s.bytes, &s.rows); err != nil {
			return out, fmt.Errorf("table sizes of %s: %w", d.Name, err)
		}
		byName[t] = s
	}
	if err := rows.Err(); err != nil {
		return out, fmt.Errorf("table sizes of %s: %w", d.Name, err)
	}
	for _, t := range d.Tables {
		s, ok := byName[t]
		if !ok {
			s.rows = -1 // dropped since the plan listed it: init will say so
		}
		out.Tables = append(out.Tables, Table{Table: t, Bytes: s.bytes, Rows: s.rows})
	}
	return out, nil
}
