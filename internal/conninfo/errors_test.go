package conninfo

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A refused port with the default sslmode (prefer) fails twice on the same
// address, with and without TLS: the error says so once, on one line, and
// names the side.
func TestConnectErrorIsOneLine(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close() // nothing listens there now
	c, err := Parse("host=127.0.0.1 user=u password=pw-9931 dbname=db port=" + strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = c.Named("target").ConnectPg(ctx)
	if err == nil {
		t.Fatal("connected to a closed port")
	}
	msg := err.Error()
	if strings.Contains(msg, "\n") || strings.Count(msg, "connection refused") != 1 ||
		!strings.HasPrefix(msg, "connect to target u@127.0.0.1:") || strings.Contains(msg, "pw-9931") {
		t.Errorf("error = %q, want one line naming the target and the refused connection once", msg)
	}
	if errors.Is(err, ErrConfig) {
		t.Errorf("a refused port is not a configuration error: %v", err)
	}
}

// With several hosts and none answering, the cause is named once with every
// address that failed that way, still on one line.
func TestConnectErrorNamesEachAddress(t *testing.T) {
	var ports []string
	for range 2 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ports = append(ports, strconv.Itoa(l.Addr().(*net.TCPAddr).Port))
		l.Close()
	}
	c, err := Parse("host=127.0.0.1,127.0.0.1 user=u dbname=db port=" + strings.Join(ports, ","))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = c.Named("source").ConnectPg(ctx)
	if err == nil {
		t.Fatal("connected to closed ports")
	}
	msg := err.Error()
	want := "connection refused at 127.0.0.1:" + ports[0] + ", 127.0.0.1:" + ports[1]
	if strings.Contains(msg, "\n") || strings.Count(msg, "connection refused") != 1 || !strings.HasSuffix(msg, want) {
		t.Errorf("error = %q, want one line ending %q", msg, want)
	}
}
