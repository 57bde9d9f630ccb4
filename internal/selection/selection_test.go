package selection

import (
	"errors"
	"math/rand"
	"regexp"
	"slices"
	"strings"
	"testing"
)

func TestParseTable(t *testing.T) {
	tests := []struct {
		in      string
		want    Table
		wantErr bool
	}{
		{in: "db.t", want: Table{"db", "public", "t"}},
		{in: "db.s.t", want: Table{"db", "s", "t"}},
		{in: `db."My Schema"."Tab.le ""x"""`, want: Table{"db", "My Schema", `Tab.le "x"`}},
		{in: "db.CamelCase", want: Table{"db", "public", "CamelCase"}},
		{in: "t", wantErr: true},
		{in: "a.b.c.d", wantErr: true},
		{in: "db..t", wantErr: true},
		{in: `db."open`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseTable(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err == nil && got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestDatabases(t *testing.T) {
	all := []string{"app", "crm", "logs"}
	tests := []struct {
		name     string
		filter   Filter
		sourceDB string
		want     []string
		wantErr  bool
	}{
		{name: "postgres means all", sourceDB: "postgres", want: all},
		{name: "empty means all", sourceDB: "", want: all},
		{name: "named database alone", sourceDB: "crm", want: []string{"crm"}},
		{name: "include narrows", sourceDB: "postgres", filter: Filter{IncludeDatabases: []string{"logs", "app"}}, want: []string{"app", "logs"}},
		{name: "exclude narrows", sourceDB: "postgres", filter: Filter{ExcludeDatabases: []string{"logs"}}, want: []string{"app", "crm"}},
		{name: "unknown include", sourceDB: "postgres", filter: Filter{IncludeDatabases: []string{"nope"}}, wantErr: true},
		{name: "table in unknown database", sourceDB: "postgres", filter: Filter{IncludeTables: []Table{{"nope", "public", "t"}}}, wantErr: true},
		{name: "nothing left", sourceDB: "crm", filter: Filter{ExcludeDatabases: []string{"crm"}}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.filter.Databases(tt.sourceDB, all)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err == nil && !slices.Equal(got, tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestTables(t *testing.T) {
	avail := []Table{{"app", "public", "a"}, {"app", "public", "b"}, {"app", "s", "c"}}
	f := Filter{IncludeTables: []Table{{"app", "public", "a"}, {"app", "s", "c"}}}
	got, err := f.Tables("app", avail)
	if err != nil || !slices.Equal(got, []Table{avail[0], avail[2]}) {
		t.Fatalf("include: got %v, %v", got, err)
	}
	got, err = f.Tables("other", []Table{{"other", "public", "x"}})
	if err != nil || len(got) != 1 {
		t.Fatalf("include list naming no table of a database leaves it whole: got %v, %v", got, err)
	}
	f = Filter{ExcludeTables: []Table{{"app", "public", "b"}}}
	if got, _ = f.Tables("app", avail); !slices.Equal(got, []Table{avail[0], avail[2]}) {
		t.Fatalf("exclude: got %v", got)
	}
	f = Filter{ExcludeTables: []Table{{"app", "public", "zz"}}}
	if _, err := f.Tables("app", avail); !errors.Is(err, ErrInvalid) {
		t.Fatalf("unknown table: err = %v", err)
	}
}

func TestDatabasesPostgresOnlyWhenNamed(t *testing.T) {
	all := []string{"app", "crm", "postgres"}
	tests := []struct {
		name    string
		include []string
		exclude []string
		want    []string
		wantErr bool
	}{
		{name: "every database leaves postgres out", want: []string{"app", "crm"}},
		{name: "named exactly", include: []string{"postgres"}, want: []string{"postgres"}},
		{name: "named quoted", include: []string{`"postgres"`}, want: []string{"postgres"}},
		{name: "with others", include: []string{"postgres", "app"}, want: []string{"app", "postgres"}},
		{name: "a pattern does not match it", include: []string{"*"}, want: []string{"app", "crm"}},
		{name: "a pattern matching only it matches nothing", include: []string{"post*"}, wantErr: true},
		{name: "exclude after include", include: []string{"*", "postgres"}, exclude: []string{"crm"}, want: []string{"app", "postgres"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := New(tt.include, tt.exclude, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			got, err := f.Databases("postgres", all)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err == nil && !slices.Equal(got, tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestDatabasePatterns(t *testing.T) {
	all := []string{"app", "app_test", "crm", "logs_2023", "logs_2024", "we*ird"}
	tests := []struct {
		include, exclude []string
		want             []string
		wantErr          string
	}{
		{include: []string{"logs_*"}, want: []string{"logs_2023", "logs_2024"}},
		{include: []string{"app*"}, exclude: []string{"*_test"}, want: []string{"app"}},
		{exclude: []string{"logs_*", "app_test"}, want: []string{"app", "crm", "we*ird"}},
		{include: []string{`"we*ird"`}, want: []string{"we*ird"}},
		{include: []string{`we*`}, want: []string{"we*ird"}},
		{include: []string{`"app*"`}, wantErr: `--include-databases "app*" matches no database on the source (did you mean app?)`},
		{include: []string{"ap"}, wantErr: `--include-databases ap matches no database on the source (did you mean app?)`},
		{include: []string{"CRM"}, wantErr: `(did you mean crm?)`},
		{exclude: []string{"nope_*"}, wantErr: `--exclude-databases nope_* matches no database on the source`},
		{include: []string{"app"}, exclude: []string{"app"}, wantErr: "the filters select no database"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.include, ",")+"-"+strings.Join(tt.exclude, ","), func(t *testing.T) {
			f, err := New(tt.include, tt.exclude, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			got, err := f.Databases("", all)
			if tt.wantErr != "" {
				if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want ErrInvalid saying %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || !slices.Equal(got, tt.want) {
				t.Fatalf("got %v, %v, want %v", got, err, tt.want)
			}
		})
	}
}

// shop is a catalog for the table pattern tests: two databases, schemas,
// and names that need quoting.
var shop = map[string][]Table{
	"shop": {
		{"shop", "app", "log_2023"}, {"shop", "app", "log_2024"}, {"shop", "app", "users"},
		{"shop", "public", "audit_login"}, {"shop", "public", "items"},
		{"shop", "sales", "orders"}, {"shop", "staging", "a"}, {"shop", "staging", "b"},
		{"shop", "public", "log*"}, {"shop", "public", "a.b"}, {"shop", "public", "Mixed"},
	},
	"crm": {
		{"crm", "public", "audit_calls"}, {"crm", "public", "contacts"},
	},
}

func names(m map[string][]Table) []string {
	var out []string
	for _, db := range []string{"crm", "shop"} {
		for _, t := range m[db] {
			out = append(out, t.String())
		}
	}
	return out
}

func TestTablePatterns(t *testing.T) {
	tests := []struct {
		name             string
		include, exclude []string
		want             []string // of shop and crm, crm first
		wantErr          string
	}{
		{name: "glob in the table name", include: []string{"shop.app.log_*"},
			want: []string{"crm.public.audit_calls", "crm.public.contacts", "shop.app.log_2023", "shop.app.log_2024"}},
		{name: "whole schema", include: []string{"shop.staging.*"},
			want: []string{"crm.public.audit_calls", "crm.public.contacts", "shop.staging.a", "shop.staging.b"}},
		{name: "any database, public schema", include: []string{"*.audit_*"},
			want: []string{"crm.public.audit_calls", "shop.public.audit_login"}},
		{name: "exclude applies after include", include: []string{"shop.*.*"}, exclude: []string{"shop.app.*", "shop.public.*"},
			want: []string{"crm.public.audit_calls", "crm.public.contacts", "shop.sales.orders", "shop.staging.a", "shop.staging.b"}},
		{name: "exclude everywhere", exclude: []string{"*.*.audit_*", "shop.*.log_*", `shop."log*"`, `shop."a.b"`, "shop.Mixed", "shop.staging.*"},
			want: []string{"crm.public.contacts", "shop.app.users", "shop.public.items", "shop.sales.orders"}},
		{name: "quoted star is literal", include: []string{`shop."log*"`},
			want: []string{"crm.public.audit_calls", "crm.public.contacts", `shop.public."log*"`}},
		{name: "quoted dot is literal", include: []string{`shop."a.b"`},
			want: []string{"crm.public.audit_calls", "crm.public.contacts", `shop.public."a.b"`}},
		{name: "unquoted upper case matches exactly", include: []string{`shop.Mixed`},
			want: []string{"crm.public.audit_calls", "crm.public.contacts", `shop.public."Mixed"`}},
		{name: "wrong schema", include: []string{"shop.orders"},
			wantErr: `--include-tables shop.orders matches no table (did you mean shop.sales.orders?)`},
		{name: "wrong schema of a pattern", exclude: []string{"shop.log_*"},
			wantErr: `--exclude-tables shop.log_* matches no table (did you mean shop.app.log_*?)`},
		{name: "typo", include: []string{"shop.sales.order"},
			wantErr: `(did you mean shop.sales.orders?)`},
		{name: "case", include: []string{"shop.mixed"},
			wantErr: `(did you mean shop.public."Mixed"?)`},
		{name: "pattern matching nothing", include: []string{"*.nothing_*"},
			wantErr: `--include-tables *.nothing_* matches no table`},
		{name: "quoted part is not a pattern", include: []string{`shop.app."log_*"`},
			wantErr: `--include-tables shop.app."log_*" matches no table`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := New(nil, nil, tt.include, tt.exclude)
			if err != nil {
				t.Fatal(err)
			}
			got, err := f.Select(shop)
			if tt.wantErr != "" {
				if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want ErrInvalid saying %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if g := names(got); !slices.Equal(g, tt.want) {
				t.Fatalf("got %v\nwant %v", g, tt.want)
			}
		})
	}
}

func TestTablePatternNamingAnUnselectedDatabase(t *testing.T) {
	f, err := New(nil, nil, nil, []string{"crm.contacts"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.Select(map[string][]Table{"shop": shop["shop"]})
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "database crm is not selected") {
		t.Fatalf("err = %v", err)
	}
}

// randomName draws a name from an alphabet with the characters that need
// quoting, so that quoting is exercised.
func randomName(r *rand.Rand) string {
	const alphabet = `ab_Z.* "x,`
	n := 1 + r.Intn(5)
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[r.Intn(len(alphabet))]
	}
	return string(b)
}

// Property: a table written as Table.String reads back as a pattern that
// matches exactly that table, whatever its name holds.
func TestQuotedNamesMatchExactly(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	var tables []Table
	for range 300 {
		tables = append(tables, Table{Database: randomName(r), Schema: randomName(r), Name: randomName(r)})
	}
	for _, tb := range tables {
		p, err := ParseTablePattern(tb.String())
		if err != nil {
			t.Fatalf("%s: %v", tb, err)
		}
		if back, err := ParseTable(tb.String()); err != nil || back != tb {
			t.Fatalf("ParseTable(%s) = %+v, %v", tb, back, err)
		}
		for _, other := range tables {
			if got, want := p.Match(other), other == tb; got != want {
				t.Fatalf("pattern %s matches %+v: %v, want %v", tb, other, got, want)
			}
		}
	}
}

// Property: Name.Match agrees with a regular expression built from the
// same pattern, and a pattern written by Name.String reads back the same.
func TestGlobAgreesWithRegexp(t *testing.T) {
	r := rand.New(rand.NewSource(2))
	for range 3000 {
		var pieces []string
		for range 1 + r.Intn(4) {
			pieces = append(pieces, randomPiece(r))
		}
		n := Name{pieces: pieces}
		quoted := make([]string, len(pieces))
		for i, p := range pieces {
			quoted[i] = regexp.QuoteMeta(p)
		}
		re := regexp.MustCompile(`^` + strings.Join(quoted, `.*`) + `$`)
		back, err := splitPattern(n.String())
		if err != nil || len(back) != 1 || !slices.Equal(back[0].pieces, pieces) {
			t.Fatalf("%q written as %s reads back as %v, %v", pieces, n, back, err)
		}
		for range 20 {
			s := randomPiece(r) + randomPiece(r) + randomPiece(r)
			if r.Intn(3) == 0 { // a string built to match often
				s = strings.Join(pieces, randomPiece(r))
			}
			if got, want := n.Match(s), re.MatchString(s); got != want {
				t.Fatalf("%s matches %q: %v, want %v", n, s, got, want)
			}
		}
	}
}

func randomPiece(r *rand.Rand) string {
	const alphabet = `aab.*"`
	b := make([]byte, r.Intn(3))
	for i := range b {
		b[i] = alphabet[r.Intn(len(alphabet))]
	}
	return string(b)
}

// Property: the selection is the include matches (everything without an
// include) minus the exclude matches, for random pattern sets.
func TestExcludeAppliesAfterInclude(t *testing.T) {
	r := rand.New(rand.NewSource(3))
	catalog := map[string][]Table{}
	var all []Table
	for _, db := range []string{"a", "b"} {
		for _, s := range []string{"public", "x"} {
			for _, n := range []string{"t1", "t2", "u1", "log_1", "log_2"} {
				catalog[db] = append(catalog[db], Table{db, s, n})
			}
		}
		all = append(all, catalog[db]...)
	}
	parts := [][]string{{"a", "b", "*"}, {"public", "x", "*"}, {"t*", "*1", "log_*", "u1", "*"}}
	pick := func() string {
		return parts[0][r.Intn(3)] + "." + parts[1][r.Intn(3)] + "." + parts[2][r.Intn(5)]
	}
	for range 500 {
		var inc, exc []string
		for range r.Intn(3) {
			inc = append(inc, pick())
		}
		for range r.Intn(3) {
			exc = append(exc, pick())
		}
		f, err := New(nil, nil, inc, exc)
		if err != nil {
			t.Fatal(err)
		}
		got, err := f.Select(catalog)
		if err != nil {
			t.Fatalf("include %v exclude %v: %v", inc, exc, err)
		}
		incP, _ := parseTables("", inc)
		excP, _ := parseTables("", exc)
		for _, tb := range all {
			named := slices.ContainsFunc(incP, func(p TablePattern) bool { return p.Database.Match(tb.Database) })
			want := (!named || slices.ContainsFunc(incP, func(p TablePattern) bool { return p.Match(tb) })) &&
				!slices.ContainsFunc(excP, func(p TablePattern) bool { return p.Match(tb) })
			if slices.Contains(got[tb.Database], tb) != want {
				t.Fatalf("include %v exclude %v: %s selected = %v, want %v", inc, exc, tb, !want, want)
			}
		}
	}
}
