package preflight

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/serenorg/postgres-seren-replicator/internal/conninfo"
	"github.com/serenorg/postgres-seren-replicator/internal/plan"
	"github.com/serenorg/postgres-seren-replicator/internal/selection"
	"github.com/serenorg/postgres-seren-replicator/stream"
)

// sourceServer runs the server-wide source checks over one session.
type sourceServer struct {
	conn *pgx.Conn
	info server
	plan plan.Plan
	// slotFor names each database's slot.
	slotFor func(db string) string
	// freeSenders is set by capacity; replicationRole skips its test
	// connection when no WAL sender is free.
	freeSenders int
}

func (s *sourceServer) walLevel(ctx context.Context) ([]Check, error) {
	var level string
	if err := s.conn.QueryRow(ctx, `SELECT current_setting('wal_level')`).Scan(&level); err != nil {
		return nil, fmt.Errorf("read wal_level: %w", err)
	}
	if level == "logical" {
		return []Check{{Name: "wal_level", Status: Pass, Detail: "wal_level is logical"}}, nil
	}
	return []Check{{Name: "wal_level", Status: Fail,
		Detail: fmt.Sprintf("source wal_level is %s; logical decoding needs logical", level),
		Fix:    "ALTER SYSTEM SET wal_level = logical; then restart the source server (Amazon RDS/Aurora: set rds.logical_replication = 1 in the parameter group and reboot)",
	}}, nil
}

// ownSlots are the names of the slots this run uses on the source.
func (s *sourceServer) ownSlots() []string {
	names := make([]string, len(s.plan.Databases))
	for i, d := range s.plan.Databases {
		names[i] = s.slotFor(d.Name)
	}
	return names
}

// capacity checks that the source has a free replication slot and WAL sender
// for every database that needs one. Slots this tool already created (a
// previous init) count as available.
func (s *sourceServer) capacity(ctx context.Context) ([]Check, error) {
	var maxSlots, usedSlots, ownSlots, maxSenders, activeSenders, ownActive int
	err := s.conn.QueryRow(ctx, `SELECT current_setting('max_replication_slots')::int,
		(SELECT count(*) FROM pg_replication_slots)::int,
		(SELECT count(*) FROM pg_replication_slots WHERE slot_name = ANY($1))::int,
		current_setting('max_wal_senders')::int,
		(SELECT count(*) FROM pg_stat_replication)::int,
		(SELECT count(*) FROM pg_replication_slots WHERE slot_name = ANY($1) AND active)::int`, s.ownSlots()).
		Scan(&maxSlots, &usedSlots, &ownSlots, &maxSenders, &activeSenders, &ownActive)
	if err != nil {
		return nil, fmt.Errorf("read replication capacity: %w", err)
	}
	need := len(s.plan.Databases)
	slots := Check{Name: "replication slots", Status: Pass}
	needSlots := need - ownSlots
	if free := maxSlots - usedSlots; free < needSlots {
		slots.Status = Fail
		slots.Detail = fmt.Sprintf("%d of max_replication_slots = %d in use, %d free; this run needs %d more", usedSlots, maxSlots, free, needSlots)
		slots.Fix = fmt.Sprintf("ALTER SYSTEM SET max_replication_slots = %d; then restart the source server (or drop unused slots with SELECT pg_drop_replication_slot('name'))", usedSlots+needSlots)
	} else {
		slots.Detail = fmt.Sprintf("%d of max_replication_slots = %d in use; this run needs %d (%d already exist)", usedSlots, maxSlots, need, ownSlots)
	}
	senders := Check{Name: "wal senders", Status: Pass}
	needSenders := need - ownActive
	s.freeSenders = maxSenders - activeSenders
	if s.freeSenders < needSenders {
		senders.Status = Fail
		senders.Detail = fmt.Sprintf("%d of max_wal_senders = %d active, %d free; this run needs %d", activeSenders, maxSenders, s.freeSenders, needSenders)
		senders.Fix = fmt.Sprintf("ALTER SYSTEM SET max_wal_senders = %d; then restart the source server", activeSenders+needSenders)
	} else {
		senders.Detail = fmt.Sprintf("%d of max_wal_senders = %d active; this run needs %d", activeSenders, maxSenders, needSenders)
	}
	return []Check{slots, senders}, nil
}

