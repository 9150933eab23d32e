package ctl

import (
	"context"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// TestClientNeverFollowsRedirects: the API never redirects, and Go's client
// resends the Authorization header on a redirect to the same host name
// whatever the scheme and port. An answer redirecting https://HOST/ to
// http://HOST:OTHER/ would send the bearer token in clear, which NewClient
// refuses to do for a --server URL.
func TestClientNeverFollowsRedirects(t *testing.T) {
	var leaked atomic.Value
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		leaked.Store(r.Header.Get("Authorization"))
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{}`))
	}))
	defer plain.Close()
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, plain.URL+r.URL.RequestURI(), http.StatusTemporaryRedirect)
	}))
	defer tlsSrv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: tlsSrv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	const tok = "vgu_secretsecretsecret"
	c, err := NewClient(tlsSrv.URL, tok, ca)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	check := func(what string, err error) {
		t.Helper()
		if v, _ := leaked.Load().(string); strings.Contains(v, tok) {
			t.Errorf("%s: the bearer token followed a redirect to %s", what, plain.URL)
		}
		leaked.Store("")
		if err == nil {
			t.Errorf("%s: a redirect was taken for an answer", what)
		}
	}
	check("Do", c.Do(ctx, http.MethodGet, "findings", nil, nil, nil))
	check("Stream", c.Stream(ctx, "findings/export", nil, new(strings.Builder)))
	check("upload", c.upload(ctx, "models", nil, []byte("x"), nil))
}
