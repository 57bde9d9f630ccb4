package interactive

import (
	"context"
	"fmt"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	tea "charm.land/bubbletea/v2"

	"github.com/serenorg/postgres-seren-replicator/internal/conninfo"
	"github.com/serenorg/postgres-seren-replicator/internal/plan"
	"github.com/serenorg/postgres-seren-replicator/internal/selection"
	"github.com/serenorg/postgres-seren-replicator/tests/pgtest"
)

func table(db, schema, name string, bytes, rows int64) Table {
	return Table{Table: selection.Table{Database: db, Schema: schema, Name: name}, Bytes: bytes, Rows: rows}
}

// sample is three databases: app with a dozen log tables, shop, and an
// empty one.
func sample() []Database {
	app := Database{Name: "app", Bytes: 9 << 20}
	app.Tables = append(app.Tables, table("app", "public", "customers", 64<<10, 1000), table("app", "public", "orders", 1<<20, 20000))
	for i := 1; i <= 12; i++ {
		app.Tables = append(app.Tables, table("app", "public", fmt.Sprintf("event_log_%02d", i), 16<<10, -1))
	}
	return []Database{
		app,
		{Name: "empty", Bytes: 7 << 20},
		{Name: "shop", Bytes: 8 << 20, Tables: []Table{table("shop", "public", "x", 8192, 1), table("shop", "sales", "Y", 8192, 0)}},
	}
}

var sgr = regexp.MustCompile(`\x1b\[[0-9;?]*[a-zA-Z]`)

// driver feeds keys to a model the way bubbletea would and keeps its view.
type driver struct {
	t *testing.T
	m *model
}

func newDriver(t *testing.T, dbs []Database, multi bool) *driver {
	d := &driver{t: t, m: newModel(dbs, multi)}
	d.m.Update(tea.WindowSizeMsg{Width: 100, Height: 20})
	return d
}

// press sends keys: names such as "down", "space", "enter", "ctrl+a",
// "esc", "backspace", "ctrl+c", or text typed as runes.
func (d *driver) press(keys ...string) *driver {
	d.t.Helper()
	for _, k := range keys {
		var msg tea.KeyPressMsg
		switch k {
		case "up":
			msg.Code = tea.KeyUp
		case "down":
			msg.Code = tea.KeyDown
		case "space":
			msg.Code, msg.Text = tea.KeySpace, " "
		case "enter":
			msg.Code = tea.KeyEnter
		case "esc":
			msg.Code = tea.KeyEscape
		case "backspace":
			msg.Code = tea.KeyBackspace
		case "ctrl+a":
			msg.Code, msg.Mod = 'a', tea.ModCtrl
		case "ctrl+c":
			msg.Code, msg.Mod = 'c', tea.ModCtrl
		case "end":
			msg.Code = tea.KeyEnd
		case "home":
			msg.Code = tea.KeyHome
		default:
			for _, r := range k {
				d.m.Update(tea.KeyPressMsg{Code: r, Text: string(r)})
			}
			continue
		}
		d.m.Update(msg)
	}
	return d
}

func (d *driver) view() string { return sgr.ReplaceAllString(d.m.render(), "") }

func (d *driver) shows(want ...string) {
	d.t.Helper()
	v := d.view()
	for _, w := range want {
		if !strings.Contains(v, w) {
			d.t.Errorf("screen lacks %q:\n%s", w, v)
		}
	}
}

func (d *driver) hides(unwanted ...string) {
	d.t.Helper()
	v := d.view()
	for _, w := range unwanted {
		if strings.Contains(v, w) {
			d.t.Errorf("screen shows %q:\n%s", w, v)
		}
	}
}

