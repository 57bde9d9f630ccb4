package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/serenorg/postgres-seren-replicator/checkpoint"
	"github.com/serenorg/postgres-seren-replicator/internal/health"
	"github.com/serenorg/postgres-seren-replicator/internal/plan"
)

// StatusCmd shows replication state and lag per database.
type StatusCmd struct {
	Common
	Replication
	JSON            bool          `name:"json" env:"SEREN_JSON" help:"Print JSON."`
	Watch           bool          `help:"Refresh in place every --interval until interrupted."`
	Interval        time.Duration `default:"2s" env:"SEREN_STATUS_WATCH_INTERVAL" help:"Refresh interval of --watch."`
	MaxLagBytes     byteSize      `name:"max-lag-bytes" default:"256MiB" env:"SEREN_MAX_LAG_BYTES" help:"Lag in bytes above which a database is lagging (units: kB, MB, GB, KiB, MiB, GiB)."`
	MaxLagSeconds   seconds       `name:"max-lag-seconds" default:"60" env:"SEREN_MAX_LAG_SECONDS" help:"Lag in seconds above which a database is lagging (also accepts 5m, 1h)."`
	StallAfter      time.Duration `name:"stall-after" default:"5m" env:"SEREN_STALL_AFTER" help:"A connected sync that applied nothing for this long while changes are pending is stalled."`
	RetainedWALWarn byteSize      `name:"retained-wal-warn" default:"1GiB" env:"SEREN_RETAINED_WAL_WARN" help:"Warn when an inactive slot retains more WAL than this."`
}

// statusJSON is the --json document.
type statusJSON struct {
	Healthy   bool            `json:"healthy"`
	Databases []health.Report `json:"databases"`
	Error     string          `json:"error,omitempty"`
}

// Run prints the status; it fails with ErrCheckFailed unless every
// database is healthy.
func (c *StatusCmd) Run(ctx context.Context, env *Env) error {
	if c.Watch && c.Interval <= 0 {
		return usageError("--interval must be positive, got %s", c.Interval)
	}
	p, _, err := c.resolveRecorded(ctx, env, &c.Replication, recallWithin)
	if err != nil {
		return err
	}
	if err := c.Replication.Check(p); err != nil {
		return err
	}
	if len(p.Databases) == 0 {
		return usageError("no database selected: check --include-databases/--exclude-databases")
	}
	if !c.Watch {
		reports, err := c.check(ctx, p)
		if err != nil {
			return err
		}
		if err := c.print(env.Stdout, reports, nil); err != nil {
			return err
		}
		return verdictError(reports)
	}
	return c.watch(ctx, env, p)
}

// watch redraws the status every interval until ctx ends, then returns
// the verdict of the last round. A failed round is shown, not fatal.
func (c *StatusCmd) watch(ctx context.Context, env *Env, p plan.Plan) error {
	clearScreen := isTerminal(env.Stdout) && !c.JSON
	tick := time.NewTicker(c.Interval)
	defer tick.Stop()
	var last error = ErrCheckFailed
	for {
		reports, err := c.check(ctx, p)
		if ctx.Err() != nil {
			return last
		}
		var buf bytes.Buffer
		if !c.JSON {
			fmt.Fprintf(&buf, "%s, every %s (Ctrl-C to stop)\n\n", time.Now().Format(time.DateTime), c.Interval)
		}
		if perr := c.print(&buf, reports, err); perr != nil {
			return perr
		}
		if clearScreen {
			io.WriteString(env.Stdout, "\x1b[H\x1b[2J") // home, clear screen
		} else if !c.JSON {
			buf.WriteString("\n")
		}
		if _, err := env.Stdout.Write(buf.Bytes()); err != nil {
			return err
		}
		if last = verdictError(reports); err != nil {
			last = err
		}
		select {
		case <-ctx.Done():
			return last
		case <-tick.C:
		}
	}
}

func (c *StatusCmd) check(ctx context.Context, p plan.Plan) ([]health.Report, error) {
	reports := make([]health.Report, 0, len(p.Databases))
	for _, db := range p.Databases {
		r, err := health.Check(ctx, db, health.Options{
			Slot:              c.SlotFor(db.Name),
			Publication:       c.Publication,
			CheckpointSchema:  c.CheckpointSchema,
			MaxLagBytes:       int64(c.MaxLagBytes),
			MaxLagSeconds:     time.Duration(c.MaxLagSeconds),
			StallAfter:        c.StallAfter,
			RetainedWarnBytes: int64(c.RetainedWALWarn),
		})
		if err != nil {
			return reports, fmt.Errorf("status of database %s: %w", db.Name, err)
		}
		reports = append(reports, r)
	}
	return reports, nil
}

