package verify

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
)

// Table statuses.
const (
	StatusMatch    = "match"
	StatusMismatch = "mismatch"
	StatusError    = "error"
)

// Kinds of differing row.
const (
	MissingOnTarget = "missing_on_target"
	ExtraOnTarget   = "extra_on_target"
	Changed         = "changed"
)

// Report is the result of a whole run.
type Report struct {
	Match     bool             `json:"match"`
	Databases []DatabaseReport `json:"databases"`
}

// DatabaseReport is the result for one database.
type DatabaseReport struct {
	Name   string `json:"name"`
	Source string `json:"source"`
	Target string `json:"target"`
	// Consistency says how comparisons were aligned with replication.
	Consistency string `json:"consistency"`
	// Hash is the row hash function used: hashtextextended or md5.
	Hash   string        `json:"hash"`
	Tables []TableReport `json:"tables"`
}

// Match reports whether every table matched.
func (d DatabaseReport) Match() bool {
	for _, t := range d.Tables {
		if t.Status != StatusMatch {
			return false
		}
	}
	return true
}

// TableReport is the result for one table.
type TableReport struct {
	Schema string `json:"schema"`
	Name   string `json:"name"`
	// Key are the key columns the ranges are cut on; empty for a table
	// compared as a whole multiset.
	Key    []string `json:"key"`
	Status string   `json:"status"`
	Chunks int      `json:"chunks"`
	// SourceRows and TargetRows are the rows counted, each range as of the
	// comparison that decided it.
	SourceRows int64 `json:"source_rows"`
	TargetRows int64 `json:"target_rows"`
	// DifferingRows counts the rows named in Ranges.
	DifferingRows int64 `json:"differing_rows"`
	// Complete is false when MaxDiffRows stopped the search: more rows than
	// DifferingRows may differ.
	Complete bool `json:"complete"`
	// Retries counts comparisons repeated while waiting for replication.
	Retries int `json:"retries"`
	// Unconfirmed is true for a mismatch none of whose differences was
	// confirmed: each was seen while a sync applied changes and was not
	// compared again (see RangeDiff.Unconfirmed), so the table may match.
	Unconfirmed bool `json:"unconfirmed"`
	// Ranges are the top-level key ranges that differ.
	Ranges []RangeDiff `json:"ranges,omitempty"`
	Error  string      `json:"error,omitempty"`

	// cols are the columns compared, for Since.
	cols []column
}

// Qualified is schema.table as SQL spells it.
func (t TableReport) Qualified() string { return quoteIdent(t.Schema) + "." + quoteIdent(t.Name) }

// RangeDiff is one key range whose contents differ.
type RangeDiff struct {
	// From is the inclusive lower bound (key column values as text), nil
	// for the start of the table.
	From []string `json:"from"`
	// To is the exclusive upper bound, nil for the end of the table.
	To         []string `json:"to"`
	SourceRows int64    `json:"source_rows"`
	TargetRows int64    `json:"target_rows"`
	// SourceHash and TargetHash are the sums of row hashes (decimal).
	SourceHash string `json:"source_hash"`
	TargetHash string `json:"target_hash"`
	// Rows are the differing rows found in the range.
	Rows []RowDiff `json:"rows"`
	// Complete is true when Rows lists every differing row of the range.
	Complete bool `json:"complete"`
	// Unconfirmed is true when the range's hashes differed while a sync
	// applied changes and the comparison was not repeated as configured
	// (the re-check time ran out, or the table had MaxDiffRows rows named),
	// or when a sync applied changes during a direct comparison: the
	// difference may be a change in flight.
	Unconfirmed bool `json:"unconfirmed"`

	order int // index of the range in the table's plan
}

// RowDiff is one row that differs.
type RowDiff struct {
	Kind string `json:"kind"`
	// Key holds the key column values as text, in key column order.
	Key []string `json:"key"`
	// Unconfirmed is true when the row differed while a sync applied
	// changes and was not read again because the re-check time ran out:
	// it may be a change in flight.
	Unconfirmed bool `json:"unconfirmed,omitempty"`
}

// tableJob is a table in progress: its report, guarded by mu.
type tableJob struct {
	mu      sync.Mutex
	rep     TableReport
	pending int
	err     error
	found   int // differing rows named so far, bounded by MaxDiffRows
	// unsure marks every difference unconfirmed: a sync applied changes
	// while the table was compared directly.
	unsure bool
	cols   []column
	key    []column
	ident  string // quoted schema.table
}

func (t *tableJob) fail(err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.err == nil {
		t.err = err
	}
}

func (t *tableJob) failed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.err != nil
}

func (t *tableJob) chunkDone(p Progress, rows int64) {
	t.mu.Lock()
	t.pending--
	done := t.pending == 0
	t.mu.Unlock()
	p.Rows(rows)
	if done {
		p.TableDone()
	}
}

// counted adds a top-level range's row counts.
func (t *tableJob) counted(src, dst int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.rep.SourceRows += src
	t.rep.TargetRows += dst
}

func (t *tableJob) retried() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.rep.Retries++
}

// claim reserves up to n row names under the table's limit and returns how
// many may be named.
func (t *tableJob) claim(n, limit int) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n = min(n, limit-t.found)
	if n < 0 {
		n = 0
	}
	t.found += n
	return n
}

func (t *tableJob) full(limit int) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.found >= limit
}

func (t *tableJob) addRange(r RangeDiff) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.rep.Ranges = append(t.rep.Ranges, r)
}