func TestFlow(t *testing.T) {
	t.Run("databases, a filtered exclusion, keep all, summary", func(t *testing.T) {
		d := newDriver(t, sample(), true)
		d.shows("Databases to replicate", "> [ ] app", "9.0 MiB", "14 tables", "[ ] empty", "0 tables", "2 tables", "0 of 3 selected",
			"↑/↓ move • space select • ctrl+a all shown • type filter • enter confirm • ctrl+c cancel")
		d.press("enter")
		d.shows("Select at least one database")
		d.press("space", "down", "down", "space")
		d.shows("[x] app", "[ ] empty", "> [x] shop", "2 of 3 selected · 17.0 MiB")
		d.press("enter")
		d.shows("Tables of app to EXCLUDE", "(database 1 of 2)", "enter with none keeps all", "> [ ] public.customers", "~1,000 rows", "~20,000 rows", "? rows", "↓ 1 more",
			"space exclude • ctrl+a all shown • type filter • esc back • enter confirm")
		d.press("log", "_1")
		d.shows("filter: log_1", "(3 of 14 shown", "event_log_10", "event_log_12")
		d.hides("customers", "event_log_09")
		d.press("backspace")
		d.shows("(12 of 14 shown")
		d.press("ctrl+a")
		d.shows("excluding 12 of 14 tables")
		d.press("esc")
		d.shows("type to filter", "public.customers", "> [x] public.event_log_10")
		d.press("home", "down", "space")
		d.shows("excluding 13 of 14 tables")
		d.press("space", "enter")
		d.shows("Tables of shop to EXCLUDE", "(database 2 of 2)", `sales."Y"`)
		d.press("enter")
		d.shows("Summary", "Will be replicated:", "app   2 of 14 tables (12 excluded), 1.1 MiB", "shop  all 2 tables, 16.0 KiB",
			"Will not be replicated:", "empty  (database, 7.0 MiB)", "app.public.event_log_01  (table, 16.0 KiB)", "… and 8 more",
			"Proceed with this configuration? [Y/n]")
		d.press("y")
		if !d.m.confirmed || d.m.canceled {
			t.Fatalf("confirmed %v, canceled %v", d.m.confirmed, d.m.canceled)
		}
		d.shows("Proceed with this configuration? [Y/n] y")
		c := d.m.choice()
		if want := []string{"app", "shop"}; !reflect.DeepEqual(c.Databases, want) {
			t.Errorf("databases %v, want %v", c.Databases, want)
		}
		if n := len(c.Excluded["app"]); n != 12 || c.Excluded["app"][0].Name != "event_log_01" || len(c.Excluded["shop"]) != 0 {
			t.Errorf("excluded %v", c.Excluded)
		}
	})

	t.Run("every table excluded is refused; esc goes back", func(t *testing.T) {
		d := newDriver(t, sample(), true)
		d.press("down", "down", "space", "enter", "ctrl+a", "enter")
		d.shows("All 2 tables of shop are excluded")
		d.press("esc")
		d.shows("Databases to replicate", "[x] shop")
		d.press("space", "up", "up", "space", "enter", "enter")
		d.shows("Summary", "app  all 14 tables", "shop  (database")
		d.press("esc")
		d.shows("Tables of app to EXCLUDE")
		d.press("enter", "n")
		if d.m.confirmed || d.m.canceled || d.m.answered != "n" {
			t.Errorf("after n: confirmed %v, canceled %v, answered %q", d.m.confirmed, d.m.canceled, d.m.answered)
		}
	})

	t.Run("ctrl+c", func(t *testing.T) {
		for _, keys := range [][]string{{"ctrl+c"}, {"space", "enter", "ctrl+c"}, {"space", "enter", "enter", "ctrl+c"}} {
			d := newDriver(t, sample(), true)
			d.press(keys...)
			if !d.m.canceled || d.m.confirmed {
				t.Errorf("%v: canceled %v, confirmed %v", keys, d.m.canceled, d.m.confirmed)
			}
			if v := d.view(); v != "" {
				t.Errorf("%v: the canceled screen is not cleared:\n%s", keys, v)
			}
		}
	})

	t.Run("one database: straight to its tables", func(t *testing.T) {
		dbs := sample()[2:]
		d := newDriver(t, dbs, false)
		d.shows("Tables of shop to EXCLUDE")
		d.hides("database 1 of", "esc back")
		d.press("space", "enter")
		d.shows("shop  1 of 2 tables (1 excluded)")
		d.hides("Will not be replicated: nothing")
		d.press("enter")
		if c := d.m.choice(); !d.m.confirmed || len(c.Excluded["shop"]) != 1 || c.Excluded["shop"][0].Name != "x" {
			t.Errorf("confirmed %v, choice %+v", d.m.confirmed, c)
		}
	})

	t.Run("a long list scrolls with the cursor", func(t *testing.T) {
		d := newDriver(t, sample(), true)
		d.press("space", "enter", "end")
		d.shows("↑ 1 more", "> [ ] public.event_log_12")
		d.hides("public.customers")
	})
}

