package conninfo

import (
	"net/url"
	"strings"
)

// Libpq returns what a libpq client program (pg_dump, pg_restore, psql) needs
// to reach the same server and database: a connection string without the
// password, safe to appear in a process listing, and the environment
// variables (PGPASSWORD) that carry the secret. The connection string names
// the connection's current database, so WithDatabase is honoured.
func (c *Conn) Libpq() (connString string, env []string) {
	raw := strings.TrimSpace(c.raw)
	if c.cfg.Password != "" {
		env = append(env, "PGPASSWORD="+c.cfg.Password)
	}
	if strings.HasPrefix(raw, "postgres://") || strings.HasPrefix(raw, "postgresql://") {
		if u, err := url.Parse(raw); err == nil {
			if u.User != nil {
				u.User = url.User(u.User.Username())
			}
			q := u.Query()
			q.Del("password")
			q.Del("dbname")
			u.RawQuery = q.Encode()
			u.Path = "/" + c.cfg.Database
			u.RawPath = ""
			return u.String(), env
		}
		raw = ""
	}
	raw = kvPassword.ReplaceAllString(raw, "")
	// libpq keeps the last value of a repeated keyword.
	return strings.TrimSpace(raw + " dbname=" + kvQuote(c.cfg.Database)), env
}

func kvQuote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}