// finish settles the status once every range is done.
func (t *tableJob) finish() {
	t.mu.Lock()
	defer t.mu.Unlock()
	r := &t.rep
	r.Complete = true
	confirmed := false
	for i := range r.Ranges {
		d := &r.Ranges[i]
		d.Unconfirmed = d.Unconfirmed || t.unsure
		r.DifferingRows += int64(len(d.Rows))
		r.Complete = r.Complete && d.Complete
		confirmed = confirmed || !d.Unconfirmed
		for j := range d.Rows {
			d.Rows[j].Unconfirmed = d.Rows[j].Unconfirmed || t.unsure
			confirmed = confirmed || !d.Rows[j].Unconfirmed
		}
	}
	r.Unconfirmed = len(r.Ranges) > 0 && !confirmed
	sort.SliceStable(r.Ranges, func(i, j int) bool { return r.Ranges[i].order < r.Ranges[j].order })
	switch {
	case t.err != nil:
		r.Status = StatusError
		r.Error = t.err.Error()
		r.Complete = false
	case len(r.Ranges) > 0:
		r.Status = StatusMismatch
	default:
		r.Status = StatusMatch
	}
}

// Unread counts the tables that could not be compared (status error): a
// report with any is incomplete, whatever the other tables show.
func (r Report) Unread() int {
	n := 0
	for _, d := range r.Databases {
		for _, t := range d.Tables {
			if t.Status == StatusError {
				n++
			}
		}
	}
	return n
}

// Unconfirmed counts the mismatching tables none of whose differences was
// confirmed (TableReport.Unconfirmed).
func (r Report) Unconfirmed() int {
	n := 0
	for _, d := range r.Databases {
		for _, t := range d.Tables {
			if t.Unconfirmed {
				n++
			}
		}
	}
	return n
}

// WriteJSON writes the report as indented JSON.
func (r Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteText writes one table per database, then the differing ranges and rows.
func (r Report) WriteText(w io.Writer) error {
	var b strings.Builder
	for i, d := range r.Databases {
		if i > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "database %s: source %s, target %s\n", quoteIdent(d.Name), d.Source, d.Target)
		fmt.Fprintf(&b, "consistency: %s; row hash: %s\n", d.Consistency, d.Hash)
		tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "TABLE\tKEY\tCHUNKS\tSOURCE ROWS\tTARGET ROWS\tSTATUS\tDIFFERENCES")
		for _, t := range d.Tables {
			key := strings.Join(quoteAll(t.Key), ",")
			if key == "" {
				key = "(none)"
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%s\t%s\n", t.Qualified(), key, t.Chunks, t.SourceRows, t.TargetRows, t.Status, summary(t))
		}
		tw.Flush()
		for _, t := range d.Tables {
			writeDetails(&b, t)
		}
	}
	switch n := r.Unread(); {
	case r.Match:
		b.WriteString("\nall tables match\n")
	case n > 0:
		fmt.Fprintf(&b, "\nNOT VERIFIED: tables that could not be read: %d\n", n)
	default:
		b.WriteString("\nDIFFERENCES FOUND\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func summary(t TableReport) string {
	switch t.Status {
	case StatusMatch:
		return "-"
	case StatusError:
		return t.Error
	}
	s := "row multiset differs"
	if len(t.Key) > 0 {
		s = fmt.Sprintf("%d %s in %d %s", t.DifferingRows, plural(int(t.DifferingRows), "row"), len(t.Ranges), plural(len(t.Ranges), "range"))
		if !t.Complete {
			s = "at least " + s + " (limit reached)"
		}
	}
	if t.Unconfirmed {
		s += ", unconfirmed (seen while sync applied changes)"
	}
	return s
}

func writeDetails(b *strings.Builder, t TableReport) {
	for _, r := range t.Ranges {
		unsure := ""
		if r.Unconfirmed {
			unsure = ", unconfirmed"
		}
		if len(t.Key) == 0 {
			fmt.Fprintf(b, "%s: whole table: %d source rows, %d target rows, hash %s vs %s%s\n",
				t.Qualified(), r.SourceRows, r.TargetRows, r.SourceHash, r.TargetHash, unsure)
			continue
		}
		state := fmt.Sprintf("%d differ", len(r.Rows))
		if !r.Complete {
			state = fmt.Sprintf("%d named, more not searched (limit reached)", len(r.Rows))
		}
		fmt.Fprintf(b, "%s: range %s: %d source rows, %d target rows, %s%s\n",
			t.Qualified(), FormatRange(t.Key, r.From, r.To), r.SourceRows, r.TargetRows, state, unsure)
		for _, row := range r.Rows {
			note := ""
			if row.Unconfirmed {
				note = " (unconfirmed)"
			}
			fmt.Fprintf(b, "  %-18s %s%s\n", strings.ReplaceAll(row.Kind, "_", " "), FormatKey(t.Key, row.Key), note)
		}
	}
}

// FormatKey renders a key as col=value pairs.
func FormatKey(cols, vals []string) string {
	parts := make([]string, len(vals))
	for i, v := range vals {
		name := "?"
		if i < len(cols) {
			name = quoteIdent(cols[i])
		}
		parts[i] = name + "=" + v
	}
	return strings.Join(parts, ", ")
}

// FormatRange renders [from, to) with open ends as -inf and +inf.
func FormatRange(cols, from, to []string) string {
	lo, hi := "-inf", "+inf"
	if from != nil {
		lo = FormatKey(cols, from)
	}
	if to != nil {
		hi = FormatKey(cols, to)
	}
	return "[" + lo + " .. " + hi + ")"
}

func quoteAll(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = quoteIdent(n)
	}
	return out
}

// quoteIdent quotes a name only when SQL needs it, for readable output.
func quoteIdent(s string) string {
	plain := s != ""
	for i, r := range s {
		if !(r >= 'a' && r <= 'z' || r == '_' || i > 0 && r >= '0' && r <= '9') {
			plain = false
			break
		}
	}
	if plain {
		return s
	}
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

// plural is word in the plural unless n is 1.
func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}
