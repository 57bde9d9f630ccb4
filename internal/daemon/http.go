// Package daemon holds what running as a service needs: the HTTP endpoint
// for Prometheus and health probes, and the systemd notification protocol
// (READY, STATUS, WATCHDOG, STOPPING).
package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// ShutdownTimeout bounds how long Serve waits for open requests when its
// context ends.
const ShutdownTimeout = 5 * time.Second

// Serve listens on addr and serves /metrics from reg, /healthz (200 while the
// process runs) and /readyz (200 when ready returns nil, 503 with the reason
// otherwise; a nil ready is always ready). It returns nil once ctx ends and
// the server has shut down, or the error that stopped it (such as the
// address being in use).
func Serve(ctx context.Context, addr string, reg *prometheus.Registry, ready func() error) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics listen on %s: %w", addr, err)
	}
	return ServeListener(ctx, l, reg, ready)
}

// ServeListener is Serve on a listener the caller opened (for example to
// fail early on a busy port, or to use port 0 in tests). It closes l.
func ServeListener(ctx context.Context, l net.Listener, reg *prometheus.Registry, ready func() error) error {
	srv := &http.Server{Handler: Handler(reg, ready), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case err := <-errc:
		return fmt.Errorf("metrics server: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	if serveErr := <-errc; !errors.Is(serveErr, http.ErrServerClosed) && err == nil {
		err = serveErr
	}
	if err != nil {
		return fmt.Errorf("metrics server shutdown: %w", err)
	}
	return nil
}

// Handler is the mux Serve uses.
func Handler(reg *prometheus.Registry, ready func() error) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if ready != nil {
			if err := ready(); err != nil {
				w.WriteHeader(http.StatusServiceUnavailable)
				fmt.Fprintf(w, "not ready: %v\n", err)
				return
			}
		}
		fmt.Fprintln(w, "ready")
	})
	return mux
}

// Readiness collects per-database readiness for /readyz. The zero value is
// not ready ("starting") until Set is called at least once. Safe for
// concurrent use; a nil *Readiness is never ready.
type Readiness struct {
	mu      sync.Mutex
	reasons map[string]error
}

// Set records key's state (for example a database name): nil when it is
// streaming with lag under the threshold, otherwise why it is not.
func (r *Readiness) Set(key string, err error) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.reasons == nil {
		r.reasons = make(map[string]error)
	}
	r.reasons[key] = err
}

// Check returns nil when every key set is ready, otherwise the reasons in
// key order. Pass it as Serve's ready function.
func (r *Readiness) Check() error {
	if r == nil {
		return errors.New("starting")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.reasons) == 0 {
		return errors.New("starting")
	}
	keys := make([]string, 0, len(r.reasons))
	for k, err := range r.reasons {
		if err != nil {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return nil
	}
	sort.Strings(keys)
	msgs := make([]string, len(keys))
	for i, k := range keys {
		msgs[i] = k + ": " + r.reasons[k].Error()
	}
	return errors.New(strings.Join(msgs, "; "))
}
