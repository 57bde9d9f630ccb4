package conninfo

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestHasPassword(t *testing.T) {
	tests := []struct {
		dsn  string
		want bool
	}{
		{"postgres://u:pw@h/db", true},
		{"postgresql://u:pw@h:5433/db?sslmode=require", true},
		{"postgres://u@h/db?password=pw", true},
		{"postgres://u@h/db", false},
		{"postgres://u:@h/db", false},
		{"postgres://h/db?sslmode=verify-full&sslrootcert=/etc/ca.pem", false},
		{"host=h user=u password=pw dbname=db", true},
		{"password='p w' host=h", true},
		{"host=h password = pw", true},
		{"host=h user=u dbname=db", false},
		{"host=h sslpassword=keypw sslkey=/k", false},
		{"host=h password=''", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := HasPassword(tt.dsn); got != tt.want {
			t.Errorf("HasPassword(%q) = %v, want %v", tt.dsn, got, tt.want)
		}
	}
}

func TestReadPasswordFile(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, content string
		want          string
		wantErr       string
	}{
		{"line", "s3cret pw\n", "s3cret pw", ""},
		{"no newline", "s3cret", "s3cret", ""},
		{"crlf", "s3cret\r\n", "s3cret", ""},
		{"first line only", "s3cret\nsecond\n", "s3cret", ""},
		{"spaces kept", " s3cret \n", " s3cret ", ""},
		{"empty", "", "", "first line is empty"},
		{"empty first line", "\ns3cret\n", "", "first line is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "_"))
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := ReadPasswordFile(path)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ReadPasswordFile = %q, %v; want an error with %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ReadPasswordFile = %q, %v; want %q", got, err, tt.want)
			}
			if len(got) >= 3 && strings.Contains(Redact("x "+got+" y"), got) {
				t.Errorf("password %q is not redacted after reading", got)
			}
		})
	}
	if _, err := ReadPasswordFile(filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing file: err = %v", err)
	}
}

func TestWithPasswordKeepsTheRest(t *testing.T) {
	c, err := Parse("postgres://u@h:5433/a?sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	got := c.WithPassword("from-file-pw").Named("source").WithDatabase("b")
	cfg := got.Config()
	if cfg.Password != "from-file-pw" || cfg.User != "u" || cfg.Port != 5433 || cfg.Database != "b" {
		t.Errorf("config = %s:%s@%d/%s", cfg.User, cfg.Password, cfg.Port, cfg.Database)
	}
	if got.side != "source" {
		t.Errorf("side = %q, want source", got.side)
	}
	if _, env := got.Libpq(); len(env) != 1 || env[0] != "PGPASSWORD=from-file-pw" {
		t.Errorf("Libpq env = %v", env)
	}
}