func TestRepeat(t *testing.T) {
	dbs := sample()
	logs := dbs[0].Tables[2:]
	tests := []struct {
		name  string
		c     Choice
		multi bool
		given Flags
		want  Flags
	}{
		{
			name:  "databases named, exclusions listed",
			c:     Choice{Databases: []string{"app", "shop"}, Excluded: map[string][]selection.Table{"shop": {dbs[2].Tables[1].Table}}},
			multi: true,
			given: Flags{ExcludeDatabases: []string{"legacy"}},
			want:  Flags{IncludeDatabases: []string{"app", "shop"}, ExcludeTables: []string{`shop.sales."Y"`}},
		},
		{
			name:  "given exclusions kept",
			c:     Choice{Databases: []string{"app"}, Excluded: map[string][]selection.Table{"app": {logs[0].Table}}},
			multi: true,
			given: Flags{ExcludeTables: []string{"app.*.tmp_*"}},
			want:  Flags{IncludeDatabases: []string{"app"}, ExcludeTables: []string{"app.*.tmp_*", "app.public.event_log_01"}},
		},
		{
			name:  "given entries that can only name databases left out dropped",
			c:     Choice{Databases: []string{"app"}, Excluded: map[string][]selection.Table{}},
			multi: true,
			given: Flags{IncludeDatabases: []string{"a*", "legacy"}, IncludeTables: []string{"legacy.old", "app.orders", "*.x"}, ExcludeTables: []string{"le*.y"}},
			want:  Flags{IncludeDatabases: []string{"app"}, IncludeTables: []string{"app.orders", "*.x"}},
		},
		{
			name:  "one database: the database flags as given",
			c:     Choice{Databases: []string{"shop"}, Excluded: map[string][]selection.Table{"shop": {dbs[2].Tables[0].Table}}},
			given: Flags{IncludeTables: []string{"shop.*"}},
			want:  Flags{IncludeTables: []string{"shop.*"}, ExcludeTables: []string{"shop.public.x"}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Repeat(tc.c, tc.multi, tc.given); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Repeat = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestExplicit(t *testing.T) {
	dbs := sample()
	all := plan.Plan{Multi: true}
	for _, d := range dbs[:1] {
		pd := plan.Database{Name: d.Name}
		for _, t := range d.Tables {
			pd.Tables = append(pd.Tables, t.Table)
		}
		pd.Tables = append(pd.Tables, selection.Table{Database: "app", Schema: "public", Name: "tmp_1"}) // left out by a given filter
		all.Databases = append(all.Databases, pd)
	}
	c := Choice{Databases: []string{"app"}, Excluded: map[string][]selection.Table{"app": {dbs[0].Tables[3].Table}}}
	got := Explicit(c, dbs, all, true, Flags{ExcludeTables: []string{"*.tmp_*"}, ExcludeDatabases: []string{"shop"}})
	want := Flags{IncludeDatabases: []string{"app"}, ExcludeTables: []string{"app.public.event_log_02", "app.public.tmp_1"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Explicit = %+v, want %+v", got, want)
	}
}

// TestLoad reads sizes and row estimates from a real cluster: a plain
// table, a partitioned one (its leaves summed) and one never analysed.
func TestLoad(t *testing.T) {
	c := pgtest.Start(t, pgtest.Options{})
	c.Exec("postgres", "CREATE DATABASE app")
	c.Exec("app", `CREATE TABLE plain (id int PRIMARY KEY, pad text);
		INSERT INTO plain SELECT g, repeat('x', 200) FROM generate_series(1, 5000) g;
		CREATE TABLE parted (id int) PARTITION BY RANGE (id);
		CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (0) TO (1000);
		CREATE TABLE parted_2 PARTITION OF parted FOR VALUES FROM (1000) TO (3000);
		INSERT INTO parted SELECT generate_series(0, 2999);
		ANALYZE plain; ANALYZE parted_1; ANALYZE parted_2;
		CREATE TABLE fresh (id int)`)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	src, err := conninfo.Parse(c.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := plan.Resolve(ctx, src, src, selection.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	dbs, err := Load(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if len(dbs) != 1 || dbs[0].Name != "app" || dbs[0].Bytes < 1<<20 {
		t.Fatalf("databases %+v", dbs)
	}
	got := map[string]Table{}
	for _, tb := range dbs[0].Tables {
		got[tb.Name] = tb
	}
	if tb := got["plain"]; tb.Rows != 5000 || tb.Bytes < 5000*200 {
		t.Errorf("plain: %d rows, %d bytes; want 5000 rows, over 1 MB", tb.Rows, tb.Bytes)
	}
	if tb := got["parted"]; tb.Rows != 3000 || tb.Bytes < 3*8192 {
		t.Errorf("parted: %d rows, %d bytes; want its partitions' 3000 rows and their pages", tb.Rows, tb.Bytes)
	}
	if tb := got["fresh"]; tb.Rows != -1 {
		t.Errorf("fresh: %d rows, want -1 (never analysed)", tb.Rows)
	}
	if len(got) != 3 {
		t.Errorf("tables %v, want plain, parted and fresh (no partitions)", got)
	}
}
