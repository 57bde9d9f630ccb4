package ddlcapture

import (
	"strings"

	"github.com/serenorg/postgres-seren-replicator/internal/sqltext"
)

// installSQL creates, in the tool's schema of a source database, the table
// the DDL commands are recorded in, the functions that record them and
// the event triggers that call them; skip are the application_names of the
// tool's own sessions, whose commands are not recorded.
//
// The capture function is SECURITY DEFINER (every role that runs DDL
// records through it, and only through it: a function returning
// event_trigger cannot be called directly, so no role can write a row of
// its own making) and reads the caller's search_path first, then works
// under pg_catalog only, so that no object of the caller's can stand in
// for a catalog function or operator while it runs with its owner's
// rights. It never makes the caller's command fail: an error of its own
// is recorded in the row (or raised as a warning), and sync then follows
// that command as it would without the capture.
func installSQL(skip []string) string {
	quoted := make([]string, 0, len(skip))
	for _, s := range skip {
		quoted = append(quoted, sqltext.Literal(s))
	}
	return strings.NewReplacer("@SCHEMA@", Schema, "@TABLE@", Table, "@SKIP@", strings.Join(quoted, ", "),
		"@END@", EndTrigger, "@DROP@", DropTrigger, "@PASSWORD@", passwordPattern).Replace(installTemplate)
}

// passwordPattern matches (case-insensitively, as a SQL literal) a query
// string that gives a password: PASSWORD 'x', password 'x' in OPTIONS,
// password=x in a connection string; not a column named password.
const passwordPattern = `E'\\mpassword\\M\\s*(=|''|[eE]''|\\$)'`

