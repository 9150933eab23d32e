package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/server/store"
)

// flakyBackend is the real store whose ListFindings fails from call failFrom
// on (0: never), and counts its calls.
type flakyBackend struct {
	*store.DB
	calls    atomic.Int32
	failFrom int32
}

func (b *flakyBackend) ListFindings(ctx context.Context, f store.FindingFilter) ([]store.Finding, error) {
	if n := b.calls.Add(1); b.failFrom > 0 && n >= b.failFrom {
		return nil, errors.New("list findings: disk I/O error")
	}
	return b.DB.ListFindings(ctx, f)
}

// TestHeadStreamAndExport: HEAD is served by every GET route (ServeMux), so
// HEAD /findings/stream ran the live stream with its body thrown away: the
// handler never ended while the connection stayed open, held a live-stream
// slot, and the next request a keep-alive client sent on that connection
// was never answered. HEAD /findings/export ran the whole export (up to a
// million findings) to throw it away. A HEAD gets the headers and ends.
func TestHeadStreamAndExport(t *testing.T) {
	fx := newFixture(t)
	insertN(t, fx.db, 100, 1500) // more than one export page
	be := &flakyBackend{DB: fx.db}
	shutdown := make(chan struct{})
	srv := httptest.NewServer(New(be, Options{StreamPoll: 20 * time.Millisecond, MaxStreams: 1, Shutdown: shutdown}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(shutdown) }) // first: a stream left running must not hang srv.Close
	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1}, Timeout: 5 * time.Second}
	t.Cleanup(client.CloseIdleConnections)
	do := func(method, path string) (*http.Response, error) {
		req, err := http.NewRequest(method, srv.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+fx.tok["admin"])
		return client.Do(req)
	}
	for _, tc := range []struct {
		path, contentType string
		maxLists          int32 // ListFindings calls a HEAD may make
	}{
		{"/api/v1/findings/stream", "text/event-stream", 0},
		{"/api/v1/findings/export", "application/x-ndjson", 1},
	} {
		t.Run(tc.path, func(t *testing.T) {
			be.calls.Store(0)
			resp, err := do("HEAD", tc.path)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != tc.contentType {
				t.Fatalf("HEAD: %d %q, want 200 %q", resp.StatusCode, resp.Header.Get("Content-Type"), tc.contentType)
			}
			// The same connection (one per host) serves the next request.
			resp, err = do("GET", "/api/v1/healthz")
			if err != nil {
				t.Fatalf("request after HEAD %s: %v", tc.path, err)
			}
			resp.Body.Close()
			if n := be.calls.Load(); n > tc.maxLists {
				t.Errorf("HEAD made %d findings queries, want at most %d", n, tc.maxLists)
			}
		})
	}
	// The HEAD's stream slot is free again (MaxStreams 1).
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/api/v1/findings/stream", nil)
	req.Header.Set("Authorization", "Bearer "+fx.tok["admin"])
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("stream after a HEAD: %d, want 200", resp.StatusCode)
	}
}

// TestExportStoreErrorIsNotACompleteExport: a store error after the first
// page ended the export like its last page: a clean 200 whose client (or
// SIEM) took a partial export for the whole one and never resumed. The
// response is now aborted after the complete lines already written, so
// the client sees a transfer error and can resume with ?after= the last id
// it read.
func TestExportStoreErrorIsNotACompleteExport(t *testing.T) {
	fx := newFixture(t)
	insertN(t, fx.db, 100, 1500)
	be := &flakyBackend{DB: fx.db, failFrom: 2} // the second page fails
	srv := httptest.NewServer(New(be, Options{}))
	t.Cleanup(srv.Close)
	req, _ := http.NewRequest("GET", srv.URL+"/api/v1/findings/export", nil)
	req.Header.Set("Authorization", "Bearer "+fx.tok["admin"])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil {
		t.Fatalf("export cut by a store error read as complete (%d lines, status %d)", strings.Count(string(b), "\n"), resp.StatusCode)
	}
	// What arrived is whole lines, the first page: a client resumes after
	// the last one.
	if n := strings.Count(string(b), "\n"); n != 1000 || !strings.HasSuffix(string(b), "\n") {
		t.Errorf("before the abort: %d lines (ends with newline: %v), want the 1000 of the first page", n, strings.HasSuffix(string(b), "\n"))
	}
}

// TestWrongMethod405: a route called with a method it does not have was
// "404 no such endpoint", as if the path did not exist. It is 405 with the
// route's methods in Allow (the documented routes, including those
// server/registry mounts in front of the API); unknown paths stay 404.
func TestWrongMethod405(t *testing.T) {
	fx := newFixture(t)
	for _, tc := range []struct {
		method, path string
		want         int
		allow        string
	}{
		{"POST", "/api/v1/findings", 405, "GET, HEAD"},
		{"DELETE", "/api/v1/findings/1", 405, "GET, HEAD"},
		{"OPTIONS", "/api/v1/findings/export", 405, "GET, HEAD"},
		{"GET", "/api/v1/findings/1/triage", 405, "POST"},
		{"PUT", "/api/v1/users", 405, "GET, HEAD, POST"},
		{"DELETE", "/api/v1/rollouts", 405, "GET, HEAD, POST"}, // POST: server/registry
		{"POST", "/api/v1/rollouts/status", 405, "GET, HEAD"},
		{"GET", "/api/v1/tokens/abcdefghij", 405, "DELETE"},
		{"GET", "/api/v1/nope", 404, ""},
		{"POST", "/api/v1/findings/1/nope", 404, ""},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, fx.srv.URL+tc.path, nil)
			req.Header.Set("Authorization", "Bearer "+fx.tok["admin"])
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.want || resp.Header.Get("Allow") != tc.allow {
				t.Fatalf("%d Allow %q, want %d Allow %q; body %s", resp.StatusCode, resp.Header.Get("Allow"), tc.want, tc.allow, b)
			}
			if !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") || !strings.Contains(string(b), `"error"`) {
				t.Errorf("error body %q (%s), want JSON {\"error\": ...}", b, resp.Header.Get("Content-Type"))
			}
		})
	}
}

