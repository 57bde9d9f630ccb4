package apply

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/serenorg/postgres-seren-replicator/internal/ddlcapture"
)

// captureScope is how a captured command's objects stand to the migration.
type captureScope struct {
	// unknown: some object is not named (GRANT and the like).
	unknown bool
	// inCopy names a table whose copy (made after init) holds the command.
	inCopy string
	// outside are objects the migration does not carry.
	outside []string
	// dropsTable are tables of the migration the command drops.
	dropsTable []string
	// owner is the role that owns what a CREATE of an object of no table
	// made on the source.
	owner string
	// types: the command touches a type (the cached type names are read
	// again after it).
	types bool
}

// neverApplied are object types whose commands concern replication or the
// server, not the selected tables' schema.
var neverApplied = map[string]bool{"publication": true, "publication relation": true, "publication namespace": true,
	"subscription": true, "event trigger": true, "foreign-data wrapper": true, "server": true, "user mapping": true}

// tableBound are the dropped objects that belong to a table, whose
// address names start with its schema and name.
var tableBound = map[string]bool{"table": true, "table column": true, "table constraint": true, "trigger": true,
	"rule": true, "policy": true, "default value": true}

// captureSelection classifies a captured command's objects.
func (a *Applier) captureSelection(ctx context.Context, rec ddlcapture.Record) (captureScope, error) {
	var s captureScope
	out := map[string]bool{}
	outside := func(what string) {
		if !out[what] {
			out[what] = true
			s.outside = append(s.outside, what)
		}
	}
	for _, o := range rec.Objects {
		if o.Temp || o.InExtension || o.Dropped && !o.Original && !o.Normal {
			continue // goes with another object of the list
		}
		if o.Class == "pg_type" || o.Dropped && (o.Type == "type" || o.Type == "domain") {
			s.types = true
		}
		switch {
		case neverApplied[o.Type]:
			outside(o.Type + " " + o.Identity)
		case o.Identity == "":
			s.unknown = true
		case o.Dropped && tableBound[o.Type] && len(o.Names) >= 2:
			name := o.Names[0] + "." + o.Names[1]
			if _, ok := a.byName[name]; ok {
				if o.Type == "table" {
					s.dropsTable = append(s.dropsTable, name)
				}
				continue
			}
			free, err := a.targetViewOrMissing(ctx, pgx.Identifier{o.Names[0], o.Names[1]}.Sanitize(), o.Type == "table")
			if err != nil {
				return s, err
			}
			if !free {
				outside(o.Type + " " + o.Identity)
			}
		case o.Dropped && o.Type == "index":
			rows, err := a.query(ctx, `SELECT n.nspname || '.' || c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
				JOIN pg_namespace n ON n.oid = c.relnamespace WHERE i.indexrelid = to_regclass($1) AND c.relkind IN ('r', 'p')`, o.Identity)
			if err != nil {
				return s, fmt.Errorf("look up index %s on the target: %w", o.Identity, err)
			}
			if len(rows) == 1 {
				if _, ok := a.byName[string(rows[0][0])]; !ok {
					outside(o.Type + " " + o.Identity)
				}
			}
		case o.Dropped && o.Type == "schema":
			// CASCADE on the target would take what the source's schema no
			// longer held: the kept copy of a table the source dropped, a
			// table of the target's own.
			left, err := a.tablesLeftIn(ctx, o.Identity, rec)
			if err != nil {
				return s, err
			}
			if left != "" {
				outside(o.Type + " " + o.Identity + " (on the target it holds " + left + ", which the source's did not)")
			}
		case o.Dropped && o.Type == "foreign table":
			outside(o.Type + " " + o.Identity)
		case o.Dropped:
			// An object of no table (a type, a function, a view): the target
			// has it when init copied it or a captured CREATE made it.
		case o.Root.OID() != 0:
			st, ok := a.byOID[o.Root.OID()]
			if !ok {
				st, ok = a.byOID[o.Table.OID()] // a partition the stream made known by itself
			}
			if !ok {
				outside(o.Type + " " + o.Identity)
				continue
			}
			name := st.Schema + "." + st.Name
			if a.joins[name] == copyUnfinished || a.inCopy(name) {
				s.inCopy = name
			}
		case len(o.Uses) > 0:
			used := false
			for _, u := range o.Uses {
				if _, ok := a.byOID[u.OID()]; ok {
					used = true
				}
			}
			if !used {
				outside(o.Type + " " + o.Identity + " (used only by tables outside the migration)")
			}
		default:
			// An object of no table and no user in the migration yet.
			if strings.HasPrefix(rec.Tag, "CREATE") && s.owner == "" {
				s.owner = o.Owner
			}
		}
	}
	return s, nil
}

// targetViewOrMissing reports whether a relation a dropped object belonged
// to is, on the target, a view or materialized view (an object of no
// table), or, for a dropped table, absent there.
func (a *Applier) targetViewOrMissing(ctx context.Context, qualified string, table bool) (bool, error) {
	rows, err := a.query(ctx, `SELECT relkind::text FROM pg_class WHERE oid = to_regclass($1)`, qualified)
	if err != nil {
		return false, fmt.Errorf("look up %s on the target: %w", qualified, err)
	}
	if len(rows) == 0 {
		return false, nil
	}
	kind := string(rows[0][0])
	return kind == "v" || kind == "m" || !table && kind == "c", nil
}

// notImmutable lists, of the named functions, those the target has in a
// form that is not immutable.
func (a *Applier) notImmutable(ctx context.Context, names []string) (string, error) {
	list, _ := json.Marshal(names)
	rows, err := a.query(ctx, `SELECT coalesce(string_agg(DISTINCT proname, ', '), '') FROM pg_proc
		WHERE proname = ANY (ARRAY(SELECT jsonb_array_elements_text($1::jsonb))) AND provolatile <> 'i'`, string(list))
	if err != nil {
		return "", fmt.Errorf("look up functions %s on the target: %w", strings.Join(names, ", "), err)
	}
	return string(rows[0][0]), nil
}
