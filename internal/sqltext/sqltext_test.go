package sqltext

import "testing"

func TestLiteral(t *testing.T) {
	for in, want := range map[string]string{"": "''", "a": "'a'", "it's": "'it''s'", `a\b`: `'a\b'`, "''": "''''''"} {
		if got := Literal(in); got != want {
			t.Errorf("Literal(%q) = %s, want %s", in, got, want)
		}
	}
}