// TestStreamReconnectLastEventIDWins: the stream tells SSE clients to
// reconnect (retry: 2000), and an SSE client reconnects to the URL it opened,
// ?after= included, with Last-Event-ID set to the last event it received.
// ?after= won: every reconnect replayed everything since the first cursor.
// The later position wins.
func TestStreamReconnectLastEventIDWins(t *testing.T) {
	fx := newFixture(t)
	fastStreams(t, fx)
	ids := storedIDs(t, fx.db) // 10 findings, ascending
	for _, tc := range []struct {
		name, query string
		header      map[string]string
		first       int64 // id of the first event
	}{
		{"reconnect", fmt.Sprintf("?after=%d", ids[1]), map[string]string{"Last-Event-ID": fmt.Sprint(ids[6])}, ids[7]},
		{"after only", fmt.Sprintf("?after=%d", ids[1]), nil, ids[2]},
		{"header only", "", map[string]string{"Last-Event-ID": fmt.Sprint(ids[4])}, ids[5]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ch, stop := openStream(t, fx, "admin", tc.query, tc.header)
			defer stop()
			got := collect(t, ch, 1, 5*time.Second)
			if len(got) == 0 || got[0].ID != tc.first {
				t.Fatalf("first event %v, want finding %d", got, tc.first)
			}
		})
	}
	// Both are checked.
	for _, h := range []map[string]string{{"Last-Event-ID": "x"}, {"Last-Event-ID": "-1"}} {
		if code, _ := fx.doHeader(t, "/api/v1/findings/stream?after=1", h); code != 400 {
			t.Errorf("Last-Event-ID %q: %d, want 400", h["Last-Event-ID"], code)
		}
	}
}

// doHeader is a GET by the admin with extra headers; the status and body.
func (fx *fixture) doHeader(t *testing.T, path string, header map[string]string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", fx.srv.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+fx.tok["admin"])
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req) // a stream that should not have opened ends
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// jsonNames returns the JSON names of t's fields, embedded structs flattened.
func jsonNames(t reflect.Type) []string {
	var out []string
	for i := range t.NumField() {
		sf := t.Field(i)
		name, _, _ := strings.Cut(sf.Tag.Get("json"), ",")
		switch {
		case name == "-" || !sf.IsExported():
		case sf.Anonymous && name == "":
			out = append(out, jsonNames(sf.Type)...)
		case name == "":
			out = append(out, sf.Name)
		default:
			out = append(out, name)
		}
	}
	return out
}

// TestOpenAPISchemasMatchJSON: the document's schemas list the fields the
// API writes, no more and no fewer (clients are generated from it). The
// agent's health had no calibration, which the console's agents page shows.
func TestOpenAPISchemasMatchJSON(t *testing.T) {
	var doc struct {
		Components struct {
			Schemas map[string]json.RawMessage `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(openAPIDoc, &doc); err != nil {
		t.Fatal(err)
	}
	type object struct {
		Properties map[string]json.RawMessage `json:"properties"`
	}
	props := func(raw json.RawMessage) map[string]json.RawMessage {
		var o object
		if err := json.Unmarshal(raw, &o); err != nil {
			t.Fatal(err)
		}
		return o.Properties
	}
	agent := props(doc.Components.Schemas["Agent"])
	var healthz struct {
		Paths map[string]struct {
			Get struct {
				Responses map[string]struct {
					Content map[string]struct {
						Schema json.RawMessage `json:"schema"`
					} `json:"content"`
				} `json:"responses"`
			} `json:"get"`
		} `json:"paths"`
	}
	if err := json.Unmarshal(openAPIDoc, &healthz); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		schema string
		props  map[string]json.RawMessage
		typ    any
	}{
		{"Finding", props(doc.Components.Schemas["Finding"]), store.Finding{}},
		{"Agent", agent, agentView{}},
		{"Agent.health", props(agent["health"]), health{}},
		{"User", props(doc.Components.Schemas["User"]), store.User{}},
		{"EnrollToken", props(doc.Components.Schemas["EnrollToken"]), store.EnrollToken{}},
		{"ModelRef", props(doc.Components.Schemas["ModelRef"]), store.ModelRef{}},
		{"SpoolStats", props(doc.Components.Schemas["SpoolStats"]), store.SpoolStats{}},
		{"Suppression", props(doc.Components.Schemas["Suppression"]), store.Suppression{}},
		{"Model", props(doc.Components.Schemas["Model"]), store.Model{}},
		{"Rollout", props(doc.Components.Schemas["Rollout"]), store.Rollout{}},
		{"StatsBucket", props(doc.Components.Schemas["StatsBucket"]), store.StatsBucket{}},
		{"AuditEntry", props(doc.Components.Schemas["AuditEntry"]), store.AuditEntry{}},
		{"healthz", props(healthz.Paths["/api/v1/healthz"].Get.Responses["200"].Content["application/json"].Schema), serverHealth{}},
	} {
		got := jsonNames(reflect.TypeOf(tc.typ))
		for _, n := range got {
			if _, ok := tc.props[n]; !ok {
				t.Errorf("%s: field %q is written but not in openapi.json", tc.schema, n)
			}
		}
		for n := range tc.props {
			if !slices.Contains(got, n) {
				t.Errorf("%s: openapi.json describes %q, which is never written", tc.schema, n)
			}
		}
	}
}
