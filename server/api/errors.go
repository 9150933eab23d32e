package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/vigil-edge/vigil/server/store"
)

// httpError is an error with the status and the message the client sees.
type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return e.msg }

func errorf(status int, format string, args ...any) error {
	return &httpError{status: status, msg: fmt.Sprintf(format, args...)}
}

var (
	errUnauthenticated = &httpError{http.StatusUnauthorized, "missing or invalid bearer token"}
	errForbidden       = &httpError{http.StatusForbidden, "forbidden for this role"}
	errNotFound        = &httpError{http.StatusNotFound, "not found"}
)

// writeError answers err as {"error": "..."} with the matching status.
// Unexpected errors are logged and answered with a generic 500.
func writeError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	var he *httpError
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &he):
	case errors.As(err, &mbe):
		he = &httpError{http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", mbe.Limit)}
	case errors.Is(err, store.ErrNotFound):
		he = errNotFound
	case errors.Is(err, store.ErrInvalid):
		he = &httpError{http.StatusBadRequest, err.Error()}
	case errors.Is(err, store.ErrConflict):
		he = &httpError{http.StatusConflict, err.Error()}
	case errors.Is(err, store.ErrUnauthorized):
		he = errUnauthenticated
	default:
		log.Error("api request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		he = &httpError{http.StatusInternalServerError, "internal error"}
	}
	if he.status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="vigil"`)
	}
	writeJSON(w, he.status, map[string]string{"error": he.msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v) // the client went away; nothing to do
}
