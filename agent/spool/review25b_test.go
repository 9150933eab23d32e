package spool

import (
	"context"
	"path/filepath"
	"testing"

	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// TestDropRefusedPersists: DropRefused drops only the oldest waiting
// finding, and its count survives a reopen (the uplink reports it as
// uplink_findings_refused).
func TestDropRefusedPersists(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	fs := []*wirev1.Finding{
		{Detector: "d", Severity: wirev1.Severity_SEVERITY_HIGH},
		{Detector: "d", Severity: wirev1.Severity_SEVERITY_LOW},
	}
	if err := s.Append(context.Background(), fs); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.DropRefused(fs[1].Seq); ok || err != nil {
		t.Fatalf("DropRefused of a finding that is not the oldest: %v, %v", ok, err)
	}
	if ok, err := s.DropRefused(fs[0].Seq); !ok || err != nil {
		t.Fatalf("DropRefused of the oldest: %v, %v", ok, err)
	}
	if st := s.Stats(); st.Depth != 1 || st.AckedSeq != fs[0].Seq || st.Dropped != 0 {
		t.Fatalf("stats after DropRefused: %+v", st)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if n := s.Refused(); n != 1 {
		t.Fatalf("Refused %d after a reopen, want 1", n)
	}
	got, err := s.Peek(0, 0)
	if err != nil || len(got) != 1 || got[0].Seq != fs[1].Seq {
		t.Fatalf("waiting after a reopen: %v, %v", got, err)
	}
	if st := s.Stats(); st.Depth != 1 || st.Bytes == 0 {
		t.Fatalf("stats after a reopen: %+v", st)
	}
}
