package selection

import (
	"errors"
	"slices"
	"sort"
	"strings"
)

// Name matches one part of a name (a database, schema or table): exactly,
// or, when it holds an unquoted star, as a glob.
type Name struct {
	// pieces are the literal runs between unquoted stars: one piece is an
	// exact name.
	pieces []string
}

// ExactName is the Name that matches s alone, stars included.
func ExactName(s string) Name { return Name{pieces: []string{s}} }

func (n Name) wild() bool { return len(n.pieces) > 1 }

// literal is the exact name (for a Name without stars).
func (n Name) literal() string { return strings.Join(n.pieces, "*") }

// Match reports whether s matches the name.
func (n Name) Match(s string) bool {
	if !n.wild() {
		return s == n.pieces[0]
	}
	first, last := n.pieces[0], n.pieces[len(n.pieces)-1]
	if len(s) < len(first)+len(last) || !strings.HasPrefix(s, first) {
		return false
	}
	s = s[len(first):]
	for _, mid := range n.pieces[1 : len(n.pieces)-1] {
		i := strings.Index(s, mid)
		if i < 0 {
			return false
		}
		s = s[i+len(mid):]
	}
	return strings.HasSuffix(s, last)
}

// matchDB is Match for a database name: a pattern never matches the
// maintenance database, only its exact name does.
func (n Name) matchDB(db string) bool {
	if n.wild() && db == MaintenanceDatabase {
		return false
	}
	return n.Match(db)
}

// String renders the name as a filter entry that reads back as the same
// Name: literal runs quoted where they need it, stars bare.
func (n Name) String() string {
	if !n.wild() {
		return QuoteName(n.pieces[0])
	}
	var b strings.Builder
	for i, p := range n.pieces {
		if i > 0 {
			b.WriteByte('*')
		}
		if p != "" {
			b.WriteString(quoteRun(p))
		}
	}
	return b.String()
}

// quoteRun quotes a literal run that sits next to a star when it holds a
// character the flags would read otherwise.
func quoteRun(s string) string {
	if !strings.ContainsAny(s, `."* ,`) {
		return s
	}
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

// DatabasePattern is one --include-databases or --exclude-databases entry.
type DatabasePattern struct {
	Name Name
	flag string // the flag it came from, for messages
	text string // as the user wrote it, for messages
}

// ParseDatabasePattern reads a database name or pattern.
func ParseDatabasePattern(s string) (DatabasePattern, error) {
	parts, err := splitPattern(s)
	if err != nil {
		return DatabasePattern{}, err
	}
	if len(parts) != 1 {
		return DatabasePattern{}, errors.New(`a database name has no dots; write "a.b" in double quotes for a database named so`)
	}
	return DatabasePattern{Name: parts[0], text: s}, nil
}

// Match reports whether the pattern selects database db.
func (p DatabasePattern) Match(db string) bool { return p.Name.matchDB(db) }

func (p DatabasePattern) String() string {
	if p.text != "" {
		return p.text
	}
	return p.Name.String()
}

func exactDatabases(flag string, names []string) []DatabasePattern {
	out := make([]DatabasePattern, len(names))
	for i, n := range names {
		out[i] = DatabasePattern{Name: ExactName(n), flag: flag}
	}
	return out
}

// TablePattern is one --include-tables or --exclude-tables entry.
type TablePattern struct {
	Database, Schema, Name Name
	flag                   string // the flag it came from, for messages
	text                   string // as the user wrote it, for messages
}

// ParseTablePattern reads db.table or db.schema.table, each part a name or
// a pattern; an unqualified schema means public.
func ParseTablePattern(s string) (TablePattern, error) {
	parts, err := splitPattern(s)
	if err != nil {
		return TablePattern{}, err
	}
	switch len(parts) {
	case 2:
		return TablePattern{Database: parts[0], Schema: ExactName("public"), Name: parts[1], text: s}, nil
	case 3:
		return TablePattern{Database: parts[0], Schema: parts[1], Name: parts[2], text: s}, nil
	default:
		return TablePattern{}, errors.New("write a table as db.table or db.schema.table (a part in double quotes may hold dots)")
	}
}

// Match reports whether the pattern selects t.
func (p TablePattern) Match(t Table) bool {
	return p.Database.matchDB(t.Database) && p.Schema.Match(t.Schema) && p.Name.Match(t.Name)
}

func (p TablePattern) String() string {
	if p.text != "" {
		return p.text
	}
	return p.Database.String() + "." + p.Schema.String() + "." + p.Name.String()
}

func exactTables(flag string, tables []Table) []TablePattern {
	out := make([]TablePattern, len(tables))
	for i, t := range tables {
		out[i] = TablePattern{Database: ExactName(t.Database), Schema: ExactName(t.Schema), Name: ExactName(t.Name), flag: flag}
	}
	return out
}

// splitPattern splits s at dots outside double quotes into names; a star
// outside double quotes is a wildcard.
func splitPattern(s string) ([]Name, error) {
	var parts []Name
	var pieces []string
	var cur strings.Builder
	quoted, marked := false, false // marked: the part has a quote or a star
	end := func() error {
		if cur.Len() == 0 && len(pieces) == 0 && !marked {
			return errors.New("empty name part")
		}
		parts = append(parts, Name{pieces: append(pieces, cur.String())})
		pieces, marked = nil, false
		cur.Reset()
		return nil
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quoted && c == '"' && i+1 < len(s) && s[i+1] == '"':
			cur.WriteByte('"')
			i++
		case c == '"':
			quoted = !quoted
			marked = true
		case c == '.' && !quoted:
			if err := end(); err != nil {
				return nil, err
			}
		case c == '*' && !quoted:
			pieces = append(pieces, cur.String())
			cur.Reset()
			marked = true
		default:
			cur.WriteByte(c)
		}
	}
	if quoted {
		return nil, errors.New("unterminated double quote")
	}
	if err := end(); err != nil {
		return nil, err
	}
	return parts, nil
}

