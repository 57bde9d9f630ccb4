package snapshot

import "testing"

func TestPlanPieces(t *testing.T) {
	const mb = 1 << 20
	tests := []struct {
		name     string
		bytes    int64
		blocks   int64
		jobs     int
		canSplit bool
		want     int
	}{
		{"small table stays whole", 8 * mb, 1024, 4, true, 1},
		{"big table is cut into chunks", 1024 * mb, 131072, 2, true, 8},
		{"medium table is cut for every worker", 100 * mb, 12800, 4, true, 4},
		{"rounds up to whole rounds of workers", 300 * mb, 38400, 2, true, 4},
		{"no split before TID range scans", 1024 * mb, 131072, 4, false, 1},
		{"one block cannot be split", 40 * mb, 1, 4, true, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			table := &copyTable{Schema: "s", Name: "t", Columns: []string{"a"}, Bytes: tt.bytes, Blocks: tt.blocks}
			pieces := planPieces([]*copyTable{table}, tt.jobs, 128*mb, 16*mb, tt.canSplit)
			if got := len(pieces); got != tt.want {
				t.Fatalf("got %d pieces, want %d", got, tt.want)
			}
			// The ranges must cover every block exactly once, the last one open.
			next := int64(0)
			for i, p := range pieces {
				if p.from != next {
					t.Fatalf("piece %d starts at block %d, want %d", i, p.from, next)
				}
				next = p.to
				if last := i == len(pieces)-1; last != (p.to < 0) {
					t.Fatalf("piece %d: to = %d (only the last range is open)", i, p.to)
				}
			}
		})
	}
}

func TestPieceSQL(t *testing.T) {
	table := &copyTable{Schema: "My Schema", Name: "t", Columns: []string{`"a"`, `"b"`}, Binary: true}
	whole := piece{table: table, to: -1}
	if got, want := whole.sourceSQL(), `COPY "My Schema"."t" ("a", "b") TO STDOUT (FORMAT binary)`; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
	r := piece{table: table, from: 10, to: 20, split: true}
	if got, want := r.sourceSQL(), `COPY (SELECT "a", "b" FROM ONLY "My Schema"."t" WHERE ctid >= '(10,0)'::tid AND ctid < '(20,0)'::tid) TO STDOUT (FORMAT binary)`; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
	table.Binary = false
	if got, want := r.targetSQL(), `COPY "My Schema"."t" ("a", "b") FROM STDIN`; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
	if whole.key() == r.key() {
		t.Errorf("a range and the whole table share the progress key %s", r.key())
	}
}

func TestTOCEntries(t *testing.T) {
	tests := []struct {
		rest      string
		acl       bool
		extension string
		owner     string
	}{
		{rest: "TABLE public accounts app_owner", owner: "app_owner"},
		{rest: "ACL public TABLE accounts app_owner", acl: true},
		{rest: "DEFAULT ACL public DEFAULT PRIVILEGES FOR TABLES postgres", acl: true},
		{rest: "EXTENSION - hstore", extension: "hstore"},
		{rest: "COMMENT - EXTENSION hstore"},
		{rest: "FUNCTION public total(integer) postgres", owner: "postgres"},
	}
	for _, tt := range tests {
		e := tocEntry{line: "1; 2 3 " + tt.rest, rest: tt.rest}
		if got := e.isACL(); got != tt.acl {
			t.Errorf("%q: isACL = %v", tt.rest, got)
		}
		if got, _ := e.extension(); got != tt.extension {
			t.Errorf("%q: extension = %q, want %q", tt.rest, got, tt.extension)
		}
		if got := e.owner(); got != tt.owner {
			t.Errorf("%q: owner = %q, want %q", tt.rest, got, tt.owner)
		}
	}
}

func TestReservedRoles(t *testing.T) {
	for name, want := range map[string]bool{"rdsadmin": true, "azure_pg_admin": true, "cloudsqlsuperuser": true, "pg_monitor": true, "app": false, "reporting": false} {
		if got := reservedRole(name); got != want {
			t.Errorf("reservedRole(%q) = %v, want %v", name, got, want)
		}
	}
}