func verdictError(reports []health.Report) error {
	var bad []string
	for _, r := range reports {
		if r.Verdict != health.Healthy {
			bad = append(bad, r.Database+" "+string(r.Verdict))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("%w: %s", ErrCheckFailed, strings.Join(bad, ", "))
	}
	return nil
}

// print writes reports as JSON or as a table followed by verdicts and
// warnings. roundErr, from --watch, is shown rather than returned.
func (c *StatusCmd) print(w io.Writer, reports []health.Report, roundErr error) error {
	if c.JSON {
		doc := statusJSON{Healthy: roundErr == nil && verdictError(reports) == nil, Databases: reports}
		if doc.Databases == nil {
			doc.Databases = []health.Report{}
		}
		if roundErr != nil {
			doc.Error = redactError(roundErr)
		}
		enc := json.NewEncoder(w)
		if !c.Watch {
			enc.SetIndent("", "  ")
		}
		return enc.Encode(doc)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "DATABASE\tSLOT\tACTIVE\tCONFIRMED\tRETAINED\tCHECKPOINT\tLAST COMMIT\tLAG\tLAG TIME\tSEQ BEHIND\tVERDICT")
	for _, r := range reports {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n",
			r.Database, r.Slot, activeText(r), dash(r.SlotExists, r.ConfirmedFlush.String()),
			dash(r.SlotExists, health.FormatBytes(r.RetainedBytes)), dash(r.HasCheckpoint, r.Checkpoint.String()),
			dash(!r.CommitTime.IsZero(), r.CommitTime.Local().Format(time.DateTime)),
			dash(r.HasCheckpoint, health.FormatBytes(r.LagBytes)), dash(r.HasCheckpoint, r.Lag.Round(time.Second).String()),
			len(r.SequencesBehind), r.Verdict)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range reports {
		fmt.Fprintf(w, "%s: %s: %s\n", r.Database, r.Verdict, r.Reason)
		if len(r.SequencesBehind) > 0 {
			fmt.Fprintf(w, "%s: sequences behind on the target (copied at cutover): %s\n", r.Database, strings.Join(r.SequencesBehind, ", "))
		}
		for _, warn := range r.Warnings {
			fmt.Fprintf(w, "%s: warning: %s\n", r.Database, warn)
		}
		if len(r.Held) > 0 {
			fmt.Fprintf(w, "%s: held on the target for the migration (cleanup restores them): %s\n", r.Database, strings.Join(r.Held, ", "))
		}
		for _, t := range r.Tables {
			switch t.State {
			case checkpoint.TableCopying:
				fmt.Fprintf(w, "%s: table %s.%s is being added: its copy is not complete (sync completes it when it runs)\n", r.Database, t.Schema, t.Name)
			case checkpoint.TableCopied:
				state := "copied at " + t.CopyLSN.String()
				if r.HasCheckpoint && r.Checkpoint >= t.CopyLSN {
					state += ", streaming"
				}
				fmt.Fprintf(w, "%s: table %s.%s joined after init: %s\n", r.Database, t.Schema, t.Name, state)
			case checkpoint.TableDropped:
				fmt.Fprintf(w, "%s: table %s.%s was dropped on the source: its copy on the target is kept\n", r.Database, t.Schema, t.Name)
			}
		}
	}
	if roundErr != nil {
		fmt.Fprintf(w, "error: %s\n", redactError(roundErr))
	}
	return nil
}

func activeText(r health.Report) string {
	switch {
	case !r.SlotExists:
		return "missing"
	case r.SlotActive:
		return "yes"
	default:
		return "no"
	}
}

func dash(ok bool, s string) string {
	if !ok {
		return "-"
	}
	return s
}

// byteSize is a flag value in bytes, written as a plain number or with a
// unit: kB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024).
type byteSize int64

// UnmarshalText parses a size such as "256MiB" or "1000000".
func (b *byteSize) UnmarshalText(text []byte) error {
	s := strings.TrimSpace(string(text))
	i := strings.IndexFunc(s, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	num, unit := s, ""
	if i >= 0 {
		num, unit = s[:i], strings.TrimSpace(s[i:])
	}
	mult := map[string]float64{"": 1, "B": 1, "kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12,
		"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}[unit]
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || mult == 0 || v < 0 {
		return fmt.Errorf("invalid size %q: use bytes or a unit such as 256MiB or 1GB", s)
	}
	*b = byteSize(v * mult)
	return nil
}

// seconds is a flag value in seconds: a number ("60", "1.5") or a Go
// duration ("5m").
type seconds time.Duration

// UnmarshalText parses seconds or a duration.
func (s *seconds) UnmarshalText(text []byte) error {
	str := strings.TrimSpace(string(text))
	if v, err := strconv.ParseFloat(str, 64); err == nil && v >= 0 {
		*s = seconds(v * float64(time.Second))
		return nil
	}
	d, err := time.ParseDuration(str)
	if err != nil || d < 0 {
		return fmt.Errorf("invalid duration %q: use seconds (60) or a duration (5m)", str)
	}
	*s = seconds(d)
	return nil
}