// maxSuggestions bounds the names a "did you mean" offers.
const maxSuggestions = 3

// suggestDatabases offers databases of available close to an unmatched
// pattern: the same name in another case, or a small edit away.
func suggestDatabases(p DatabasePattern, available []string) []string {
	var out []string
	for _, db := range available {
		if near(p.Name, db) {
			out = append(out, QuoteName(db))
		}
	}
	return limit(out)
}

// suggestTables offers what an unmatched table pattern may have meant,
// from available: the same table name in another schema (shop.orders for
// shop.sales.orders), the same names in another case, or a small edit away.
func suggestTables(p TablePattern, available []Table) []string {
	seen := map[string]bool{}
	var out []string
	add := func(s string) {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	for _, t := range available {
		if !p.Database.matchDB(t.Database) {
			continue
		}
		switch {
		case p.Name.Match(t.Name) && !p.Schema.Match(t.Schema):
			if p.Name.wild() { // the pattern, in the schema that has matches
				add(TablePattern{Database: p.Database, Schema: ExactName(t.Schema), Name: p.Name}.String())
			} else {
				add(t.String())
			}
		case near(p.Schema, t.Schema) && near(p.Name, t.Name):
			add(t.String())
		}
	}
	sort.Strings(out)
	return limit(out)
}

func limit(s []string) []string {
	if len(s) > maxSuggestions {
		return s[:maxSuggestions]
	}
	return s
}

// near reports whether s is a likely intended match of n: n matches it
// ignoring case, or, for an exact name, s is at most two edits away (one
// for short names).
func near(n Name, s string) bool {
	if n.Match(s) {
		return true
	}
	lower := Name{pieces: make([]string, len(n.pieces))}
	for i, p := range n.pieces {
		lower.pieces[i] = strings.ToLower(p)
	}
	if lower.Match(strings.ToLower(s)) {
		return true
	}
	if n.wild() {
		return false
	}
	max := 2
	if len(n.pieces[0]) <= 4 {
		max = 1
	}
	return editDistance(strings.ToLower(n.pieces[0]), strings.ToLower(s)) <= max
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = slices.Min([]int{prev[j] + 1, cur[j-1] + 1, prev[j-1] + cost})
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
