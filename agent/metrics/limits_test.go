package metrics

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/uplink"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// testLimits are short limits, so that the tests wait little; the bounds the tests wait for
// are generous multiples of them.
var testLimits = serverLimits{
	ReadHeaderTimeout: 200 * time.Millisecond,
	ReadTimeout:       300 * time.Millisecond,
	WriteTimeout:      2 * time.Second,
	IdleTimeout:       300 * time.Millisecond,
	MaxHeaderBytes:    4 << 10,
}

// startLimited serves test sources with lim on a loopback port and returns its address.
func startLimited(t *testing.T, lim serverLimits) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := Sources{
		Spool:   func() *wirev1.SpoolStats { return &wirev1.SpoolStats{Depth: 7} },
		Uplink:  func() uplink.Stats { return uplink.Stats{Connected: true} },
		AgentID: "a-1", Entity: "acme",
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serveListener(ctx, ln, s, slog.New(slog.DiscardHandler), lim) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return ln.Addr().String()
}

// closedWithin reads c until the server closes it, and fails if that takes more than d.
func closedWithin(t *testing.T, c net.Conn, r io.Reader, d time.Duration) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, r)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the server kept the connection open for %v", d)
	}
}

// TestListenerLimits: a client that stalls or trickles cannot hold a connection open past the
// listener's limits, oversized headers are refused, and ordinary scrapes still work.
func TestListenerLimits(t *testing.T) {
	const bound = 5 * time.Second // far above the limits: only a missing limit reaches it
	cases := []struct {
		name string
		run  func(t *testing.T, c net.Conn)
	}{
		{"headers then a body that never comes", func(t *testing.T, c net.Conn) {
			if _, err := io.WriteString(c, "GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			closedWithin(t, c, c, bound)
		}},
		{"headers trickling in", func(t *testing.T, c net.Conn) {
			stop := make(chan struct{})
			defer close(stop)
			go func() {
				if _, err := io.WriteString(c, "GET /metrics HTTP/1.1\r\nHost: x\r\n"); err != nil {
					return
				}
				tk := time.NewTicker(20 * time.Millisecond)
				defer tk.Stop()
				for {
					select {
					case <-stop:
						return
					case <-tk.C:
						if _, err := io.WriteString(c, "X-A: b\r\n"); err != nil {
							return
						}
					}
				}
			}()
			closedWithin(t, c, c, bound)
		}},
		{"idle keep-alive connection", func(t *testing.T, c net.Conn) {
			if _, err := io.WriteString(c, "GET /status HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(c)
			_ = c.SetReadDeadline(time.Now().Add(bound))
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d", resp.StatusCode)
			}
			closedWithin(t, c, br, bound)
		}},
		{"oversized headers", func(t *testing.T, c net.Conn) {
			req := "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 64<<10) + "\r\n\r\n"
			go func() { _, _ = io.WriteString(c, req) }()
			_ = c.SetReadDeadline(time.Now().Add(bound))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
				t.Fatalf("status %d, want 431", resp.StatusCode)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			addr := startLimited(t, testLimits)
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			tc.run(t, c)
		})
	}
}

// TestListenerScrapes: scrapes (several on one keep-alive connection, as Prometheus does) work
// under the limits; only GET is served.
func TestListenerScrapes(t *testing.T) {
	addr := startLimited(t, testLimits)
	cl := &http.Client{Timeout: 5 * time.Second}
	for i := range 3 {
		for _, path := range []string{"/metrics", StatusPath} {
			resp, err := cl.Get("http://" + addr + path)
			if err != nil {
				t.Fatalf("scrape %d %s: %v", i, path, err)
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("scrape %d %s: %d %v", i, path, resp.StatusCode, err)
			}
			if path == "/metrics" && !strings.Contains(string(b), "vigil_agent_spool_depth 7") {
				t.Fatalf("scrape %d: no spool depth", i)
			}
		}
		time.Sleep(50 * time.Millisecond) // idle, but below IdleTimeout
	}
	resp, err := cl.Post("http://"+addr+"/metrics", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST: %d, want 405", resp.StatusCode)
	}
}
