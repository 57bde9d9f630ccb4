// Package health computes the replication state of one database from the
// outside, as `status` shows it: the source slot and publication, the
// target checkpoint, the lag, out-of-date sequences, and a verdict.
package health

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/serenorg/postgres-seren-replicator/apply"
	"github.com/serenorg/postgres-seren-replicator/checkpoint"
	"github.com/serenorg/postgres-seren-replicator/internal/plan"
	"github.com/serenorg/postgres-seren-replicator/stream"
)

// Verdict is the one-word health of a database.
type Verdict string

// Verdicts, from best to worst.
const (
	// Healthy: caught up, or streaming with lag under the thresholds.
	Healthy Verdict = "healthy"
	// Lagging: streaming, but the lag is above a threshold.
	Lagging Verdict = "lagging"
	// Stalled: changes are pending and nothing applies them (no sync
	// connected, or the connected one has not applied anything for a while).
	Stalled Verdict = "stalled"
	// Broken: streaming cannot resume without help (slot or checkpoint
	// missing, WAL lost, checkpoint behind the slot).
	Broken Verdict = "broken"
)

// Defaults for Options.
const (
	DefaultMaxLagBytes       = 256 << 20
	DefaultMaxLagSeconds     = 60 * time.Second
	DefaultStallAfter        = 5 * time.Minute
	DefaultRetainedWarnBytes = 1 << 30
	// peekLimit bounds how many decoded messages a pending-change check reads.
	peekLimit = 10000
	// peekTimeout bounds the pending-change check; past it the answer is "unknown".
	peekTimeout = 10 * time.Second
)

// Options tune a check. Zero values take the defaults.
type Options struct {
	// Slot is the replication slot; stream.DefaultSlotName(db) when empty.
	Slot string
	// Publication is the source publication; when empty, the one the slot's
	// migration streams from (stream.FindPublication).
	Publication string
	// CheckpointSchema is the target schema of the checkpoint table;
	// checkpoint.DefaultSchema when empty.
	CheckpointSchema string
	// MaxLagBytes is the lag in bytes above which a database is lagging
	// (default DefaultMaxLagBytes).
	MaxLagBytes int64
	// MaxLagSeconds is the lag in time above which a database is lagging
	// (default DefaultMaxLagSeconds).
	MaxLagSeconds time.Duration
	// StallAfter is how long an active slot may go without an applied
	// checkpoint while changes are pending before it counts as stalled
	// (default DefaultStallAfter).
	StallAfter time.Duration
	// RetainedWarnBytes is the WAL an inactive slot may keep before a
	// warning (default DefaultRetainedWarnBytes).
	RetainedWarnBytes int64
	// Now is the clock (time.Now when nil), for tests.
	Now func() time.Time
}

