package apply

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/serenorg/postgres-seren-replicator/internal/ddlcapture"
	"github.com/serenorg/postgres-seren-replicator/internal/sqltext"
	"github.com/serenorg/postgres-seren-replicator/stream"
)

// With --ddl-capture, an event trigger on the source records each DDL
// command into a published table of the tool's schema
// (internal/ddlcapture). Its rows arrive in the stream at their place in
// commit order, and each is a barrier: what came before is written, then
// the statement runs on the target, in the batch's transaction (so it
// commits with the checkpoint that passes it, exactly once), under the
// source session's search_path and value settings, then the rest of the
// batch follows. A statement runs only when every object it touches is in
// the migration (a table it carries, or an index, constraint, trigger,
// column or type of one; or an object of no table, such as a function or a
// type no table uses yet); otherwise it is skipped, with a log line. What
// the target cannot be given safely this way is left, with a log line, to
// the Relation messages (relation.go), as without the capture: a query
// string of several statements, DDL run by a DO block or a function, a
// column whose existing rows would read other values on the target (a
// volatile or time-dependent default), a type change whose USING
// expression is not immutable, a statement the target refuses.

// captureSavepoint guards a captured statement inside the batch.
const captureSavepoint = "seren_replicator_capture"

// captureSettings are the session settings a captured statement runs
// under on the target, as they were in the source session that ran it:
// name resolution, literals and the conversions of a type change.
var captureSettings = []string{"search_path", "TimeZone", "DateStyle", "IntervalStyle", "extra_float_digits", "bytea_output", "standard_conforming_strings"}

// capturedStatement is what became of the last statement captured, for
// the further commands of the same statement.
type capturedStatement struct {
	id      int64
	applied bool
}

// captureMessage sets aside what belongs to the capture table: an insert is
// a captured command, applied here; its other changes (pruning) carry
// nothing. It returns the message to apply as a row change, nil when there
// is none.
func (a *Applier) captureMessage(ctx context.Context, msg stream.Message) (stream.Message, error) {
	if len(a.ddlRels) == 0 {
		return msg, nil
	}
	switch m := msg.(type) {
	case *stream.Insert:
		if rel, ok := a.ddlRels[m.RelationID]; ok {
			return nil, a.captured(ctx, rel, m)
		}
	case *stream.Update:
		if _, ok := a.ddlRels[m.RelationID]; ok {
			return nil, nil
		}
	case *stream.Delete:
		if _, ok := a.ddlRels[m.RelationID]; ok {
			return nil, nil
		}
	case *stream.Truncate:
		var keep []uint32
		for _, id := range m.RelationIDs {
			if _, ok := a.ddlRels[id]; !ok {
				keep = append(keep, id)
			}
		}
		switch {
		case len(keep) == 0:
			return nil, nil
		case len(keep) < len(m.RelationIDs):
			t := *m
			t.RelationIDs = keep
			return &t, nil
		}
	}
	return msg, nil
}

// captured reads one captured command from the insert and applies it.
func (a *Applier) captured(ctx context.Context, rel *stream.Relation, m *stream.Insert) error {
	values := map[string][]byte{}
	for i, c := range rel.Columns {
		if i < len(m.New) && m.New[i].Kind == stream.ValueText {
			values[c.Name] = m.New[i].Data
		}
	}
	rec, err := ddlcapture.ParseRecord(values)
	if err != nil {
		a.log.Warn("a captured DDL command could not be read: left to the Relation messages", "error", err)
		return nil
	}
	return a.applyCaptured(ctx, rec)
}

// captureLog is the logger for one captured command.
func (a *Applier) captureLog(rec ddlcapture.Record) *slog.Logger {
	return a.log.With("ddl_id", rec.ID, "command", rec.Tag)
}

