package conninfo

import (
	"slices"
	"strings"
	"testing"
)

func TestLibpqKeepsThePasswordOffTheCommandLine(t *testing.T) {
	tests := []struct {
		dsn, db, want string
	}{
		{"postgres://u:s3cret-pw@h:5433/a?sslmode=require", "b", "postgres://u@h:5433/b?sslmode=require"},
		{"host=h port=5433 user=u password='s3cret-pw' dbname=a sslmode=disable", "b", "host=h port=5433 user=u  dbname=a sslmode=disable dbname='b'"},
		{"host=h user=u password=s3cret-pw dbname=a", "it's", `host=h user=u  dbname=a dbname='it\'s'`},
	}
	for _, tt := range tests {
		c, err := Parse(tt.dsn)
		if err != nil {
			t.Fatal(err)
		}
		got, env := c.WithDatabase(tt.db).Libpq()
		if got != tt.want {
			t.Errorf("Libpq(%q) = %q, want %q", tt.dsn, got, tt.want)
		}
		if strings.Contains(got, "s3cret") {
			t.Errorf("password in %q", got)
		}
		if !slices.Contains(env, "PGPASSWORD=s3cret-pw") {
			t.Errorf("env %v lacks PGPASSWORD", env)
		}
	}
}