func (o Options) withDefaults(db string) Options {
	if o.Slot == "" {
		o.Slot = stream.DefaultSlotName(db)
	}
	if o.MaxLagBytes <= 0 {
		o.MaxLagBytes = DefaultMaxLagBytes
	}
	if o.MaxLagSeconds <= 0 {
		o.MaxLagSeconds = DefaultMaxLagSeconds
	}
	if o.StallAfter <= 0 {
		o.StallAfter = DefaultStallAfter
	}
	if o.RetainedWarnBytes <= 0 {
		o.RetainedWarnBytes = DefaultRetainedWarnBytes
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Report is the state of one database.
type Report struct {
	Database string
	Slot     string
	// SlotExists is false when the slot is missing on the source.
	SlotExists bool
	SlotActive bool
	// WALStatus is the slot's wal_status (reserved, extended, unreserved, lost).
	WALStatus string
	// ConfirmedFlush is the position the source knows was applied.
	ConfirmedFlush pglogrepl.LSN
	// RetainedBytes is the WAL the slot keeps on the source.
	RetainedBytes int64
	// PublicationExists is false when the publication is missing.
	PublicationExists bool
	// SourceLSN is the source's current WAL position.
	SourceLSN pglogrepl.LSN
	// HasCheckpoint is false when the target has no checkpoint for the slot.
	HasCheckpoint bool
	// Checkpoint is the end LSN of the last applied source transaction.
	Checkpoint pglogrepl.LSN
	// CommitTime is the source commit time of that transaction (zero right after init).
	CommitTime time.Time
	// AppliedAt is when the target last wrote the checkpoint.
	AppliedAt time.Time
	// LagBytes is SourceLSN minus Checkpoint (0 when the checkpoint is ahead).
	LagBytes int64
	// Lag is the age of the last applied commit while changes are pending, 0 when caught up.
	Lag time.Duration
	// Pending tells whether source changes wait to be applied; nil when it could not be told.
	Pending *bool
	// SequencesBehind are the sequences whose target value is behind the source's.
	SequencesBehind []string
	// ReadyForCutover tells whether repointing the application now would
	// lose nothing: the replication is healthy, every change is applied and
	// no sequence is behind. NotReadyBecause says why not.
	ReadyForCutover bool
	NotReadyBecause string
	// confirmedAtStart tells that the slot's confirmed position reached the
	// source's WAL position read at the start of the check: every change
	// committed before the check is applied, whatever the walsender had sent.
	confirmedAtStart bool
	Verdict          Verdict
	// Reason says why the verdict is what it is, in one sentence.
	Reason string
	// Warnings are problems that do not change the verdict.
	Warnings []string
	// Held lists what sync changed on the target tables for the migration
	// (disabled triggers, deferrable foreign keys, identity columns), which
	// cleanup restores.
	Held []string
	// Tables are the states of the migration's tables (once a sync has
	// started): streaming, copying or copied (joined after init), dropped.
	Tables []checkpoint.Table
	// NotReplicated are selected tables the migration does not carry yet:
	// created on the source since sync last looked, or an unfinished add.
	NotReplicated []string
}

// MarshalJSON renders LSNs in PostgreSQL's text form and durations in seconds.
func (r Report) MarshalJSON() ([]byte, error) {
	lsn := func(ok bool, l pglogrepl.LSN) *string {
		if !ok {
			return nil
		}
		s := l.String()
		return &s
	}
	ts := func(t time.Time) *time.Time {
		if t.IsZero() {
			return nil
		}
		return &t
	}
	seqs := r.SequencesBehind
	if seqs == nil {
		seqs = []string{}
	}
	held := r.Held
	if held == nil {
		held = []string{}
	}
	type tableState struct {
		Table   string    `json:"table"`
		State   string    `json:"state"`
		CopyLSN *string   `json:"copy_lsn"`
		Since   time.Time `json:"since"`
	}
	tables := []tableState{}
	for _, t := range r.Tables {
		state := string(t.State)
		if t.State == checkpoint.TableCopied && r.HasCheckpoint && r.Checkpoint >= t.CopyLSN {
			state = "streaming"
		}
		tables = append(tables, tableState{t.Schema + "." + t.Name, state, lsn(t.State == checkpoint.TableCopied, t.CopyLSN), t.Since})
	}
	notRepl := r.NotReplicated
	if notRepl == nil {
		notRepl = []string{}
	}
	return json.Marshal(struct {
		Database          string       `json:"database"`
		Slot              string       `json:"slot"`
		SlotExists        bool         `json:"slot_exists"`
		SlotActive        bool         `json:"slot_active"`
		WALStatus         string       `json:"wal_status,omitempty"`
		ConfirmedFlush    *string      `json:"confirmed_flush_lsn"`
		RetainedBytes     int64        `json:"retained_wal_bytes"`
		PublicationExists bool         `json:"publication_exists"`
		SourceLSN         string       `json:"source_lsn"`
		Checkpoint        *string      `json:"checkpoint_lsn"`
		CommitTime        *time.Time   `json:"commit_time"`
		AppliedAt         *time.Time   `json:"applied_at"`
		LagBytes          int64        `json:"lag_bytes"`
		LagSeconds        float64      `json:"lag_seconds"`
		Pending           *bool        `json:"pending_changes"`
		SequencesBehind   []string     `json:"sequences_behind"`
		ReadyForCutover   bool         `json:"ready_for_cutover"`
		NotReadyBecause   string       `json:"not_ready_for_cutover_because,omitempty"`
		Verdict           Verdict      `json:"verdict"`
		Reason            string       `json:"reason"`
		Warnings          []string     `json:"warnings,omitempty"`
		Held              []string     `json:"held_on_target"`
		Tables            []tableState `json:"tables"`
		NotReplicated     []string     `json:"not_replicated_tables"`
	}{
		r.Database, r.Slot, r.SlotExists, r.SlotActive, r.WALStatus,
		lsn(r.SlotExists, r.ConfirmedFlush), r.RetainedBytes, r.PublicationExists,
		r.SourceLSN.String(), lsn(r.HasCheckpoint, r.Checkpoint), ts(r.CommitTime), ts(r.AppliedAt),
		r.LagBytes, r.Lag.Seconds(), r.Pending, seqs, r.ReadyForCutover, r.NotReadyBecause, r.Verdict, r.Reason, r.Warnings, held, tables, notRepl,
	})
}

// Check reads the state of db from its source and target.
func Check(ctx context.Context, db plan.Database, opts Options) (Report, error) {
	opts = opts.withDefaults(db.Name)
	r := Report{Database: db.Name, Slot: opts.Slot}
	src, err := db.Source.Connect(ctx)
	if err != nil {
		return r, err
	}
	defer src.Close(context.Background())
	dst, err := db.Target.Connect(ctx)
	if err != nil {
		return r, err
	}
	defer dst.Close(context.Background())

	if err := src.QueryRow(ctx, `SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() ELSE pg_current_wal_lsn() END)::text`).
		Scan(scanLSN{&r.SourceLSN}); err != nil {
		return r, fmt.Errorf("source WAL position of %s: %w", db.Source, err)
	}
	slot, err := stream.LookupSlot(ctx, src, opts.Slot)
	switch {
	case errors.Is(err, stream.ErrSlotMissing):
	case err != nil:
		return r, err
	default:
		r.SlotExists, r.SlotActive, r.WALStatus = true, slot.Active, slot.WALStatus
		r.ConfirmedFlush, r.RetainedBytes = slot.ConfirmedFlush, slot.RetainedBytes
	}
	if opts.Publication == "" {
		if opts.Publication, _, err = stream.FindPublication(ctx, src, opts.Slot); err != nil {
			return r, fmt.Errorf("source %s: %w", db.Source, err)
		}
	}
	if err := src.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)`, opts.Publication).
		Scan(&r.PublicationExists); err != nil {
		return r, fmt.Errorf("publication %s on %s: %w", opts.Publication, db.Source, err)
	}
	pos, err := checkpoint.Store{Schema: opts.CheckpointSchema}.Load(ctx, dst, opts.Slot)
	switch {
	case errors.Is(err, checkpoint.ErrNotFound):
	case err != nil:
		return r, fmt.Errorf("checkpoint on %s: %w", db.Target, err)
	default:
		r.HasCheckpoint, r.Checkpoint, r.CommitTime, r.AppliedAt = true, pos.EndLSN, pos.CommitTime, pos.AppliedAt
		if r.SourceLSN > r.Checkpoint {
			r.LagBytes = int64(r.SourceLSN - r.Checkpoint)
		}
	}
	var fenced bool
	if err := src.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_db_role_setting s, unnest(s.setconfig) AS c
		WHERE s.setrole = 0 AND s.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
		AND c ILIKE 'default_transaction_read_only=on')`).Scan(&fenced); err != nil {
		return r, fmt.Errorf("database settings on %s: %w", db.Source, err)
	}
	if fenced {
		r.Warnings = append(r.Warnings, fmt.Sprintf("source database %s is read-only for new sessions (a cutover fenced it, or one was interrupted): to make it writable again, ALTER DATABASE %s RESET default_transaction_read_only",
			db.Name, pgx.Identifier{db.Name}.Sanitize()))
	}
	if r.Held, err = apply.Holds(ctx, dst, checkpoint.Store{Schema: opts.CheckpointSchema}); err != nil {
		return r, err
	}
	if r.Tables, r.NotReplicated, err = tableStates(ctx, src, dst, db, opts); err != nil {
		return r, err
	}
	if r.SequencesBehind, err = sequencesBehind(ctx, src, dst, db); err != nil {
		return r, err
	}
	if r.SlotExists && r.HasCheckpoint && r.PublicationExists && r.WALStatus != "lost" {
		r.Pending, err = pending(ctx, src, r, opts)
		if err != nil {
			r.Warnings = append(r.Warnings, fmt.Sprintf("could not tell whether changes are pending, so judged by WAL position alone: %v", err))
		}
	}
	if r.Pending != nil && !*r.Pending {
		if r.confirmedAtStart, err = confirmedReaches(ctx, src, r.Slot, r.SourceLSN, confirmWait); err != nil {
			return r, err
		}
	}
	judge(&r, slot, opts)
	return r, nil
}

