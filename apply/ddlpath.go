package apply

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/serenorg/postgres-seren-replicator/internal/ddlcapture"
)

// expandUserSchema names the source session's role where a search_path
// says "$user": on the target the statement runs as another role, whose
// schema (or none) "$user" would name instead, so an unqualified name
// would reach another table than on the source.
func expandUserSchema(path, role string) string {
	if role == "" {
		return path
	}
	var parts []string
	var cur strings.Builder
	quoted := false
	for _, r := range path {
		switch {
		case r == '"':
			quoted = !quoted
			cur.WriteRune(r)
		case r == ',' && !quoted:
			parts = append(parts, strings.TrimSpace(cur.String()))
			cur.Reset()
		default:
			cur.WriteRune(r)
		}
	}
	parts = append(parts, strings.TrimSpace(cur.String()))
	for i, p := range parts {
		if p == `"$user"` || p == "$user" {
			parts[i] = pgx.Identifier{role}.Sanitize()
		}
	}
	return strings.Join(parts, ", ")
}

// tablesLeftIn lists the tables the target has in a schema that the
// captured command did not drop on the source.
func (a *Applier) tablesLeftIn(ctx context.Context, schema string, rec ddlcapture.Record) (string, error) {
	dropped := []string{}
	for _, o := range rec.Objects {
		if o.Dropped && (o.Type == "table" || o.Type == "foreign table") && len(o.Names) >= 2 && o.Names[0] == schema {
			dropped = append(dropped, o.Names[1])
		}
	}
	list, _ := json.Marshal(dropped)
	rows, err := a.query(ctx, `SELECT coalesce(string_agg(quote_ident(n.nspname) || '.' || quote_ident(c.relname), ', ' ORDER BY c.relname), '')
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'f') AND NOT c.relispartition
			AND c.relname <> ALL (ARRAY(SELECT jsonb_array_elements_text($2::jsonb)))`, schema, string(list))
	if err != nil {
		return "", fmt.Errorf("look up the tables of schema %s on the target: %w", schema, err)
	}
	return string(rows[0][0]), nil
}