const installTemplate = `
CREATE SCHEMA IF NOT EXISTS @SCHEMA@;

CREATE TABLE IF NOT EXISTS @SCHEMA@.@TABLE@ (
	id           bigserial PRIMARY KEY,
	lsn          pg_lsn NOT NULL DEFAULT pg_catalog.pg_current_wal_insert_lsn(),
	captured_at  timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
	session_role name NOT NULL DEFAULT session_user,
	command_tag  text NOT NULL,
	objects      jsonb NOT NULL DEFAULT '[]',
	tables       jsonb NOT NULL DEFAULT '[]',
	settings     jsonb NOT NULL DEFAULT '{}',
	statement    text,
	nth          integer NOT NULL DEFAULT 1,
	error        text
);
COMMENT ON TABLE @SCHEMA@.@TABLE@ IS 'postgres-seren-replicator --ddl-capture: the DDL commands run on this database, published so that sync applies them on the target in commit order (cleanup removes it)';

-- The table an object belongs to (itself for a table): an index, a
-- constraint, a trigger, a rule, a policy, a statistics object, a default,
-- a sequence owned by a column, a TOAST table. NULL for an object of no
-- table (a type, a function, a view).
CREATE OR REPLACE FUNCTION @SCHEMA@.ddl_capture_table_of(cls oid, obj oid) RETURNS oid
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
SELECT c.oid FROM (SELECT CASE cls
	WHEN 'pg_class'::regclass THEN (SELECT CASE
		WHEN r.relkind IN ('i', 'I') THEN (SELECT i.indrelid FROM pg_index i WHERE i.indexrelid = r.oid)
		WHEN r.relkind = 'S' THEN (SELECT d.refobjid FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = r.oid
			AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i') LIMIT 1)
		WHEN r.relkind = 't' THEN (SELECT t.oid FROM pg_class t WHERE t.reltoastrelid = r.oid)
		ELSE r.oid END FROM pg_class r WHERE r.oid = obj)
	WHEN 'pg_constraint'::regclass THEN (SELECT k.conrelid FROM pg_constraint k WHERE k.oid = obj)
	WHEN 'pg_trigger'::regclass THEN (SELECT t.tgrelid FROM pg_trigger t WHERE t.oid = obj)
	WHEN 'pg_rewrite'::regclass THEN (SELECT r.ev_class FROM pg_rewrite r WHERE r.oid = obj)
	WHEN 'pg_policy'::regclass THEN (SELECT p.polrelid FROM pg_policy p WHERE p.oid = obj)
	WHEN 'pg_statistic_ext'::regclass THEN (SELECT s.stxrelid FROM pg_statistic_ext s WHERE s.oid = obj)
	WHEN 'pg_attrdef'::regclass THEN (SELECT d.adrelid FROM pg_attrdef d WHERE d.oid = obj)
END AS rel) x
JOIN pg_class c ON c.oid = x.rel WHERE c.relkind IN ('r', 'p', 'f')
$$;

-- The owner of an object the command made, for the objects that have one.
CREATE OR REPLACE FUNCTION @SCHEMA@.ddl_capture_owner(cls oid, obj oid) RETURNS name
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
SELECT r.rolname FROM pg_roles r WHERE r.oid = CASE cls
	WHEN 'pg_proc'::regclass THEN (SELECT proowner FROM pg_proc WHERE oid = obj)
	WHEN 'pg_type'::regclass THEN (SELECT typowner FROM pg_type WHERE oid = obj)
	WHEN 'pg_namespace'::regclass THEN (SELECT nspowner FROM pg_namespace WHERE oid = obj)
	WHEN 'pg_class'::regclass THEN (SELECT relowner FROM pg_class WHERE oid = obj)
	WHEN 'pg_collation'::regclass THEN (SELECT collowner FROM pg_collation WHERE oid = obj)
	WHEN 'pg_operator'::regclass THEN (SELECT oprowner FROM pg_operator WHERE oid = obj)
	WHEN 'pg_conversion'::regclass THEN (SELECT conowner FROM pg_conversion WHERE oid = obj)
	WHEN 'pg_ts_config'::regclass THEN (SELECT cfgowner FROM pg_ts_config WHERE oid = obj)
	WHEN 'pg_ts_dict'::regclass THEN (SELECT dictowner FROM pg_ts_dict WHERE oid = obj)
END
$$;

-- The tables (partition roots) whose columns use a type: directly, as an
-- array, or through a domain over it.
CREATE OR REPLACE FUNCTION @SCHEMA@.ddl_capture_type_users(typ oid) RETURNS oid[]
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
WITH RECURSIVE t(oid) AS (
	SELECT typ
	UNION SELECT y.oid FROM pg_type y JOIN t ON y.typbasetype = t.oid OR y.typelem = t.oid AND y.typcategory = 'A')
SELECT coalesce(array_agg(DISTINCT coalesce(pg_partition_root(a.attrelid)::oid, a.attrelid)), '{}')
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
WHERE c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped AND a.atttypid IN (SELECT oid FROM t)
$$;

CREATE OR REPLACE FUNCTION @SCHEMA@.capture_ddl() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER AS $fn$
DECLARE
	caller_path text;
	objs jsonb;
	tbls jsonb := '[]';
	roots oid[];
	dropped jsonb;
	settings jsonb;
	stmt text;
	stmt_key text;
	seen text;
	nth integer := 1;
BEGIN
	-- Only schema-qualified calls and no operator until the search_path
	-- is the catalog's.
	caller_path := pg_catalog.current_setting('search_path');
	PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
	IF current_setting('application_name') IN (@SKIP@) THEN
		PERFORM set_config('search_path', caller_path, true);
		RETURN;
	END IF;
	BEGIN
		IF TG_EVENT = 'sql_drop' THEN
			-- Kept until the command's ddl_command_end, which records it.
			SELECT coalesce(jsonb_agg(jsonb_build_object(
					'type', d.object_type, 'identity', d.object_identity, 'schema', d.schema_name,
					'names', to_jsonb(d.address_names), 'original', d.original, 'normal', d.normal,
					'temp', d.is_temporary, 'dropped', true)), '[]')
				INTO objs FROM pg_event_trigger_dropped_objects() d;
			PERFORM set_config('seren_replicator.dropped',
				(coalesce(nullif(current_setting('seren_replicator.dropped', true), ''), '[]')::jsonb || objs)::text, true);
		ELSE
			dropped := coalesce(nullif(current_setting('seren_replicator.dropped', true), ''), '[]')::jsonb;
			PERFORM set_config('seren_replicator.dropped', '', true);
			SELECT coalesce(jsonb_agg(jsonb_build_object(
					'type', c.object_type, 'identity', c.object_identity, 'schema', c.schema_name,
					'class', c.classid::regclass::text,
					'kind', (SELECT r.relkind FROM pg_class r WHERE c.classid = 'pg_class'::regclass AND r.oid = c.objid),
					'table', t.tbl, 'root', coalesce(pg_partition_root(t.tbl)::oid, t.tbl),
					'owner', @SCHEMA@.ddl_capture_owner(c.classid, c.objid),
					'uses', CASE WHEN c.classid = 'pg_type'::regclass THEN to_jsonb(@SCHEMA@.ddl_capture_type_users(c.objid)) END,
					'temp', c.schema_name IS NOT DISTINCT FROM 'pg_temp',
					'in_extension', c.in_extension) ORDER BY c.n), '[]')
				INTO objs
				FROM (SELECT d.*, row_number() OVER () AS n FROM pg_event_trigger_ddl_commands() d) c
				LEFT JOIN LATERAL (SELECT @SCHEMA@.ddl_capture_table_of(c.classid, c.objid) AS tbl) t ON true;
			objs := objs || dropped;
			-- Temporary objects, the tool's own schema and refreshes of
			-- materialized views (data, not schema) are not recorded.
			IF TG_TAG = 'REFRESH MATERIALIZED VIEW'
				OR jsonb_array_length(objs) > 0 AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(objs) o
					WHERE NOT (o->>'temp')::boolean AND o->>'schema' IS DISTINCT FROM '@SCHEMA@') THEN
				PERFORM set_config('search_path', caller_path, true);
				RETURN;
			END IF;
			IF TG_TAG = 'ALTER TABLE' THEN
				-- What the columns of the altered tables (and their partitions)
				-- are once the command has run: their attribute numbers, and
				-- the value rows that existed before an ADD COLUMN read.
				SELECT array_agg(DISTINCT (o->>'root')::oid) INTO roots FROM jsonb_array_elements(objs) o WHERE o->>'root' IS NOT NULL;
				SELECT coalesce(jsonb_agg(jsonb_build_object(
						'oid', k.oid, 'schema', n.nspname, 'name', k.relname,
						'columns', (SELECT coalesce(jsonb_agg(jsonb_build_array(a.attnum, a.attname) ORDER BY a.attnum), '[]') FROM pg_attribute a
							WHERE a.attrelid = k.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''),
						'missing', (SELECT coalesce(jsonb_object_agg(a.attname, a.attmissingval::text), '{}') FROM pg_attribute a
							WHERE a.attrelid = k.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.atthasmissing))), '[]')
					INTO tbls
					FROM pg_class k JOIN pg_namespace n ON n.oid = k.relnamespace
					WHERE k.relkind IN ('r', 'p') AND k.oid IN (SELECT u FROM unnest(roots) u
						UNION SELECT t.relid FROM unnest(roots) u, pg_partition_tree(u) t);
			END IF;
			-- role: the role SET ROLE made current (none: the login role),
			-- which the search_path's "$user" names.
			settings := jsonb_build_object('search_path', caller_path, 'role', current_setting('role'),
				'TimeZone', current_setting('TimeZone'), 'DateStyle', current_setting('DateStyle'),
				'IntervalStyle', current_setting('IntervalStyle'), 'extra_float_digits', current_setting('extra_float_digits'),
				'bytea_output', current_setting('bytea_output'), 'standard_conforming_strings', current_setting('standard_conforming_strings'));
			-- Every command of one statement shares its text (a query string
			-- of several statements, DDL run by a function or by another
			-- event trigger): it is recorded once, with the first.
			stmt := current_query();
			-- What may hold a password is not kept: the commands that take
			-- one, and a query string that gives one (CREATE ROLE … PASSWORD
			-- sent with DDL, a connection string's password=).
			IF EXISTS (SELECT 1 FROM jsonb_array_elements(objs) o WHERE o->>'type' IN ('user mapping', 'server', 'subscription'))
				OR stmt ~* @PASSWORD@ THEN
				stmt := '';
			END IF;
			stmt_key := statement_timestamp()::text || ' ' || coalesce(length(current_query()), 0)::text;
			seen := current_setting('seren_replicator.statement', true);
			IF split_part(seen, '|', 1) = stmt_key THEN
				nth := split_part(seen, '|', 2)::integer + 1;
				stmt := NULL;
			END IF;
			PERFORM set_config('seren_replicator.statement', stmt_key || '|' || nth::text, true);
			INSERT INTO @SCHEMA@.@TABLE@ (command_tag, objects, tables, settings, statement, nth)
				VALUES (TG_TAG, objs, tbls, settings, coalesce(stmt, ''), nth);
		END IF;
	EXCEPTION WHEN OTHERS THEN
		IF TG_EVENT = 'ddl_command_end' THEN
			BEGIN
				INSERT INTO @SCHEMA@.@TABLE@ (command_tag, statement, error) VALUES (TG_TAG,
					CASE WHEN TG_TAG ~ '(USER MAPPING|SERVER|SUBSCRIPTION)$' OR current_query() ~* @PASSWORD@ THEN ''
						ELSE coalesce(current_query(), '') END, SQLERRM);
			EXCEPTION WHEN OTHERS THEN
				RAISE WARNING 'postgres-seren-replicator: DDL capture failed: %', SQLERRM;
			END;
		ELSE
			RAISE WARNING 'postgres-seren-replicator: DDL capture failed: %', SQLERRM;
		END IF;
	END;
	PERFORM set_config('search_path', caller_path, true);
END
$fn$;

DO $do$ BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_event_trigger WHERE evtname = '@END@') THEN
		CREATE EVENT TRIGGER @END@ ON ddl_command_end EXECUTE PROCEDURE @SCHEMA@.capture_ddl();
	END IF;
	IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_event_trigger WHERE evtname = '@DROP@') THEN
		CREATE EVENT TRIGGER @DROP@ ON sql_drop EXECUTE PROCEDURE @SCHEMA@.capture_ddl();
	END IF;
END $do$;
ALTER EVENT TRIGGER @END@ ENABLE;
ALTER EVENT TRIGGER @DROP@ ENABLE;
`

// dropSQL removes what installSQL made.
func dropSQL() string {
	return strings.NewReplacer("@SCHEMA@", Schema, "@TABLE@", Table, "@END@", EndTrigger, "@DROP@", DropTrigger).Replace(`
DROP EVENT TRIGGER IF EXISTS @END@;
DROP EVENT TRIGGER IF EXISTS @DROP@;
DROP FUNCTION IF EXISTS @SCHEMA@.capture_ddl();
DROP FUNCTION IF EXISTS @SCHEMA@.ddl_capture_table_of(oid, oid);
DROP FUNCTION IF EXISTS @SCHEMA@.ddl_capture_owner(oid, oid);
DROP FUNCTION IF EXISTS @SCHEMA@.ddl_capture_type_users(oid);
DROP TABLE IF EXISTS @SCHEMA@.@TABLE@;
`)
}