// confirmWait bounds how long a check waits for a running sync to confirm
// the source's position: it confirms positions without changes (keepalives)
// about once a second.
const confirmWait = 3 * time.Second

// confirmedReaches waits (up to wait) until slot's confirmed position is at
// least lsn: the client has applied everything committed before it. A slot
// nobody streams does not move, so it is asked once.
func confirmedReaches(ctx context.Context, src *pgx.Conn, slot string, lsn pglogrepl.LSN, wait time.Duration) (bool, error) {
	deadline := time.Now().Add(wait)
	for {
		var confirmed *string
		var active bool
		if err := src.QueryRow(ctx, `SELECT confirmed_flush_lsn::text, active FROM pg_replication_slots WHERE slot_name = $1`, slot).
			Scan(&confirmed, &active); err != nil {
			return false, fmt.Errorf("slot %s: %w", slot, err)
		}
		if confirmed != nil {
			c, err := pglogrepl.ParseLSN(*confirmed)
			if err != nil {
				return false, fmt.Errorf("slot %s: %w", slot, err)
			}
			if c >= lsn {
				return true, nil
			}
		}
		if !active || time.Now().After(deadline) {
			return false, nil
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// judge sets the verdict, reason, lag and warnings from the facts gathered.
func judge(r *Report, slot stream.SlotState, opts Options) {
	now := opts.Now()
	if r.SlotExists && !r.SlotActive && r.RetainedBytes > opts.RetainedWarnBytes {
		r.Warnings = append(r.Warnings, fmt.Sprintf(
			"inactive slot %s retains %s of WAL on the source; start sync, or run `postgres-seren-replicator cleanup` to drop it if the migration is over",
			r.Slot, FormatBytes(r.RetainedBytes)))
	}
	pending := r.LagBytes > 0 // when it could not be told, any WAL past the checkpoint may hold changes
	if r.Pending != nil {
		pending = *r.Pending
	}
	if pending && r.HasCheckpoint {
		since := r.CommitTime
		if since.IsZero() {
			since = r.AppliedAt
		}
		r.Lag = max(now.Sub(since), 0)
	}
	switch {
	case !r.SlotExists:
		r.Verdict, r.Reason = Broken, fmt.Sprintf("replication slot %s does not exist on the source; copy the data again with init --drop-existing", r.Slot)
	case slot.Database != "" && slot.Database != r.Database:
		r.Verdict, r.Reason = Broken, fmt.Sprintf("replication slot %s belongs to database %s, not %s", r.Slot, slot.Database, r.Database)
	case slot.Plugin != "" && slot.Plugin != "pgoutput":
		r.Verdict, r.Reason = Broken, fmt.Sprintf("replication slot %s uses plugin %s, not pgoutput", r.Slot, slot.Plugin)
	case r.WALStatus == "lost":
		r.Verdict, r.Reason = Broken, fmt.Sprintf("replication slot %s lost WAL it needed (max_slot_wal_keep_size?); copy the data again with init --drop-existing", r.Slot)
	case !r.PublicationExists:
		r.Verdict, r.Reason = Broken, fmt.Sprintf("publication %s does not exist on the source; copy the data again with init --drop-existing", opts.Publication)
	case !r.HasCheckpoint:
		r.Verdict, r.Reason = Broken, fmt.Sprintf("no checkpoint for slot %s on the target; run init (with --drop-existing when the target database already has tables)", r.Slot)
	case r.Checkpoint < r.ConfirmedFlush:
		r.Verdict, r.Reason = Broken, fmt.Sprintf("target checkpoint %s is behind the slot's confirmed position %s: the source will not resend the changes between them; copy the data again with init --drop-existing",
			r.Checkpoint, r.ConfirmedFlush)
	case pending && !r.SlotActive:
		r.Verdict, r.Reason = Stalled, fmt.Sprintf("changes are pending but no sync is connected to slot %s", r.Slot)
	case pending && !r.AppliedAt.IsZero() && now.Sub(r.AppliedAt) > opts.StallAfter:
		r.Verdict, r.Reason = Stalled, fmt.Sprintf("changes are pending but nothing was applied for %s", now.Sub(r.AppliedAt).Round(time.Second))
	case pending && r.LagBytes > opts.MaxLagBytes:
		r.Verdict, r.Reason = Lagging, fmt.Sprintf("lag %s is above %s", FormatBytes(r.LagBytes), FormatBytes(opts.MaxLagBytes))
	case pending && r.Lag > opts.MaxLagSeconds:
		r.Verdict, r.Reason = Lagging, fmt.Sprintf("lag %s is above %s", r.Lag.Round(time.Second), opts.MaxLagSeconds)
	case r.SlotActive && pending:
		r.Verdict, r.Reason = Healthy, "streaming"
	case r.SlotActive:
		r.Verdict, r.Reason = Healthy, "streaming, caught up"
	default:
		r.Verdict, r.Reason = Healthy, "caught up; no sync connected"
	}
	switch {
	case r.Verdict != Healthy:
		r.NotReadyBecause = "the replication is " + string(r.Verdict)
	case pending:
		r.NotReadyBecause = "changes are still being applied"
	case r.SlotActive && !r.confirmedAtStart:
		r.NotReadyBecause = fmt.Sprintf("the running sync has not yet confirmed the source's position %s (it may still be reading the stream)", r.SourceLSN)
	case len(r.NotReplicated) > 0:
		r.NotReadyBecause = fmt.Sprintf("%d %s not replicated yet (created on the source after init: a running sync copies %s, then streams %s): %s",
			len(r.NotReplicated), plural(len(r.NotReplicated), "selected table is", "selected tables are"), plural(len(r.NotReplicated), "it", "them"), plural(len(r.NotReplicated), "it", "them"), strings.Join(r.NotReplicated, ", "))
	case len(r.SequencesBehind) > 0:
		r.NotReadyBecause = fmt.Sprintf("%d %s behind on the target (sync copies them every --sequence-interval, after --catch-up and when it stops)",
			len(r.SequencesBehind), plural(len(r.SequencesBehind), "sequence is", "sequences are"))
	}
	r.ReadyForCutover = r.NotReadyBecause == ""
	if r.Verdict == Healthy {
		if r.ReadyForCutover {
			r.Reason += "; ready for cutover"
		} else {
			r.Reason += "; not ready for cutover: " + r.NotReadyBecause
		}
	}
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// pending tells whether source changes newer than the checkpoint wait to
// be applied.
//
// With an active slot, the walsender reports what it sent and what the
// client confirmed: the sync confirms only what it applied, so everything
// sent is applied when the confirmed position reaches the sent one.
//
// With an inactive slot, the slot's pending messages are peeked (read
// without being consumed) and any transaction that ends after the
// checkpoint and changes a published table counts. WAL that only other
// databases or unpublished tables wrote does not.
func pending(ctx context.Context, src *pgx.Conn, r Report, opts Options) (*bool, error) {
	if r.LagBytes == 0 {
		return ptr(false), nil
	}
	if r.SlotActive {
		var sent, flush *string
		err := src.QueryRow(ctx, `SELECT sent_lsn::text, flush_lsn::text FROM pg_stat_replication
			WHERE pid = (SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1)`, r.Slot).Scan(&sent, &flush)
		if errors.Is(err, pgx.ErrNoRows) || err == nil && (sent == nil || flush == nil) {
			return nil, errors.New("the walsender's positions are not visible to this role: grant it pg_read_all_stats")
		}
		if err != nil {
			return nil, fmt.Errorf("walsender of slot %s: %w", r.Slot, err)
		}
		s, err1 := pglogrepl.ParseLSN(*sent)
		f, err2 := pglogrepl.ParseLSN(*flush)
		if err := errors.Join(err1, err2); err != nil {
			return nil, fmt.Errorf("walsender of slot %s: %w", r.Slot, err)
		}
		return ptr(f < s), nil
	}
	tx, err := src.Begin(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(ctx, fmt.Sprintf("SET LOCAL statement_timeout = %d", peekTimeout.Milliseconds())); err != nil {
		return nil, err
	}
	// A commit row carries the transaction's end LSN; change rows start
	// with I, U, D or T. Before PG15 empty transactions are sent too, hence
	// the check for a change in the same transaction.
	var found bool
	err = tx.QueryRow(ctx, `WITH c AS (
			SELECT lsn, xid, get_byte(data, 0) AS k
			FROM pg_logical_slot_peek_binary_changes($1, NULL, $2, 'proto_version', '1', 'publication_names', $3))
		SELECT EXISTS (SELECT 1 FROM c cm WHERE cm.k = 67 AND cm.lsn > $4::text::pg_lsn
			AND EXISTS (SELECT 1 FROM c ch WHERE ch.xid = cm.xid AND ch.k IN (73, 85, 68, 84)))`,
		r.Slot, peekLimit, pgx.Identifier{opts.Publication}.Sanitize(), r.Checkpoint.String()).Scan(&found)
	if err != nil {
		return nil, fmt.Errorf("peek slot %s: %w", r.Slot, err)
	}
	return &found, nil
}

func ptr[T any](v T) *T { return &v }

// scanLSN scans the text form of an LSN.
type scanLSN struct{ lsn *pglogrepl.LSN }

func (s scanLSN) Scan(src any) error {
	str, ok := src.(string)
	if !ok {
		return fmt.Errorf("LSN: got %T, want text", src)
	}
	v, err := pglogrepl.ParseLSN(str)
	*s.lsn = v
	return err
}

// FormatBytes renders n in binary units ("1.5 GiB").
func FormatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// tableStates reads the states of the migration's tables, and the selected
// tables it does not carry yet: outside the publication, or still being
// copied.
func tableStates(ctx context.Context, src, dst *pgx.Conn, db plan.Database, opts Options) ([]checkpoint.Table, []string, error) {
	joined, err := checkpoint.Store{Schema: opts.CheckpointSchema}.LoadTables(ctx, dst, opts.Slot)
	if err != nil {
		return nil, nil, err
	}
	var out []string
	for _, t := range joined {
		if t.State == checkpoint.TableCopying {
			out = append(out, t.Schema+"."+t.Name)
		}
	}
	for _, t := range db.Tables {
		var in bool
		if err := src.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
			WHERE p.pubname = $1 AND pr.prrelid = to_regclass($2))`, opts.Publication, pgx.Identifier{t.Schema, t.Name}.Sanitize()).Scan(&in); err != nil {
			return nil, nil, fmt.Errorf("publication %s: %w", opts.Publication, err)
		}
		if !in && !slices.Contains(out, t.Schema+"."+t.Name) {
			out = append(out, t.Schema+"."+t.Name)
		}
	}
	return joined, out, nil
}
