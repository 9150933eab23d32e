package export

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/server/store"
)

// lockedBuffer is a bytes.Buffer safe for the forwarder's goroutine.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestWebhookErrorHidesURLSecret: a webhook URL's query may carry a secret
// (?token=...). A failed delivery must not put it into the logs or
// Stats.LastError (the HTTP client's *url.Error quotes the whole URL).
func TestWebhookErrorHidesURLSecret(t *testing.T) {
	const secret = "SECRET-4f0c1d"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens: every delivery fails
	hookURL := "http://" + addr + "/hook?token=" + secret

	t.Run("Send", func(t *testing.T) {
		s, err := newWebhookSender(ForwarderConfig{URL: hookURL, Format: FormatJSON, Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		db := openDB(t)
		fill(t, db, "acme", 1, 1)
		fs, err := db.ListFindings(context.Background(), store.FindingFilter{Ascending: true})
		if err != nil {
			t.Fatal(err)
		}
		err = s.Send(context.Background(), fs)
		if err == nil {
			t.Fatal("delivery to a closed port succeeded")
		}
		if msg := err.Error(); strings.Contains(msg, secret) || !strings.Contains(msg, addr+"/hook") {
			t.Errorf("error %q: want the URL without its query", msg)
		}
	})

	t.Run("Runner", func(t *testing.T) {
		db := openDB(t)
		fill(t, db, "acme", 1, 3)
		var logs lockedBuffer
		log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		cfg := Config{Forwarders: []ForwarderConfig{{Name: "hook", Type: "webhook", URL: hookURL, Batch: 10,
			Interval: 20 * time.Millisecond, MaxBackoff: 50 * time.Millisecond}}}
		r, err := Start(context.Background(), db, cfg, log)
		if err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for r.Stats()["hook"].Failures < 2 {
			if time.Now().After(deadline) {
				r.Stop()
				t.Fatalf("no failed delivery recorded: %+v", r.Stats()["hook"])
			}
			time.Sleep(10 * time.Millisecond)
		}
		r.Stop()
		st := r.Stats()["hook"]
		if strings.Contains(st.LastError, secret) || st.LastError == "" {
			t.Errorf("Stats.LastError %q: want the error without the URL's secret", st.LastError)
		}
		if l := logs.String(); strings.Contains(l, secret) || !strings.Contains(l, "delivery failed") {
			t.Errorf("logs: want the failures logged without the URL's secret:\n%s", l)
		}
	})

	t.Run("Validate", func(t *testing.T) {
		for _, u := range []string{"ftp://siem.example/hook?token=" + secret, "http://siem.example/hook?token=" + secret} {
			fc := ForwarderConfig{URL: u}
			err := fc.validateWebhook()
			if err == nil {
				t.Fatalf("%s: accepted", u)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("config error %q shows the URL's secret", err)
			}
		}
	})
}
