package conninfo

import (
	"bytes"
	"fmt"
	"io"
	"net/url"
	"os"
	"regexp"
	"strings"
)

// maxPasswordFile bounds what ReadPasswordFile reads: a password file holds
// one line, and a path to something else (a log, a device) must not be read
// whole.
const maxPasswordFile = 64 << 10

// ReadPasswordFile returns the password a file holds: its first line,
// without the line ending. The password is registered for redaction.
func ReadPasswordFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("read password file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxPasswordFile))
	if err != nil {
		return "", fmt.Errorf("read password file %s: %w", path, err)
	}
	line, _, _ := bytes.Cut(data, []byte("\n"))
	pw := string(bytes.TrimSuffix(line, []byte("\r")))
	if pw == "" {
		return "", fmt.Errorf("password file %s: the first line is empty", path)
	}
	Register(pw)
	return pw, nil
}

// kvPasswordSetting finds a password setting in a keyword/value string: the
// keyword at the start or after white space, so sslpassword does not count.
var kvPasswordSetting = regexp.MustCompile(`(?:^|\s)password\s*=\s*('(?:[^'\\]|\\.)+'|[^'\s]\S*)`)

// HasPassword reports whether a connection string itself carries a password
// (a URL's user information or password parameter, or a password keyword),
// as opposed to one libpq's fallbacks (PGPASSWORD, the password file) supply.
func HasPassword(dsn string) bool {
	dsn = strings.TrimSpace(dsn)
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return urlPassword.MatchString(dsn)
		}
		if u.User != nil {
			if pw, ok := u.User.Password(); ok && pw != "" {
				return true
			}
		}
		return u.Query().Get("password") != ""
	}
	return kvPasswordSetting.MatchString(dsn)
}

// WithPassword returns the same connection with another password, which is
// registered for redaction.
func (c *Conn) WithPassword(password string) *Conn {
	Register(password)
	cfg := c.cfg.Copy()
	cfg.Password = password
	return &Conn{cfg: cfg, raw: c.raw, side: c.side}
}
