package main

import (
	"slices"
	"testing"
)

func TestAccessFixes(t *testing.T) {
	own := []string{"DELETE =owner", "INSERT =owner", "SELECT =owner"}
	tests := []struct {
		name string
		s, d tableAccess
		want []string
	}{
		{"same", tableAccess{"app", own}, tableAccess{"app", own}, nil},
		{"owner only", tableAccess{"app", own}, tableAccess{"applier", own},
			[]string{`ALTER TABLE t OWNER TO "app";`}},
		{"grant missing", tableAccess{"app", append(slices.Clone(own), "SELECT reader", "SELECT =public")}, tableAccess{"app", own},
			[]string{`GRANT SELECT ON TABLE t TO "reader";`, `GRANT SELECT ON TABLE t TO PUBLIC;`}},
		{"grant extra", tableAccess{"app", own}, tableAccess{"app", append(slices.Clone(own), "UPDATE applier")},
			[]string{`REVOKE UPDATE ON TABLE t FROM "applier";`}},
		{"owner's own revoked on the source", tableAccess{"app", own[1:]}, tableAccess{"app", own},
			[]string{`REVOKE DELETE ON TABLE t FROM "app";`}},
		{"new owner granted before", tableAccess{"app", own}, tableAccess{"applier", append(slices.Clone(own), "SELECT app")},
			[]string{`ALTER TABLE t OWNER TO "app";`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := accessFixes("t", tt.s, tt.d); !slices.Equal(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}