// replicationRole checks that the source role may stream: REPLICATION (or
// membership in Amazon's rds_replication), then that a replication
// connection is actually accepted (pg_hba.conf has its own rules for it).
func (s *sourceServer) replicationRole(ctx context.Context, src *conninfo.Conn) ([]Check, error) {
	c := Check{Name: "source replication role", Status: Pass}
	var rds bool
	if err := s.conn.QueryRow(ctx, `SELECT COALESCE((SELECT pg_has_role(oid, 'MEMBER') FROM pg_roles WHERE rolname = 'rds_replication'), false)`).Scan(&rds); err != nil {
		return nil, fmt.Errorf("read role membership: %w", err)
	}
	role := ident(s.info.user)
	switch {
	case s.info.super:
		c.Detail = s.info.user + " is a superuser"
	case s.info.replication:
		c.Detail = s.info.user + " has REPLICATION"
	case rds:
		c.Detail = s.info.user + " is a member of rds_replication"
	default:
		c.Status = Fail
		c.Detail = s.info.user + " has neither REPLICATION nor membership in rds_replication"
		c.Fix = fmt.Sprintf("ALTER ROLE %s REPLICATION; (Amazon RDS/Aurora: GRANT rds_replication TO %s;)", role, role)
		return []Check{c}, nil
	}
	if s.freeSenders <= 0 {
		return []Check{c}, nil // the wal senders check already fails; a test connection would too
	}
	repl, err := src.ConnectReplication(ctx)
	if err == nil {
		_, err = pglogrepl.IdentifySystem(ctx, repl)
		repl.Close(context.WithoutCancel(ctx))
	}
	if err != nil {
		msg := strings.TrimPrefix(conninfo.Redact(err.Error()), conninfo.ErrConfig.Error()+": ")
		c.Status = Fail
		c.Detail += ", but the server refuses a replication connection: " + msg
		c.Fix = fmt.Sprintf("allow it in pg_hba.conf (host replication %s <client address> scram-sha-256), then SELECT pg_reload_conf();", s.info.user)
		if strings.Contains(msg, "replication role") {
			c.Fix = fmt.Sprintf("ALTER ROLE %s REPLICATION;", role)
		}
		return []Check{c}, nil
	}
	c.Detail += "; replication connection accepted"
	return []Check{c}, nil
}

// retainedWAL warns about inactive slots that hold more than limit bytes of
// WAL on the source: left behind by an earlier run or another tool, they
// fill the source's disk.
func (s *sourceServer) retainedWAL(ctx context.Context, limit int64) ([]Check, error) {
	rows, err := s.conn.Query(ctx, `SELECT slot_name, pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint
		FROM pg_replication_slots
		WHERE NOT active AND restart_lsn IS NOT NULL AND pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn) > $1
		ORDER BY 2 DESC, 1`, limit)
	if err != nil {
		return nil, fmt.Errorf("read inactive slots: %w", err)
	}
	var found, drops []string
	for rows.Next() {
		var name string
		var bytes int64
		if err := rows.Scan(&name, &bytes); err != nil {
			return nil, fmt.Errorf("read inactive slots: %w", err)
		}
		found = append(found, fmt.Sprintf("%s (%s)", name, humanBytes(bytes)))
		drops = append(drops, fmt.Sprintf("SELECT pg_drop_replication_slot(%s);", literal(name)))
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read inactive slots: %w", err)
	}
	c := Check{Name: "inactive slots", Status: Pass, Detail: "no inactive slot retains more than " + humanBytes(limit) + " of WAL"}
	if len(found) > 0 {
		c.Status = Warn
		c.Detail = fmt.Sprintf("inactive slots retain WAL on the source, which grows until its disk is full: %s", strings.Join(found, ", "))
		c.Fix = strings.Join(drops, " ") + " (only for slots nothing uses any more; `postgres-seren-replicator cleanup` removes this tool's own seren_* slots)"
	}
	return []Check{c}, nil
}

