package api

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/server/store"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// TestLiveStreamLatency measures the time from a committed ingest
// (store.InsertFindings returned) to the finding's event at a connected
// live-stream client (GET /api/v1/findings/stream over HTTPS, an analyst's
// token, the server's default 500 ms poll): 100 findings one at a time at
// random spacing. VIGIL_BENCH=1 runs it (timings depend on the machine);
// VIGIL_BENCH_DB points it at an existing database (e.g. the 10-million-
// finding one of store's TestFindingsQuery10M) instead of an empty one.
// The goal (issue 7) is under 1 s; it fails only when p95 exceeds 1 s.
func TestLiveStreamLatency(t *testing.T) {
	if os.Getenv("VIGIL_BENCH") != "1" {
		t.Skip("live-stream latency benchmark: set VIGIL_BENCH=1")
	}
	ctx := context.Background()
	path := os.Getenv("VIGIL_BENCH_DB")
	if path == "" {
		path = filepath.Join(t.TempDir(), "vigil.db")
	}
	db, err := store.Open(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	total, _ := db.CountFindings(ctx, "")
	name := fmt.Sprintf("ana-%d", time.Now().UnixNano())
	tok, err := db.CreateUser(ctx, name, store.RoleAnalyst, "", "bench")
	if err != nil {
		t.Fatal(err)
	}
	agent := fmt.Sprintf("lat-%d", time.Now().UnixNano())
	if err := db.RegisterAgent(ctx, store.Agent{ID: agent, Entity: "acme", Hostname: "lat", CertSerial: "01" + agent,
		CertNotAfter: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(New(db, Options{}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()

	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, _ := http.NewRequestWithContext(sctx, http.MethodGet, srv.URL+"/api/v1/findings/stream?agent="+agent, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("stream: %s", resp.Status)
	}
	arrived := make(chan int64, 1024) // seq of each finding event, on arrival
	go func() {
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if !strings.HasPrefix(line, "data: ") {
				continue
			}
			i := strings.Index(line, `"seq":`)
			if i < 0 {
				continue
			}
			rest := line[i+len(`"seq":`):]
			j := strings.IndexAny(rest, ",}")
			if seq, err := strconv.ParseInt(rest[:j], 10, 64); err == nil {
				arrived <- seq
			}
		}
		close(arrived)
	}()
	time.Sleep(300 * time.Millisecond) // the stream is open (its first query ran)

	const n = 100
	var lat []time.Duration
	for i := range n {
		// Random spacing so that commits land anywhere in the poll cycle.
		time.Sleep(time.Duration(50+(i*37)%400) * time.Millisecond)
		f := &wirev1.Finding{Seq: uint64(i + 1), Detector: "netflow", TimeUnixNano: time.Now().UnixNano(),
			Severity: wirev1.Severity_SEVERITY_HIGH, Score: 2, Threshold: 1, Summary: "latency probe"}
		if _, err := db.InsertFindings(ctx, agent, "acme", []*wirev1.Finding{f}); err != nil {
			t.Fatal(err)
		}
		committed := time.Now()
		select {
		case seq, ok := <-arrived:
			if !ok {
				t.Fatal("stream ended")
			}
			if seq != int64(i+1) {
				t.Fatalf("stream delivered seq %d, want %d", seq, i+1)
			}
			lat = append(lat, time.Since(committed))
		case <-time.After(10 * time.Second):
			t.Fatalf("finding %d not on the stream within 10 s", i+1)
		}
	}
	slices.Sort(lat)
	p := func(q float64) time.Duration {
		return lat[min(len(lat)-1, int(float64(len(lat))*q))].Round(time.Millisecond)
	}
	t.Logf("live stream, commit to SSE client (poll 500ms, %d findings already stored): n=%d p50=%s p95=%s p99=%s max=%s",
		total, n, p(.5), p(.95), p(.99), p(1))
	if p(.95) > time.Second {
		t.Errorf("p95 %s over the 1 s goal", p(.95))
	}
}
