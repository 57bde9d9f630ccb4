package interactive

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/serenorg/postgres-seren-replicator/internal/conninfo"
	"github.com/serenorg/postgres-seren-replicator/internal/plan"
	"github.com/serenorg/postgres-seren-replicator/internal/selection"
	"github.com/serenorg/postgres-seren-replicator/tests/pgtest"
)

func TestParseAnswer(t *testing.T) {
	tests := []struct {
		answer string
		n      int
		want   []int
		bad    bool
	}{
		{answer: "", n: 3, want: []int{0, 1, 2}},
		{answer: "  all ", n: 2, want: []int{0, 1}},
		{answer: "2", n: 3, want: []int{1}},
		{answer: "3, 1,3", n: 3, want: []int{0, 2}},
		{answer: "2-4,1", n: 5, want: []int{0, 1, 2, 3}},
		{answer: "1,,2,", n: 2, want: []int{0, 1}},
		{answer: "0", n: 3, bad: true},
		{answer: "4", n: 3, bad: true},
		{answer: "x", n: 3, bad: true},
		{answer: "3-1", n: 3, bad: true},
		{answer: ",", n: 3, bad: true},
	}
	for _, tc := range tests {
		got, err := ParseAnswer(tc.answer, tc.n)
		if tc.bad {
			if err == nil {
				t.Errorf("ParseAnswer(%q, %d) = %v, want an error", tc.answer, tc.n, got)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseAnswer(%q, %d) = %v, %v; want %v", tc.answer, tc.n, got, err, tc.want)
		}
	}
}

// TestChoose answers the prompts for a plan resolved from a real cluster
// and checks that the filters it returns select exactly the choice, also
// when resolved again from scratch.
func TestChoose(t *testing.T) {
	c := pgtest.Start(t, pgtest.Options{})
	c.Exec("postgres", "CREATE DATABASE app")
	c.Exec("postgres", "CREATE DATABASE shop")
	c.Exec("app", "CREATE TABLE a (id int); CREATE TABLE b (id int); CREATE SCHEMA s; CREATE TABLE s.c (id int)")
	c.Exec("shop", `CREATE TABLE x (id int); CREATE TABLE "Y" (id int)`)
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

	tests := []struct {
		name       string
		input      string
		wantTables map[string][]string // database -> schema.table
		wantFlags  string
	}{
		{
			name:       "one database, one table, after a wrong answer",
			input:      "9\n2\n2\n",
			wantTables: map[string][]string{"shop": {"public.x"}},
			wantFlags:  "--include-databases=shop --include-tables=shop.public.x",
		},
		{
			name:       "enter for all databases, some tables",
			input:      "\n1,3\n\n",
			wantTables: map[string][]string{"app": {"public.a", "s.c"}, "shop": {`public."Y"`, "public.x"}},
			wantFlags:  "--include-databases=app,shop --include-tables=app.public.a,app.s.c",
		},
		{
			name:       "everything",
			input:      "\n\n\n",
			wantTables: map[string][]string{"app": {"public.a", "public.b", "s.c"}, "shop": {`public."Y"`, "public.x"}},
			wantFlags:  "--include-databases=app,shop",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out strings.Builder
			f, err := Choose(strings.NewReader(tc.input), &out, p)
			if err != nil {
				t.Fatalf("Choose: %v\n%s", err, out.String())
			}
			if got := Flags(f); got != tc.wantFlags {
				t.Errorf("Flags = %s, want %s", got, tc.wantFlags)
			}
			narrowed, err := Narrow(p, f)
			if err != nil {
				t.Fatalf("Narrow: %v", err)
			}
			if got := tablesOf(narrowed); !reflect.DeepEqual(got, tc.wantTables) {
				t.Errorf("Narrow selects %v, want %v", got, tc.wantTables)
			}
			again, err := plan.Resolve(ctx, src, src, f)
			if err != nil {
				t.Fatalf("Resolve with the chosen filter: %v", err)
			}
			if got := tablesOf(again); !reflect.DeepEqual(got, tc.wantTables) {
				t.Errorf("Resolve with the chosen filter selects %v, want %v", got, tc.wantTables)
			}
		})
	}

	t.Run("prompts", func(t *testing.T) {
		var out strings.Builder
		if _, err := Choose(strings.NewReader("0\n1\n\n"), &out, p); err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"1) app (3 tables)", "2) shop (2 tables)", "0 is not between 1 and 2; try again", "Tables of app:", "3) s.c", "enter for all"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("prompts lack %q:\n%s", want, out.String())
			}
		}
	})

	t.Run("end of input", func(t *testing.T) {
		_, err := Choose(strings.NewReader("1\n"), &strings.Builder{}, p)
		if !errors.Is(err, selection.ErrInvalid) {
			t.Errorf("err = %v, want selection.ErrInvalid", err)
		}
	})
}

func tablesOf(p plan.Plan) map[string][]string {
	out := map[string][]string{}
	for _, d := range p.Databases {
		out[d.Name] = []string{}
		for _, t := range d.Tables {
			out[d.Name] = append(out[d.Name], t.Qualified())
		}
	}
	return out
}
