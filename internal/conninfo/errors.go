package conninfo

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
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
	if isConfigError(err) || cause == noTLS {
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
// real cause. When a server answered (an error from PostgreSQL, a
// certificate that does not verify, or "no TLS" to a connection that
// requires it), its last answer is the cause; the addresses that did not
// answer are noise beside it. Otherwise the causes are named once each,
// with the addresses that failed that way ("connection refused at
// 127.0.0.1:5432, [::1]:5432"), so localhost resolving to two addresses
// does not say the same thing twice.
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
		if refusedTLS(attempts[i]) {
			return noTLS
		}
	}
	var causes []string
	where := map[string][]string{}
	for _, a := range attempts {
		address, text := splitAttempt(a)
		if !slices.Contains(causes, text) {
			causes = append(causes, text)
		}
		if address != "" && !slices.Contains(where[text], address) {
			where[text] = append(where[text], address)
		}
	}
	for i, c := range causes {
		if len(where[c]) > 0 {
			causes[i] = c + " at " + strings.Join(where[c], ", ")
		}
	}
	return strings.Join(causes, "; ")
}

// noTLS is the cause given when a server answers that it has no TLS to a
// connection whose sslmode requires TLS.
const noTLS = "the server does not accept TLS connections, and sslmode (require, verify-ca or verify-full) needs one: enable ssl on the server, or use sslmode=prefer"

// refusedTLS reports whether attempt failed because the server answered
// that it has no TLS. pgconn has no type for it; only its text tells.
func refusedTLS(attempt error) bool {
	return strings.HasSuffix(attempt.Error(), "server refused TLS connection")
}

// splitAttempt reduces one of pgconn's per-address failures to the address
// it tried and why it failed: "dial error: dial tcp 127.0.0.1:5432:
// connect: connection refused" becomes ("127.0.0.1:5432", "connection
// refused"). Failures that are not a network error keep their text and no
// address.
func splitAttempt(err error) (address, text string) {
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Err != nil {
		text = oneLine(opErr.Err.Error())
		var sysErr *os.SyscallError
		if errors.As(opErr.Err, &sysErr) && sysErr.Err != nil {
			text = oneLine(sysErr.Err.Error())
		}
		if opErr.Addr != nil {
			address = opErr.Addr.String()
		}
		return address, text
	}
	return "", oneLine(err.Error())
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
