package apply

import (
	"strings"

	"github.com/jackc/pgx/v5"
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
