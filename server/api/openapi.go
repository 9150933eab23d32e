package api

import (
	_ "embed"
	"encoding/json"
	"net/http"
	"strings"
)

// openAPIDoc is the hand-written OpenAPI 3 description of the routes in
// api.go; TestOpenAPICoversRoutes keeps the two in step.
//
//go:embed openapi/openapi.json
var openAPIDoc []byte

func serveOpenAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(openAPIDoc)
}

// documentedRoutes matches the routes of openapi.json: the API's own and
// those server/registry mounts in front of it (TestOpenAPICoversRoutes
// keeps the document in step with both).
var documentedRoutes = func() *http.ServeMux {
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(openAPIDoc, &doc); err != nil {
		panic("api: embedded openapi.json: " + err.Error())
	}
	mux := http.NewServeMux()
	for path, ops := range doc.Paths {
		for m := range ops {
			if m != "parameters" {
				mux.HandleFunc(strings.ToUpper(m)+" "+path, func(http.ResponseWriter, *http.Request) {})
			}
		}
	}
	return mux
}()

// documentedMethods returns the methods ("GET, HEAD, POST") that the
// documented routes accept on r's path, or "" when the path is no route.
func documentedMethods(r *http.Request) string {
	var allow []string
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		probe := &http.Request{Method: m, URL: r.URL, Host: r.Host}
		if _, pattern := documentedRoutes.Handler(probe); strings.Contains(pattern, " ") { // "METHOD /path", not a redirect
			allow = append(allow, m)
			if m == http.MethodGet {
				allow = append(allow, http.MethodHead)
			}
		}
	}
	return strings.Join(allow, ", ")
}
