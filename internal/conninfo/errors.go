package conninfo

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// connectError wraps a failed connection attempt in one line that names the
// connection's side and the real cause, without the password. Failures the
// user fixes in the connection string or the server's configuration
// (unknown host, refused login, missing database, a certificate that does
// not verify, a server without TLS when TLS is required) wrap ErrConfig; others (server down, timeouts) stay runtime
// errors that keep the original error reachable for errors.Is and errors.As.
func connectError(c *Conn, err error) error {
	what := "connect " + c.String()
	if c.side != "" {
		what = "connect to " + c.side + " " + c.String()
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return &configError{msg: fmt.Sprintf("%s: unknown host %q", what, dnsErr.Name)}
	}
	cause := connectCause(err)
	msg := Redact(cause)
	// pgconn has no type for a server that answers "no TLS" to sslmode
	// require or verify-*; only its text tells it apart.
	if isConfigError(err) || strings.HasSuffix(cause, "server refused TLS connection") {
		return &configError{msg: what + ": " + msg}
	}
	return &redactedError{msg: what + ": " + msg, err: err}
}

// isConfigError reports whether a connection failed on something retrying
// will not change: the server refused the login or the database, or its
// certificate does not verify against the configured root.
func isConfigError(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "28P01", "28000", "3D000", "42501":
			return true
		}
	}
	return certificateError(err) != nil
}

// connectCause reduces a failed connection to one line saying why it failed.
// pgconn tries each address of each host, with sslmode prefer or allow twice
// (with and without TLS), and joins every failure: the first of the pair
// ("server refused TLS connection" against a server without TLS) hides the
// real cause. When a server answered (an error from PostgreSQL, or a
// certificate that does not verify), its last answer is the cause; the
// addresses that did not answer are noise beside it. Otherwise the last
// failure of each address is.
func connectCause(err error) string {
	var connErr *pgconn.ConnectError
	if !errors.As(err, &connErr) {
		return oneLine(err.Error())
	}
	inner := errors.Unwrap(connErr)
	if inner == nil {
		return oneLine(err.Error())
	}
	attempts := []error{inner}
	if joined, ok := inner.(interface{ Unwrap() []error }); ok {
		attempts = joined.Unwrap()
	}
	for i := len(attempts) - 1; i >= 0; i-- {
		var pgErr *pgconn.PgError
		if errors.As(attempts[i], &pgErr) {
			return fmt.Sprintf("%s (SQLSTATE %s)", pgErr.Message, pgErr.Code)
		}
		if cert := certificateError(attempts[i]); cert != nil {
			return "the server's certificate does not verify: " + oneLine(cert.Error())
		}
	}
	var causes []string
	byAddress := map[string]int{}
	for _, a := range attempts {
		address, text := splitAttempt(a)
		if i, seen := byAddress[address]; seen {
			causes[i] = text
			continue
		}
		byAddress[address] = len(causes)
		causes = append(causes, text)
	}
	var distinct []string
	for _, c := range causes {
		if !slices.Contains(distinct, c) {
			distinct = append(distinct, c)
		}
	}
	return strings.Join(distinct, "; ")
}

// splitAttempt splits one of pgconn's per-address failures, "address
// (host): what failed: why", into the address and the rest.
func splitAttempt(err error) (address, text string) {
	full := oneLine(err.Error())
	inner := errors.Unwrap(err)
	if inner == nil {
		return "", full
	}
	text = oneLine(inner.Error())
	return strings.TrimSuffix(full, ": "+text), text
}

// certificateError returns the reason a server certificate was rejected, or
// nil when err is not about one.
func certificateError(err error) error {
	var (
		unknownCA   x509.UnknownAuthorityError
		wrongHost   x509.HostnameError
		invalidCert x509.CertificateInvalidError
		verifyErr   *tls.CertificateVerificationError
	)
	switch {
	case errors.As(err, &unknownCA):
		return unknownCA
	case errors.As(err, &wrongHost):
		return wrongHost
	case errors.As(err, &invalidCert):
		return invalidCert
	case errors.As(err, &verifyErr):
		return verifyErr.Err
	}
	return nil
}

// oneLine joins the lines of a multi-line message.
func oneLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i := range lines {
		lines[i] = strings.TrimSpace(lines[i])
	}
	return strings.Join(lines, "; ")
}

// configError is an error the user fixes in the configuration: it is
// ErrConfig for errors.Is, without ErrConfig's text in its message, so it
// reads the same wherever a caller wraps it.
type configError struct{ msg string }

func (e *configError) Error() string        { return e.msg }
func (e *configError) Is(target error) bool { return target == ErrConfig }

// redactedError shows a scrubbed message but keeps the original error
// reachable for errors.Is and errors.As.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }
