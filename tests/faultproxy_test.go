package tests

import (
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// faultProxy is a loopback TCP proxy in front of a server that can break
// the connections through it the ways networks do: reset them, or turn them
// into black holes that stay open and carry nothing (a dropped route, a
// firewall that discards packets). New connections always pass.
type faultProxy struct {
	ln       net.Listener
	upstream string

	mu    sync.Mutex
	links []*proxyLink
	wg    sync.WaitGroup
}

// proxyLink is one client connection and its upstream twin.
type proxyLink struct {
	client, server net.Conn
	hole           atomic.Bool
}

// startProxy listens on a free loopback port and forwards to upstream
// (host:port) until the test ends.
func startProxy(t *testing.T, upstream string) *faultProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{ln: ln, upstream: upstream}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		ln.Close()
		p.Reset()
		p.wg.Wait()
	})
	return p
}

// Port is the port clients connect to.
func (p *faultProxy) Port() int { return p.ln.Addr().(*net.TCPAddr).Port }

// URL is a postgres:// URL for the superuser and db through the proxy.
func (p *faultProxy) URL(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", p.Port(), db)
}

func (p *faultProxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", p.upstream)
		if err != nil {
			client.Close()
			continue
		}
		l := &proxyLink{client: client, server: server}
		p.mu.Lock()
		p.links = append(p.links, l)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pump(l, client, server)
		go p.pump(l, server, client)
	}
}

// pump copies from one side to the other, discarding what it reads while
// the link is a black hole (the sender sees its writes succeed).
func (p *faultProxy) pump(l *proxyLink, from, to net.Conn) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := from.Read(buf)
		if n > 0 && !l.hole.Load() {
			if _, werr := to.Write(buf[:n]); werr != nil {
				from.Close()
				return
			}
		}
		if err != nil {
			if !l.hole.Load() { // a black hole does not pass the close on either
				to.Close()
			}
			return
		}
	}
}

// BlackholeExisting makes every open connection carry nothing from now on,
// while staying open; connections made later work.
func (p *faultProxy) BlackholeExisting() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.links {
		l.hole.Store(true)
	}
}

// Reset closes every open connection on both sides.
func (p *faultProxy) Reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.links {
		l.client.Close()
		l.server.Close()
	}
	p.links = nil
}
