package registry

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/vigil-edge/vigil/server/store"
)

// Routes added to the API (Handler wraps the API handler; everything else goes to it):
//
//	POST /api/v1/models             body: the .vgb bytes (application/octet-stream); ?no_smoke=1   admin
//	POST /api/v1/rollouts           body: RolloutRequest JSON                                     admin
//	GET  /api/v1/rollouts/status    ?id=ROLLOUT                                                   admin, analyst, entity-admin (own entity)
//	POST /api/v1/rollouts/{id}/halt body: {"reason": "..."} (optional)                            admin
//
// GET /api/v1/models and GET /api/v1/rollouts stay the API's own (server/api).

// Handler returns next with the registry's routes in front of it.
func (r *Registry) Handler(next http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/models", r.guard(true, r.handlePublish))
	mux.HandleFunc("POST /api/v1/rollouts", r.guard(true, r.handleRollout))
	mux.HandleFunc("GET /api/v1/rollouts/status", r.guard(false, r.handleStatus))
	mux.HandleFunc("POST /api/v1/rollouts/{id}/halt", r.guard(true, r.handleHalt))
	mux.Handle("/", next)
	return mux
}

type handlerFunc func(w http.ResponseWriter, req *http.Request, u store.User) error

type httpError struct {
	code int
	msg  string
}

func (e *httpError) Error() string { return e.msg }

func (r *Registry) guard(admin bool, h handlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, req *http.Request) {
		bearer, ok := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer ")
		if !ok {
			writeErr(w, http.StatusUnauthorized, "missing bearer token")
			return
		}
		u, err := r.cfg.DB.Authenticate(req.Context(), strings.TrimSpace(bearer))
		if err != nil {
			writeErr(w, http.StatusUnauthorized, "invalid token")
			return
		}
		if admin && u.Role != store.RoleAdmin {
			writeErr(w, http.StatusForbidden, "this needs the admin role")
			return
		}
		// Audit entries written under the request (model.publish, rollout.create) record
		// the caller's address, as the API's guard does.
		req = req.WithContext(store.WithRemote(req.Context(), req.RemoteAddr))
		if err := h(w, req, u); err != nil {
			var he *httpError
			switch {
			case errors.As(err, &he):
				writeErr(w, he.code, he.msg)
			case errors.Is(err, ErrRejected), errors.Is(err, store.ErrInvalid):
				writeErr(w, http.StatusUnprocessableEntity, err.Error())
			case errors.Is(err, store.ErrNotFound):
				writeErr(w, http.StatusNotFound, err.Error())
			case errors.Is(err, store.ErrConflict):
				writeErr(w, http.StatusConflict, err.Error())
			default:
				r.log.Error("registry request", "path", req.URL.Path, "err", err)
				writeErr(w, http.StatusInternalServerError, "server error")
			}
		}
	}
}

func writeErr(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func (r *Registry) handlePublish(w http.ResponseWriter, req *http.Request, u store.User) error {
	res, err := r.Publish(req.Context(), req.Body, u.Name, PublishOptions{NoSmoke: req.URL.Query().Get("no_smoke") == "1"})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, res)
	return nil
}

// RolloutResponse is the answer to POST /api/v1/rollouts.
type RolloutResponse struct {
	ID      string   `json:"id"`
	Reached []string `json:"reached"` // connected agents offered the model at once
}

func (r *Registry) handleRollout(w http.ResponseWriter, req *http.Request, u store.User) error {
	var rr RolloutRequest
	dec := json.NewDecoder(io.LimitReader(req.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rr); err != nil {
		return &httpError{http.StatusBadRequest, "decode rollout: " + err.Error()}
	}
	id, reached, err := r.CreateRollout(req.Context(), rr, u.Name)
	if err != nil {
		return err
	}
	if reached == nil {
		reached = []string{}
	}
	writeJSON(w, http.StatusCreated, RolloutResponse{ID: id, Reached: reached})
	return nil
}

// haltRequest is the (optional) body of POST /api/v1/rollouts/{id}/halt.
type haltRequest struct {
	Reason string `json:"reason"`
}

func (r *Registry) handleHalt(w http.ResponseWriter, req *http.Request, u store.User) error {
	id := req.PathValue("id")
	if len(id) > 128 {
		return &httpError{http.StatusNotFound, "rollout not found"}
	}
	var hr haltRequest
	dec := json.NewDecoder(io.LimitReader(req.Body, 16<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&hr); err != nil && !errors.Is(err, io.EOF) {
		return &httpError{http.StatusBadRequest, `decode halt request (want {"reason": "..."} or no body): ` + err.Error()}
	}
	res, err := r.Halt(req.Context(), id, u.Name, hr.Reason)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

func (r *Registry) handleStatus(w http.ResponseWriter, req *http.Request, u store.User) error {
	entity := ""
	if u.Role == store.RoleEntityAdmin {
		entity = u.Entity
	}
	st, err := r.Status(req.Context(), req.URL.Query().Get("id"), entity)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, st)
	return nil
}

// Hook adapts OnHello to the endpoint's hook signature.
func (r *Registry) Hook() func(ctx context.Context, agentID, entity string, shadowRollouts []string) {
	return func(_ context.Context, agentID, entity string, shadowRollouts []string) {
		go r.OnHello(agentID, entity, shadowRollouts)
	}
}
