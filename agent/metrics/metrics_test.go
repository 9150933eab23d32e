package metrics

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/uplink"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

func TestServe(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	notAfter := time.Unix(1900000000, 0)
	s := Sources{
		Spool:      func() *wirev1.SpoolStats { return &wirev1.SpoolStats{Depth: 7, Dropped: 3, NextSeq: 11, AckedSeq: 3} },
		Uplink:     func() uplink.Stats { return uplink.Stats{Connected: true, Reconnects: 2, CertNotAfter: notAfter} },
		FindingsIn: func() uint64 { return 10 },
		Suppressed: func() uint64 { return 4 },
		AgentID:    "a-1", Entity: "acme",
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeListener(ctx, ln, s, slog.New(slog.DiscardHandler)) }()
	defer func() { cancel(); <-done }()

	get := func(path string) string {
		resp, err := http.Get("http://" + ln.Addr().String() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	m := get("/metrics")
	for _, want := range []string{
		"vigil_agent_spool_depth 7", "vigil_agent_spool_dropped_total 3", "vigil_agent_reconnects_total 2",
		"vigil_agent_connected 1", "vigil_agent_findings_in_total 10", "vigil_agent_findings_suppressed_total 4", "vigil_agent_cert_expiry_timestamp_seconds 1.9e+09",
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	var st Status
	if err := json.Unmarshal([]byte(get(StatusPath)), &st); err != nil {
		t.Fatal(err)
	}
	if st.AgentID != "a-1" || !st.Connected || st.Spool.Depth != 7 || st.FindingsIn != 10 || st.Suppressed != 4 {
		t.Fatalf("status %+v", st)
	}
}
