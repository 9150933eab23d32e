package console

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestHandler(t *testing.T) {
	api := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "api") })
	srv := httptest.NewServer(Mount(api))
	defer srv.Close()
	tests := []struct {
		method, path string
		want         int
		ctype, body  string
	}{
		{"GET", "/", 200, "text/html", `<script src="/app.js" defer></script>`},
		{"GET", "/index.html", 200, "text/html", "Vigil"},
		{"GET", "/app.js", 200, "javascript", "liveFindings"},
		{"GET", "/app.css", 200, "text/css", ":root"},
		{"HEAD", "/app.js", 200, "javascript", ""},
		{"GET", "/api/v1/x", 200, "", "api"},
		{"GET", "/metrics", 200, "", "api"},
		{"GET", "/nope.js", 404, "", ""},
		{"GET", "/../../etc/passwd", 404, "", ""},
		{"GET", "/..%2f..%2fetc%2fpasswd", 404, "", ""},
		{"GET", "/assets/app.js", 404, "", ""},
		{"GET", "/%00", 404, "", ""},
		{"POST", "/", 405, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, srv.URL+tc.path, nil)
			req.URL.Opaque = tc.path // send the path as is, unnormalised
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.want)
			}
			if !strings.Contains(resp.Header.Get("Content-Type"), tc.ctype) {
				t.Errorf("content type %q", resp.Header.Get("Content-Type"))
			}
			if !strings.Contains(string(b), tc.body) {
				t.Errorf("body lacks %q", tc.body)
			}
			if tc.body != "api" && resp.Header.Get("Content-Security-Policy") != CSP {
				t.Errorf("CSP %q", resp.Header.Get("Content-Security-Policy"))
			}
		})
	}
}

// TestNoInlineOrRemote keeps the assets within the CSP: no inline scripts
// or styles, no event-handler attributes, nothing loaded from elsewhere.
func TestNoInlineOrRemote(t *testing.T) {
	for _, name := range []string{"assets/index.html", "assets/app.js", "assets/app.css"} {
		b, err := assets.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		for _, bad := range []string{"http://", "https://", "//cdn", "innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", " style=", "onclick=", "onload="} {
			if strings.Contains(s, bad) && !(bad == "http://" && strings.Contains(s, "http://www.w3.org/2000/svg")) {
				t.Errorf("%s contains %q", name, bad)
			}
		}
		if name == "assets/index.html" && strings.Count(s, "<script") != strings.Count(s, `<script src="/`) {
			t.Errorf("%s has an inline script", name)
		}
	}
}