// preparedTransactions warns about prepared transactions pending on the
// source when init still has a slot to create: creating a logical slot waits
// until every transaction running on the server has ended, prepared ones
// included, so a forgotten one makes init wait for ever.
func (s *sourceServer) preparedTransactions(ctx context.Context) ([]Check, error) {
	c := Check{Name: "prepared transactions", Status: Pass}
	var newSlots int
	if err := s.conn.QueryRow(ctx, `SELECT count(*) FROM unnest($1::text[]) AS s(name)
		WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots r WHERE r.slot_name = s.name)`, s.ownSlots()).Scan(&newSlots); err != nil {
		return nil, fmt.Errorf("read replication slots: %w", err)
	}
	rows, err := s.conn.Query(ctx, `SELECT gid, database, owner, to_char(prepared AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') FROM pg_prepared_xacts ORDER BY prepared, gid`)
	if err != nil {
		return nil, fmt.Errorf("read prepared transactions: %w", err)
	}
	var found, fixes []string
	for rows.Next() {
		var gid, db, owner, at string
		if err := rows.Scan(&gid, &db, &owner, &at); err != nil {
			return nil, fmt.Errorf("read prepared transactions: %w", err)
		}
		found = append(found, fmt.Sprintf("%s (database %s, owner %s, prepared %s UTC)", literal(gid), db, owner, at))
		fixes = append(fixes, fmt.Sprintf("COMMIT PREPARED %s; or ROLLBACK PREPARED %s; in database %s", literal(gid), literal(gid), db))
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read prepared transactions: %w", err)
	}
	switch {
	case len(found) == 0:
		c.Detail = "no prepared transaction pending on the source"
	case newSlots == 0:
		c.Detail = fmt.Sprintf("%d prepared transactions pending on the source; the replication slots exist already, so they do not hold init up", len(found))
	default:
		c.Status = Warn
		c.Detail = fmt.Sprintf("pending on the source: %s. init creates a replication slot, which waits until every transaction running on the server has ended, prepared ones included", strings.Join(found, ", "))
		c.Fix = strings.Join(fixes, "; ") + " (as its owner or a superuser, once whoever prepared it is done with it)"
	}
	return []Check{c}, nil
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	default:
		return fmt.Sprintf("%d bytes", n)
	}
}

// sourceTable is what the source checks learn about one selected table.
type sourceTable struct {
	table      selection.Table
	exists     bool
	canSelect  bool
	owned      bool
	replIdent  string
	hasPK      bool
	hasReplIdx bool
}

// selectedTablesSQL joins the selected schema/name pairs to the catalog.
const selectedTablesSQL = `SELECT t.schema, t.name, c.oid IS NOT NULL,
	COALESCE(has_table_privilege(c.oid, 'SELECT'), false),
	COALESCE(pg_has_role(c.relowner, 'USAGE'), false)
	FROM unnest($1::text[], $2::text[]) AS t(schema, name)
	LEFT JOIN pg_namespace n ON n.nspname = t.schema
	LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.name AND c.relkind IN ('r', 'p')
	ORDER BY 1, 2`

// replicaIdentitySQL lists the tables whose changes are decoded (the leaf
// partitions of a partitioned table) with their replica identity. It walks
// pg_inherits rather than calling pg_partition_tree, which PostgreSQL 10 and
// 11 lack.
const replicaIdentitySQL = `WITH RECURSIVE sel AS (
	SELECT c.oid, c.relkind FROM unnest($1::text[], $2::text[]) AS t(schema, name)
	JOIN pg_namespace n ON n.nspname = t.schema
	JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.name AND c.relkind IN ('r', 'p')),
tree(oid, relkind) AS (
	SELECT oid, relkind FROM sel
	UNION SELECT c.oid, c.relkind FROM tree
	JOIN pg_inherits i ON i.inhparent = tree.oid JOIN pg_class c ON c.oid = i.inhrelid
	WHERE tree.relkind = 'p')
SELECT n.nspname, c.relname, c.relreplident::text,
	EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary),
	EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident),
	c.relpersistence = 'u'
	FROM tree JOIN pg_class c ON c.oid = tree.oid JOIN pg_namespace n ON n.oid = c.relnamespace
	WHERE c.relkind = 'r'
	ORDER BY 1, 2`

