package selection

import (
	"errors"
	"slices"
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

func TestIncludeAndExcludeTogetherIsInvalid(t *testing.T) {
	if _, err := New([]string{"a"}, []string{"b"}, nil, nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("databases: err = %v, want ErrInvalid", err)
	}
	if _, err := New(nil, nil, []string{"a.t"}, []string{"a.u"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("tables: err = %v, want ErrInvalid", err)
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
