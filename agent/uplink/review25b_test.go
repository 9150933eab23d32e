package uplink

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/vigil-edge/vigil/agent/spool"
	"github.com/vigil-edge/vigil/agent/state"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// TestRefusedCountSurvivesRestart: a finding the server refused and the
// uplink dropped is a lost finding; its count (uplink_findings_refused)
// must not go back to zero when the agent restarts, as the spool's own
// drop count does not. It was kept in memory only.
func TestRefusedCountSurvivesRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "spool.db")
	newClient := func(sp *spool.Spool) *Client {
		c, err := New(Config{Spool: sp, Credentials: state.Dir(t.TempDir()), Log: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	sp, err := spool.Open(path, spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	fs := []*wirev1.Finding{{Detector: "d", Summary: "bad"}, {Detector: "d", Summary: "good"}}
	if err := sp.Append(context.Background(), fs); err != nil {
		t.Fatal(err)
	}
	c := newClient(sp)
	refusal := &ServerError{Code: wirev1.CodeProtocol, Message: "refused"}
	for range maxRefusals {
		c.noteRefusal(refusal, inflightBatch{first: fs[0].Seq, last: fs[0].Seq, n: 1})
	}
	if got := c.Stats().FindingsRefused; got != 1 {
		t.Fatalf("FindingsRefused %d after the drop, want 1", got)
	}
	if st := sp.Stats(); st.Depth != 1 {
		t.Fatalf("spool depth %d after the drop, want 1", st.Depth)
	}
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}

	// The agent restarts.
	sp, err = spool.Open(path, spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	c = newClient(sp)
	if got := c.Stats().FindingsRefused; got != 1 {
		t.Errorf("FindingsRefused %d after a restart, want 1", got)
	}
	if got := c.status(&state.Credentials{Cert: tls.Certificate{Leaf: &x509.Certificate{}}}).Counters["uplink_findings_refused"]; got != 1 {
		t.Errorf("Status counter uplink_findings_refused %d after a restart, want 1", got)
	}
}