func tableArrays(tables []selection.Table) (schemas, names []string) {
	for _, t := range tables {
		schemas = append(schemas, t.Schema)
		names = append(names, t.Name)
	}
	return schemas, names
}

// checkSourceDatabase checks one source database: SELECT on every selected
// table, the rights to publish them, and their replica identities.
func checkSourceDatabase(ctx context.Context, d plan.Database, opts Options) ([]Check, error) {
	conn, err := d.Source.Connect(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	schemas, names := tableArrays(d.Tables)
	rows, err := conn.Query(ctx, selectedTablesSQL, schemas, names)
	if err != nil {
		return nil, fmt.Errorf("source %s: read tables: %w", d.Name, err)
	}
	tables, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (sourceTable, error) {
		t := sourceTable{table: selection.Table{Database: d.Name}}
		err := r.Scan(&t.table.Schema, &t.table.Name, &t.exists, &t.canSelect, &t.owned)
		return t, err
	})
	if err != nil {
		return nil, fmt.Errorf("source %s: read tables: %w", d.Name, err)
	}
	publication := opts.Publication
	if publication == "" {
		if publication, _, err = stream.FindPublication(ctx, conn, opts.slotFor(d.Name)); err != nil {
			return nil, fmt.Errorf("source %s: %w", d.Name, err)
		}
	}
	var user string
	var createOnDB, ownPub bool
	err = conn.QueryRow(ctx, `SELECT current_user, has_database_privilege(current_database(), 'CREATE'),
		EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1 AND pg_has_role(pubowner, 'USAGE'))`, publication).
		Scan(&user, &createOnDB, &ownPub)
	if err != nil {
		return nil, fmt.Errorf("source %s: read privileges: %w", d.Name, err)
	}
	role := ident(user)

	sel := Check{Name: "source table privileges", Database: d.Name, Status: Pass,
		Detail: readableTables(user, len(tables))}
	var noSelect, grants, notOwned, owns []string
	for _, t := range tables {
		if !t.exists {
			return nil, fmt.Errorf("source %s: table %s disappeared while validating", d.Name, t.table.Qualified())
		}
		q := ident(t.table.Schema, t.table.Name)
		if !t.canSelect {
			noSelect = append(noSelect, t.table.Qualified())
			grants = append(grants, fmt.Sprintf("GRANT SELECT ON %s TO %s;", q, role))
		}
		if !t.owned {
			notOwned = append(notOwned, t.table.Qualified())
			owns = append(owns, fmt.Sprintf("ALTER TABLE %s OWNER TO %s;", q, role))
		}
	}
	if len(noSelect) > 0 {
		sel.Status = Fail
		sel.Detail = fmt.Sprintf("%s lacks SELECT on %s", user, strings.Join(noSelect, ", "))
		sel.Fix = strings.Join(grants, " ")
	}

	pub := Check{Name: "source publication rights", Database: d.Name, Status: Pass,
		Detail: fmt.Sprintf("%s may create the publication and owns the selected tables", user)}
	var problems, fixes []string
	if !createOnDB && !ownPub {
		problems = append(problems, fmt.Sprintf("%s lacks CREATE on database %s (needed to create a publication)", user, d.Name))
		fixes = append(fixes, fmt.Sprintf("GRANT CREATE ON DATABASE %s TO %s;", ident(d.Name), role))
	}
	if len(notOwned) > 0 {
		problems = append(problems, fmt.Sprintf("only a table's owner may publish it, and %s does not own %s", user, strings.Join(notOwned, ", ")))
		fixes = append(fixes, owns...)
	}
	if len(problems) > 0 {
		pub.Status = Fail
		pub.Detail = strings.Join(problems, "; ")
		pub.Fix = strings.Join(fixes, " ") + " (or run with the role that owns the tables)"
	}

	ri, err := checkReplicaIdentity(ctx, conn, d, schemas, names, opts.IdentityFull)
	if err != nil {
		return nil, err
	}
	deps, err := checkDependencies(ctx, conn, d, opts.CheckpointSchema)
	if err != nil {
		return nil, err
	}
	rls, err := checkRowSecurity(ctx, conn, d, "source", user)
	if err != nil {
		return nil, err
	}
	never, err := checkNeverSelected(ctx, conn, d)
	if err != nil {
		return nil, err
	}
	ri = append(ri, deps, rls, never)
	return append([]Check{sel, pub}, ri...), nil
}