// shortStatement renders a statement for a log line: one line, at most
// 300 characters.
func shortStatement(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 300 {
		cut := 300
		for cut > 0 && s[cut]&0xC0 == 0x80 {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}

// applyCaptured decides what to do with one captured command and does it.
func (a *Applier) applyCaptured(ctx context.Context, rec ddlcapture.Record) error {
	log := a.captureLog(rec)
	fallback := "left to the Relation messages (followed as without --ddl-capture, when the table is next written)"
	if rec.Nth > 1 {
		done := "skipped"
		if a.lastCaptured.id != 0 && a.lastCaptured.applied {
			done = "applied"
		}
		log.Info("captured DDL command of the same statement as an earlier one: handled with it", "statement_of", a.lastCaptured.id, "that_statement", done)
		return nil
	}
	a.lastCaptured = capturedStatement{id: rec.ID}
	for _, t := range rec.Tables {
		if a.capturedShapes == nil {
			a.capturedShapes = map[uint32]ddlcapture.TableColumns{}
		}
		a.capturedShapes[t.OID.OID()] = t
	}
	stmt := shortStatement(rec.Statement)
	if rec.Error != "" {
		log.Warn("DDL command not captured whole on the source: "+fallback, "statement", stmt, "capture_error", rec.Error)
		return nil
	}
	if a.cfg.SchemaChanges == SchemaChangesStop {
		log.Info("captured DDL statement not applied (--schema-changes=stop)", "statement", stmt)
		return nil
	}
	if len(rec.Objects) == 0 {
		// DROP … IF EXISTS, ALTER TABLE IF EXISTS, CREATE … IF NOT EXISTS
		// that found nothing to do: on the target the same text could drop
		// or change what the source does not have (the kept copy of a
		// table the source dropped, a table of the target's own).
		log.Info("captured DDL statement skipped: it touched nothing on the source", "statement", stmt)
		return nil
	}
	sel, err := a.captureSelection(ctx, rec)
	if err != nil {
		return err
	}
	switch {
	case sel.unknown:
		log.Info("captured DDL statement skipped: the source does not say which objects it touches (GRANT, REVOKE, ALTER DEFAULT PRIVILEGES)", "statement", stmt)
		return nil
	case sel.inCopy != "":
		log.Info("captured DDL statement skipped: the copy of table "+sel.inCopy+" already holds it", "statement", stmt)
		return nil
	case len(sel.outside) > 0:
		log.Info("captured DDL statement skipped: it touches objects outside the migration (a new table joins by itself when the selection covers it)",
			"outside", strings.Join(sel.outside, ", "), "statement", stmt)
		return nil
	case len(sel.dropsTable) > 0:
		log.Info("captured DDL statement not applied: it drops a table of the migration, whose copy on the target is kept (as without --ddl-capture)",
			"tables", strings.Join(sel.dropsTable, ", "), "statement", stmt)
		return nil
	}
	sts, err := ddlcapture.Split(rec.Statement, rec.Settings["standard_conforming_strings"] != "off")
	switch {
	case err != nil || len(sts) == 0:
		log.Warn("captured DDL statement could not be read: "+fallback, "statement", stmt, "error", err)
		return nil
	case len(sts) > 1:
		log.Warn(fmt.Sprintf("captured DDL command came in a query string of %d statements, which cannot be told apart safely: %s", len(sts), fallback), "statement", stmt)
		return nil
	case !sts[0].MatchesTag(rec.Tag):
		log.Warn("captured DDL command ran inside another statement (a DO block, a function, a procedure): "+fallback, "statement", stmt)
		return nil
	}
	st := sts[0]
	text := st.Text
	if st.Has("CONCURRENTLY") {
		switch rec.Tag {
		case "DROP INDEX":
			text = st.Without("CONCURRENTLY") // the same drop, in the batch
		case "CREATE INDEX":
			log.Info("captured CREATE INDEX CONCURRENTLY left to the index comparison, which builds it CONCURRENTLY on the target once the stream has passed it", "statement", stmt)
			return nil
		default:
			log.Info("captured DDL statement cannot run in a transaction (CONCURRENTLY): "+fallback, "statement", stmt)
			return nil
		}
	}
	if rec.Tag == "ALTER TABLE" {
		if calls := st.TypeChangeCalls(); len(calls) > 0 {
			unsafe, err := a.notImmutable(ctx, calls)
			if err != nil {
				return err
			}
			if unsafe != "" {
				log.Info("captured type change calls functions that are not immutable in its USING expression ("+unsafe+"), whose values the target would not reproduce: "+fallback,
					"statement", stmt)
				return nil
			}
		}
	}
	// A barrier: what came before is written first.
	if err := a.emitMerged(ctx); err != nil {
		return err
	}
	if err := a.flush(ctx); err != nil {
		return err
	}
	oids := make([]uint32, len(rec.Tables))
	for i, t := range rec.Tables {
		oids[i] = t.OID.OID()
	}
	released, err := a.releaseRowSecurity(ctx, oids)
	if err != nil {
		return err
	}
	refused, err := a.runCaptured(ctx, rec, text, sel)
	if err != nil {
		return err
	}
	if refused != nil {
		if err := a.reholdRefused(ctx, released); err != nil {
			return err
		}
		if alreadyDone(refused.err) {
			log.Info("captured DDL statement not applied: the target has its effect already ("+refused.why+"); "+fallback, "statement", stmt)
		} else {
			log.Warn("captured DDL statement not applied: "+refused.why+"; "+fallback, "statement", stmt)
		}
		return nil
	}
	a.lastCaptured.applied = true
	if err := a.afterCaptured(ctx, rec); err != nil {
		return err
	}
	// The batch ends with this source transaction: a label ALTER TYPE …
	// ADD VALUE adds may not be used in the transaction that added it, and
	// later source transactions use it; and a table copied again for a
	// change met later (which rolls back the batch that met it) is built
	// on the target with what the statements before it made there.
	a.commitAfterTxn = true
	log.Info("applied a captured DDL statement", "statement", stmt)
	return nil
}

// refusal is a captured statement the target did not take.
type refusal struct {
	why string
	err error
}

// runCaptured runs a captured statement in the batch, under a savepoint:
// the source session's settings and, for an object of no table it
// creates, its owner's role where the target has it; then it checks that
// the columns the statement added read, in the rows that existed, what
// they read on the source. A statement the target refuses, or whose
// columns would differ, is rolled back to the savepoint and reported as a
// refusal; other errors (the connection) fail the batch.
func (a *Applier) runCaptured(ctx context.Context, rec ddlcapture.Record, text string, sel captureScope) (*refusal, error) {
	refused, asOwner, err := a.tryCaptured(ctx, rec, text, sel.owner)
	if err == nil && refused != nil && asOwner && !alreadyDone(refused.err) {
		// The owner's role may lack a privilege the statement needs on the
		// target (CREATE on the database or a schema): as the target role.
		a.log.Debug("captured statement refused as its owner's role; trying as the target role", "ddl_id", rec.ID, "owner", sel.owner, "why", refused.why)
		refused, _, err = a.tryCaptured(ctx, rec, text, "")
	}
	return refused, err
}

// tryCaptured is one attempt of runCaptured, as owner's role when the
// target role may act as it (asOwner says it did).
func (a *Applier) tryCaptured(ctx context.Context, rec ddlcapture.Record, text, owner string) (out *refusal, asOwner bool, err error) {
	err = a.inBatch(ctx, func() error {
		if _, err := a.query(ctx, "SAVEPOINT "+captureSavepoint); err != nil {
			return err
		}
		restore, role, refused, err := a.enterCapture(ctx, rec, owner)
		asOwner = role
		if err == nil && refused == nil {
			refused, err = a.execCaptured(ctx, rec, text)
		}
		if err == nil && refused == nil {
			err = restore()
		}
		if err != nil && !errors.Is(err, ErrPermanent) {
			return err
		}
		if err != nil {
			refused = &refusal{why: "the target refused it: " + err.Error(), err: err}
		}
		if refused != nil {
			out = refused
			if _, err := a.query(ctx, "ROLLBACK TO SAVEPOINT "+captureSavepoint); err != nil {
				return err
			}
		}
		_, err = a.query(ctx, "RELEASE SAVEPOINT "+captureSavepoint)
		return err
	})
	return out, asOwner, err
}

// enterCapture sets the source session's settings and role for a captured
// statement; restore sets the applier's back. A setting the target does
// not take (a time zone it lacks) is a refusal.
func (a *Applier) enterCapture(ctx context.Context, rec ddlcapture.Record, owner string) (restore func() error, asOwner bool, refused *refusal, err error) {
	names := append([]string{"role", "check_function_bodies"}, captureSettings...)
	sel2 := make([]string, len(names))
	for i, n := range names {
		sel2[i] = "current_setting(" + sqltext.Literal(n) + ")"
	}
	rows, err := a.query(ctx, "SELECT "+strings.Join(sel2, ", "))
	if err != nil {
		return nil, false, nil, err
	}
	saved := map[string]string{}
	for i, n := range names {
		saved[n] = string(rows[0][i])
	}
	restore = func() error {
		for _, n := range names {
			if _, err := a.query(ctx, `SELECT set_config($1, $2, true)`, n, saved[n]); err != nil {
				return err
			}
		}
		return nil
	}
	set := func(name, value string) error {
		_, err := a.query(ctx, `SELECT set_config($1, $2, true)`, name, value)
		return err
	}
	// Function bodies are checked when they run, as pg_restore does.
	if err := set("check_function_bodies", "off"); err != nil {
		return nil, false, nil, err
	}
	for _, n := range captureSettings {
		v, ok := rec.Settings[n]
		if !ok {
			continue
		}
		if n == "search_path" {
			who := rec.Role
			if r := rec.Settings["role"]; r != "" && r != "none" {
				who = r // SET ROLE on the source
			}
			v = expandUserSchema(v, who)
		}
		if err := set(n, v); err != nil {
			if errors.Is(err, ErrPermanent) {
				return nil, false, &refusal{why: fmt.Sprintf("the target does not take the source session's %s = %s: %v", n, v, err), err: err}, nil
			}
			return nil, false, nil, err
		}
	}
	if owner != "" {
		// What a CREATE makes belongs on the target, as on the source, to
		// its owner there, when the target role may act as it (else to the
		// target role, as init's schema when it cannot restore owners).
		rows, err := a.query(ctx, `SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1) AND $1 <> current_user
			THEN pg_has_role($1, 'MEMBER') ELSE false END`, owner)
		if err != nil {
			return nil, false, nil, err
		}
		if string(rows[0][0]) == "t" {
			if err := set("role", owner); err != nil {
				return nil, false, nil, err
			}
			asOwner = true
		}
	}
	return restore, asOwner, nil, nil
}

// execCaptured runs the statement, holds the carried tables it altered
// that are forced now (under the names it left them: rowsecurity.go), and
// checks the columns it added.
func (a *Applier) execCaptured(ctx context.Context, rec ddlcapture.Record, text string) (*refusal, error) {
	before := map[string]string{} // highest attribute number, by table
	for _, t := range rec.Tables {
		q := pgx.Identifier{t.Schema, t.Name}.Sanitize()
		rows, err := a.query(ctx, `SELECT coalesce(max(attnum), 0) FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0`, q)
		if err != nil {
			return nil, err
		}
		before[q] = string(rows[0][0])
	}
	run := func(ddl []string) error {
		for _, stmt := range ddl {
			if _, err := a.query(ctx, stmt); err != nil {
				return err
			}
		}
		return nil
	}
	var err error
	if a.replicaMode {
		err = run([]string{text})
	} else {
		err = a.runDDLOrdered(ctx, []string{text}, run)
	}
	if err != nil {
		return nil, err
	}
	for _, t := range rec.Tables {
		if _, carried := a.byOID[t.OID.OID()]; carried {
			if err := a.holdRowSecurity(ctx, pgx.Identifier{t.Schema, t.Name}.Sanitize()); err != nil {
				return nil, err
			}
		}
	}
	for _, t := range rec.Tables {
		q := pgx.Identifier{t.Schema, t.Name}.Sanitize()
		if before[q] == "0" {
			continue // not there before (renamed by the statement)
		}
		why, err := a.newColumnsDiffer(ctx, q, before[q], t.Missing)
		if err != nil {
			return nil, err
		}
		if why != "" {
			return &refusal{why: "table " + q + ": " + why}, nil
		}
	}
	return nil, nil
}

// newColumnsDiffer checks the columns of a table (on the target) with an
// attribute number above after: the rows that existed must read in each
// what they read on the source (the value its default gave them, kept as
// attmissingval there), and no row may have taken its own value from a
// sequence or a volatile function. It returns what differs.
func (a *Applier) newColumnsDiffer(ctx context.Context, qualified, after string, missing map[string]string) (string, error) {
	rows, err := a.query(ctx, `SELECT a.attname, a.atthasmissing, coalesce(a.attmissingval::text, ''), a.attidentity <> '',
			a.attgenerated <> '', coalesce(d.adbin::text, '')
		FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
		WHERE a.attrelid = to_regclass($1) AND a.attnum > $2::int AND NOT a.attisdropped ORDER BY a.attnum`, qualified, after)
	if err != nil {
		return "", err
	}
	var empty *bool
	for _, row := range rows {
		col, has, val, identity, generated, tree := string(row[0]), string(row[1]) == "t", string(row[2]), string(row[3]) == "t", string(row[4]) == "t", string(row[5])
		if generated {
			continue // computed from the row, on both sides alike
		}
		want, wantHas := missing[col]
		if has != wantHas || has && val != want {
			src, dst := "a value per row", "a value per row"
			if wantHas {
				src = want
			}
			if has {
				dst = val
			}
			return fmt.Sprintf("column %s: the rows that existed would read %s on the target, %s on the source", col, dst, src), nil
		}
		volatile := identity
		if !volatile && tree != "" {
			var oids []string
			for _, m := range funcRef.FindAllStringSubmatch(tree, -1) {
				oids = append(oids, m[1])
			}
			if len(oids) > 0 {
				r, err := a.query(ctx, `SELECT coalesce(bool_or(provolatile = 'v'), false) FROM pg_proc WHERE oid = ANY ($1::oid[])`, "{"+strings.Join(oids, ",")+"}")
				if err != nil {
					return "", err
				}
				volatile = string(r[0][0]) == "t"
			}
		}
		if volatile && !has {
			if empty == nil {
				e, err := a.targetEmpty(ctx, qualified)
				if err != nil {
					return "", err
				}
				empty = &e
			}
			if !*empty {
				return fmt.Sprintf("column %s: its rows took values from a sequence or a volatile function, which the target would not reproduce", col), nil
			}
		}
	}
	return "", nil
}

// afterCaptured brings the applier's records in line with what a captured
// statement changed: the source's attribute numbers of the tables it
// altered (so the next Relation message finds the columns as the record
// says, and nothing to do), a table it renamed (states and holds), and the
// type names it reads again.
func (a *Applier) afterCaptured(ctx context.Context, rec ddlcapture.Record) error {
	for _, t := range rec.Tables {
		id := t.OID.OID()
		if _, tracked := a.srcCols[id]; !tracked {
			if _, carried := a.byOID[id]; !carried {
				continue
			}
		}
		cols := make([]string, len(t.Columns))
		nums := make([]int16, len(t.Columns))
		for i, c := range t.Columns {
			cols[i], nums[i] = c.Name, c.Num
		}
		if err := a.recordColumns(ctx, id, cols, nums); err != nil {
			return err
		}
		if st, ok := a.byOID[id]; ok && (st.Schema != t.Schema || st.Name != t.Name) {
			if err := a.followRename(ctx, st, &stream.Relation{ID: id, Namespace: t.Schema, Name: t.Name}); err != nil {
				return err
			}
		}
	}
	for _, o := range rec.Objects {
		if o.Class == "pg_type" || o.Dropped && (o.Type == "type" || o.Type == "domain") {
			a.refreshTypeNames(ctx)
			break
		}
	}
	return nil
}

// refreshTypeNames reads the source's type names again (a type was
// renamed or moved), for the statements prepared from now on.
func (a *Applier) refreshTypeNames(ctx context.Context) {
	a.typeNames = map[[2]int64]string{}
	for _, r := range a.rels {
		for i, c := range r.msg.Columns {
			if i >= len(r.types) {
				break
			}
			if name, err := a.typeName(ctx, c.TypeOID, c.TypeMod); err == nil {
				r.types[i] = name
			}
		}
	}
}

// alreadyDone reports a refusal that means the target has the statement's
// effect already: what it creates exists, what it drops is gone.
func alreadyDone(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	return slices.Contains([]string{"42710", "42P07", "42701", "42P06", "42723", "42704", "42P01", "42703", "42883"}, pgErr.Code)
}

// captureRelation records the capture table's Relation message.
func (a *Applier) captureRelation(m *stream.Relation) bool {
	if !ddlcapture.IsCaptureTable(m.Namespace, m.Name) {
		return false
	}
	if a.ddlRels == nil {
		a.ddlRels = map[uint32]*stream.Relation{}
	}
	if _, seen := a.ddlRels[m.ID]; !seen {
		a.log.Info("the source captures DDL (--ddl-capture): its statements are applied in commit order", "table", ddlcapture.QualifiedTable)
	}
	a.ddlRels[m.ID] = m
	return true
}

// IsMissingEnumLabel reports an error of a value of an enum label the
// target does not have yet (one the source added).
func IsMissingEnumLabel(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "22P02" && strings.HasPrefix(pgErr.Message, "invalid input value for enum")
}

// deferToCapture builds the relation of a Relation message without
// comparing it with the source's catalog, when captured statements still
// ahead in the stream touch the table: the catalog is then ahead of the
// message (a type renamed since, a column dropped and added again since),
// and what it shows would be taken for changes the captured statements
// make later in their place. It does so only while the message's columns
// are the target table's, which the captured statements before it kept
// them: a difference is a change the capture left to the Relation
// messages, which compare as always (with the columns the capture
// recorded, capturedAlignment, and type changes left to what is ahead,
// typeChangeAhead).
func (a *Applier) deferToCapture(ctx context.Context, msg *stream.Relation, qualified string, target map[string]targetColumn) (*relation, bool, error) {
	if !a.cfg.DDLCapture || a.cfg.SchemaChanges == SchemaChangesStop {
		return nil, false, nil
	}
	plain := 0
	for _, tc := range target {
		if !tc.generated {
			plain++
		}
	}
	if plain != len(msg.Columns) {
		return nil, false, nil
	}
	for _, c := range msg.Columns {
		if tc, ok := target[c.Name]; !ok || tc.generated {
			return nil, false, nil
		}
	}
	if ahead, err := a.captureAhead(ctx, msg); err != nil || !ahead {
		return nil, false, err
	}
	r := newRelation(msg)
	for _, c := range msg.Columns {
		r.types = append(r.types, target[c.Name].typ) // the target's column, which the values go into
	}
	a.log.Debug("captured DDL still ahead in the stream changes the table: its Relation message is not compared with the source's catalog", "table", r.name)
	r, err := a.finishRelation(ctx, r, qualified)
	return r, err == nil, err
}

// captureAhead reports whether captured statements after the Relation
// message being compared touch its table (or a type it uses): those
// recorded at a WAL position after the last message of the transaction
// being read (a Relation message carries no position of its own).
func (a *Applier) captureAhead(ctx context.Context, msg *stream.Relation) (bool, error) {
	if !a.cfg.DDLCapture {
		return false, nil
	}
	src, err := a.sourceConn(ctx)
	if err != nil {
		return false, err
	}
	id := strconv.FormatUint(uint64(msg.ID), 10)
	var ahead bool
	err = src.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM `+ddlcapture.QualifiedTable+` l, jsonb_array_elements(l.objects) o
		WHERE l.lsn > $1::pg_lsn AND (o->>'root' IN ($2::text, coalesce(pg_partition_root($2::text::oid)::oid::text, $2::text)) OR o->'uses' ? $2::text
			OR o->>'dropped' = 'true' AND o->'names'->>0 = $3::text AND o->'names'->>1 = $4::text))`,
		a.streamPos.String(), id, msg.Namespace, msg.Name).Scan(&ahead)
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) {
			// Not readable by this role: the message is compared with the
			// catalog, as without the capture.
			a.log.Debug("cannot read the captured DDL still ahead in the stream", "error", err)
			return false, nil
		}
		return false, fmt.Errorf("read the captured DDL on the source: %w", err)
	}
	return ahead, nil
}

// capturedAlignment is the source's columns to align a Relation message
// with: those the capture recorded with the table's last ALTER TABLE
// before the message, when they are the message's columns (the source's
// catalog now may be past later changes), else the catalog's.
func (a *Applier) capturedAlignment(msg *stream.Relation, shape sourceShape) sourceShape {
	cs, ok := a.capturedShapes[msg.ID]
	if !ok || len(cs.Columns) != len(msg.Columns) {
		return shape
	}
	for i, c := range cs.Columns {
		if c.Name != msg.Columns[i].Name {
			return shape
		}
	}
	out := sourceShape{matches: true, found: true, at: shape.at}
	for _, c := range cs.Columns {
		out.attrs = append(out.attrs, sourceAttr{num: c.Num, name: c.Name})
	}
	return out
}

// capturedMissing is the value the rows older than a column read, as the
// capture recorded it with the table's last ALTER TABLE.
func (a *Applier) capturedMissing(relID uint32, column string) (string, bool) {
	cs, ok := a.capturedShapes[relID]
	if !ok {
		return "", false
	}
	m, ok := cs.Missing[column]
	return m, ok
}
