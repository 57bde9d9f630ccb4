package verify

import (
	"fmt"
	"slices"
	"testing"
)

func TestDiffRows(t *testing.T) {
	kh := func(key string, h int64) keyedHash { return keyedHash{key: []string{key}, hash: h} }
	src := []keyedHash{kh("1", 10), kh("2", 20), kh("3", 30), kh("", 0)}
	dst := []keyedHash{kh("1", 10), kh("3", 31), kh("4", 40), kh("", 0)}
	var got []string
	for _, d := range diffRows(src, dst) {
		got = append(got, fmt.Sprintf("%s:%v", d.Kind, d.Key))
	}
	want := []string{"missing_on_target:[2]", "changed:[3]", "extra_on_target:[4]"}
	if !slices.Equal(got, want) {
		t.Errorf("diffRows = %q, want %q", got, want)
	}
	if !equalRows(src, src) || equalRows(src, dst) {
		t.Error("equalRows disagrees with itself")
	}
	// A target without the source's unique key may hold a key twice: the
	// second row is extra, even when both copies equal the source's row.
	got = nil
	for _, d := range diffRows([]keyedHash{kh("1", 10), kh("2", 20)}, []keyedHash{kh("1", 10), kh("2", 20), kh("2", 20)}) {
		got = append(got, fmt.Sprintf("%s:%v", d.Kind, d.Key))
	}
	if want := []string{"extra_on_target:[2]"}; !slices.Equal(got, want) {
		t.Errorf("diffRows with a key twice on the target = %q, want %q", got, want)
	}
}

func TestWhere(t *testing.T) {
	one := []column{{name: "id", typ: "bigint"}}
	two := []column{{name: "A b", typ: "integer"}, {name: "c", typ: "text"}}
	tests := []struct {
		key  []column
		r    keyRange
		sql  string
		args int
	}{
		{one, keyRange{}, "true", 0},
		{one, keyRange{from: []string{"5"}}, `"id" >= $1::text::bigint`, 1},
		{one, keyRange{from: []string{"5"}, to: []string{"9"}}, `"id" >= $1::text::bigint AND "id" < $2::text::bigint`, 2},
		{two, keyRange{to: []string{"1", "x"}}, `("A b", "c") < ($1::text::integer, $2::text::text)`, 2},
	}
	for _, tc := range tests {
		sql, args := where(tc.key, tc.r)
		if sql != tc.sql || len(args) != tc.args {
			t.Errorf("where(%v) = %q with %d args, want %q with %d", tc.r, sql, len(args), tc.sql, tc.args)
		}
	}
}

func TestFormat(t *testing.T) {
	tests := []struct{ got, want string }{
		{FormatKey([]string{"id"}, []string{"42"}), "id=42"},
		{FormatKey([]string{"a", `Key "K"`}, []string{"1", "x"}), `a=1, "Key ""K"""=x`},
		{FormatRange([]string{"id"}, nil, []string{"7"}), "[-inf .. id=7)"},
		{quoteIdent("Táble"), `"Táble"`},
		{quoteIdent("t_1"), "t_1"},
	}
	for _, tc := range tests {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

func TestFinishUnconfirmed(t *testing.T) {
	row := func(unconfirmed bool) RowDiff {
		return RowDiff{Kind: Changed, Key: []string{"1"}, Unconfirmed: unconfirmed}
	}
	tests := []struct {
		name   string
		ranges []RangeDiff
		unsure bool
		want   bool
		text   string
	}{
		{"no differences", nil, false, false, "-"},
		{"one row confirmed", []RangeDiff{{Unconfirmed: true, Complete: true, Rows: []RowDiff{row(true), row(false)}}}, false, false, "2 rows in 1 range"},
		{"range confirmed, rows not", []RangeDiff{{Complete: true, Rows: []RowDiff{row(true)}}}, false, false, "1 row in 1 range"},
		{"nothing confirmed", []RangeDiff{{Unconfirmed: true, Complete: true, Rows: []RowDiff{row(true)}}, {Unconfirmed: true}}, false, true,
			"at least 1 row in 2 ranges (limit reached), unconfirmed (seen while sync applied changes)"},
		{"sync applied during a direct comparison", []RangeDiff{{Complete: true, Rows: []RowDiff{row(false)}}}, true, true,
			"1 row in 1 range, unconfirmed (seen while sync applied changes)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tj := &tableJob{rep: TableReport{Key: []string{"id"}, Ranges: tc.ranges}, unsure: tc.unsure}
			tj.finish()
			if got := tj.rep.Unconfirmed; got != tc.want {
				t.Errorf("Unconfirmed = %v, want %v", got, tc.want)
			}
			if got := summary(tj.rep); got != tc.text {
				t.Errorf("summary = %q, want %q", got, tc.text)
			}
		})
	}
}