// checkReplicaIdentity fails on tables whose UPDATE and DELETE cannot be
// decoded: once such a table is in a publication, the source itself rejects
// those statements, which would break the user's application, so init
// refuses them unless told to set REPLICA IDENTITY FULL.
func checkReplicaIdentity(ctx context.Context, conn *pgx.Conn, d plan.Database, schemas, names []string, identityFull bool) ([]Check, error) {
	c := Check{Name: "replica identity", Database: d.Name, Status: Pass}
	u := Check{Name: "unlogged tables", Database: d.Name, Status: Pass, Detail: "no selected table is unlogged"}
	rows, err := conn.Query(ctx, replicaIdentitySQL, schemas, names)
	if err != nil {
		return nil, fmt.Errorf("source %s: read replica identities: %w", d.Name, err)
	}
	var bad, fixes, excludes, unlogged []string
	n := 0
	for rows.Next() {
		var schema, name, ident string
		var pk, idx, isUnlogged bool
		if err := rows.Scan(&schema, &name, &ident, &pk, &idx, &isUnlogged); err != nil {
			return nil, fmt.Errorf("source %s: read replica identities: %w", d.Name, err)
		}
		t := selection.Table{Database: d.Name, Schema: schema, Name: name}
		if isUnlogged {
			unlogged = append(unlogged, t.String())
			continue
		}
		n++
		if ident == "f" || (ident == "d" && pk) || (ident == "i" && idx) {
			continue
		}
		bad = append(bad, t.Qualified())
		excludes = append(excludes, t.String())
		fixes = append(fixes, fmt.Sprintf("ALTER TABLE %s REPLICA IDENTITY FULL;", pgx.Identifier{schema, name}.Sanitize()))
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("source %s: read replica identities: %w", d.Name, err)
	}
	if len(unlogged) > 0 {
		u.Status = Fail
		u.Detail = fmt.Sprintf("unlogged: %s; logical decoding never sees their changes, so init refuses them", strings.Join(unlogged, ", "))
		u.Fix = fmt.Sprintf("ALTER TABLE … SET LOGGED on the source, or leave them out with --exclude-tables %s", strings.Join(unlogged, ","))
	}
	if len(bad) == 0 {
		c.Detail = keyedTables(n)
		return []Check{c, u}, nil
	}
	if identityFull {
		c.Status = Warn
		c.Detail = fmt.Sprintf("no primary key or usable replica identity: %s; init sets REPLICA IDENTITY FULL on them on the source (--replica-identity-full), which then logs whole old rows for their updates and deletes", strings.Join(bad, ", "))
		return []Check{c, u}, nil
	}
	c.Status = Fail
	c.Detail = fmt.Sprintf("no primary key or usable replica identity: %s. Once published, the source itself would reject UPDATE and DELETE on these tables (\"cannot update table ... because it does not have a replica identity\"), so init refuses them", strings.Join(bad, ", "))
	c.Fix = fmt.Sprintf("add a primary key; or %s (init does this with --replica-identity-full); or leave them out with --exclude-tables %s",
		strings.Join(fixes, " "), strings.Join(excludes, ","))
	return []Check{c, u}, nil
}

// readableTables says that user may read all n selected tables.
func readableTables(user string, n int) string {
	switch n {
	case 0:
		return "no table is selected"
	case 1:
		return user + " may read the 1 selected table"
	}
	return fmt.Sprintf("%s may read all %d selected tables", user, n)
}

// keyedTables says that all n tables have a usable replica identity.
func keyedTables(n int) string {
	const has = "a primary key, an identity index or REPLICA IDENTITY FULL"
	switch n {
	case 0:
		return "no table is selected"
	case 1:
		return "the 1 table has " + has
	}
	return fmt.Sprintf("all %d tables have %s", n, has)
}
