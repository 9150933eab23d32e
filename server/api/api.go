package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/vigil-edge/vigil/pki"
	"github.com/vigil-edge/vigil/server/store"
)

// Backend is what the API needs from the store; *store.DB implements it.
type Backend interface {
	Authenticate(ctx context.Context, bearer string) (store.User, error)
	CreateUser(ctx context.Context, name, role, entity, actor string) (string, error)
	ListUsers(ctx context.Context, entity string) ([]store.User, error)
	CreateEnrollTokenInfo(ctx context.Context, entity string, ttl time.Duration, actor string) (string, store.EnrollToken, error)
	ListEnrollTokens(ctx context.Context, entity string) ([]store.EnrollToken, error)
	RevokeEnrollToken(ctx context.Context, id, entity, actor string) error
	ListAgents(ctx context.Context, f store.AgentFilter) ([]store.Agent, error)
	GetAgent(ctx context.Context, id string) (store.Agent, error)
	RevokeAgent(ctx context.Context, agentID, actor string) error
	ListFindings(ctx context.Context, f store.FindingFilter) ([]store.Finding, error)
	GetFinding(ctx context.Context, id int64) (store.Finding, error)
	ListAudit(ctx context.Context, f store.AuditFilter) ([]store.AuditEntry, error)
	VerifyAudit(ctx context.Context) (int, error)
	ListEntities(ctx context.Context) ([]string, error)
	MaxFindingID(ctx context.Context) (int64, error)
	FindingStats(ctx context.Context, f store.StatsFilter) ([]store.StatsBucket, error)
	TriageFinding(ctx context.Context, id int64, t store.Triage, actor string) (store.Finding, error)
	FindingNotes(ctx context.Context, findingID int64) ([]store.FindingNote, error)
	ListSuppressions(ctx context.Context, f store.SuppressionFilter) ([]store.Suppression, error)
	GetSuppression(ctx context.Context, id int64) (store.Suppression, error)
	LiftSuppression(ctx context.Context, id int64, actor string) error
	ListModels(ctx context.Context) ([]store.Model, error)
	ModelByDigest(ctx context.Context, digest string) (store.Model, error)
	ListRollouts(ctx context.Context, f store.RolloutFilter) ([]store.Rollout, error)
	GetUser(ctx context.Context, id string) (store.User, error)
	SetUserDisabled(ctx context.Context, id string, disabled bool, actor string) error
}

var _ Backend = (*store.DB)(nil)

// Options configure the API.
type Options struct {
	Log *slog.Logger
	// CAPin is the deployment root's pin ("sha256:<hex>", pki.CA.Pin), put
	// into enroll commands.
	CAPin string
	// EnrollServer is the agents' QUIC address (HOST:PORT) put into enroll
	// commands. ":PORT": the API request's host name with PORT. Empty: the
	// API request's host name with port 4433.
	EnrollServer string
	// Registry is served on /metrics (admin token required). Nil: no /metrics.
	Registry prometheus.Gatherer
	// Registerer, if set, receives the API's own request metrics.
	Registerer prometheus.Registerer
	// OnRevoke, if set, is called after an agent was revoked (the endpoint
	// refreshes its revocation cache and drops the agent's connection).
	OnRevoke func(agentID string)
	// OnSuppressionsChanged, if set, is called after an entity's
	// suppressions changed (a finding marked false_positive or reopened, a
	// suppression lifted): the endpoint pushes the new set to the entity's
	// agents. It must not block.
	OnSuppressionsChanged func(entity string)
	// Console, if set, serves everything outside /api/ and /metrics (the
	// web console, console.Handler()).
	Console http.Handler
	// StreamPoll is how often a live stream looks for new findings
	// (default 500ms). See stream.go.
	StreamPoll time.Duration
	// MaxStreams bounds concurrent live streams (default 256).
	MaxStreams int
	// Shutdown, when closed, ends every live stream (clients reconnect
	// with Last-Event-ID). Close it from http.Server.RegisterOnShutdown:
	// Shutdown does not end active requests by itself, and a stream never
	// ends on its own.
	Shutdown <-chan struct{}
	// OfflineAfter is how long an agent may stay silent before its health
	// is "offline" (default 5m).
	OfflineAfter time.Duration
	// Health, if set, returns the server's own problems (e.g. a server
	// certificate that failed to renew and expires soon). healthz reports
	// status "warning" with them, still with 200: it is a liveness probe,
	// and restarting the server cures none of them. It must be quick.
	Health func() []string
}

// MaxBodyBytes bounds a request body.
const MaxBodyBytes = 64 << 10

// DefaultEnrollTokenTTL is the lifetime of an enrollment token when the
// request names none.
const DefaultEnrollTokenTTL = 24 * time.Hour

type server struct {
	db      Backend
	opts    Options
	log     *slog.Logger
	reqs    *prometheus.CounterVec
	streams chan struct{} // semaphore of live streams
	routes  []string      // registered patterns, "METHOD /path"
	handler http.Handler
}

// New returns the API handler: /api/v1/... and /metrics.
func New(db Backend, opts Options) http.Handler {
	return newServer(db, opts).handler
}

// newServer builds the server and its handler (tests read s.routes).
func newServer(db Backend, opts Options) *server {
	if opts.StreamPoll <= 0 {
		opts.StreamPoll = 500 * time.Millisecond
	}
	if opts.MaxStreams <= 0 {
		opts.MaxStreams = 256
	}
	if opts.OfflineAfter <= 0 {
		opts.OfflineAfter = 5 * time.Minute
	}
	s := &server{db: db, opts: opts, log: opts.Log, streams: make(chan struct{}, max(1, opts.MaxStreams))}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if opts.Registerer != nil {
		s.reqs = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_api_requests_total", Help: "API requests by route and status code.",
		}, []string{"route", "code"})
		if err := opts.Registerer.Register(s.reqs); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				s.reqs = are.ExistingCollector.(*prometheus.CounterVec)
			} else {
				s.log.Warn("api metrics not registered", "err", err)
				s.reqs = nil
			}
		}
	}
	mux := http.NewServeMux()
	handle := func(pattern string, h http.Handler) {
		if s.reqs != nil {
			h = promhttp.InstrumentHandlerCounter(s.reqs.MustCurryWith(prometheus.Labels{"route": pattern}), h)
		}
		mux.Handle(pattern, h)
		s.routes = append(s.routes, pattern)
	}
	handle("GET /api/v1/healthz", http.HandlerFunc(s.healthz))
	handle("GET /api/v1/whoami", s.guard(permRead, s.whoami))
	handle("POST /api/v1/tokens", s.guard(permManageAgents, s.createToken))
	handle("GET /api/v1/tokens", s.guard(permManageAgents, s.listTokens))
	handle("DELETE /api/v1/tokens/{id}", s.guard(permManageAgents, s.revokeToken))
	handle("GET /api/v1/agents", s.guard(permRead, s.listAgents))
	handle("GET /api/v1/agents/{id}", s.guard(permRead, s.getAgent))
	handle("POST /api/v1/agents/{id}/revoke", s.guard(permManageAgents, s.revokeAgent))
	handle("GET /api/v1/findings", s.guard(permRead, s.listFindings))
	handle("GET /api/v1/findings/{id}", s.guard(permRead, s.getFinding))
	handle("POST /api/v1/findings/{id}/triage", s.guard(permTriage, s.triageFinding))
	handle("GET /api/v1/findings/stream", s.guard(permRead, s.streamFindings))
	handle("GET /api/v1/findings/export", s.guard(permRead, s.exportFindings))
	handle("GET /api/v1/findings/stats", s.guard(permRead, s.findingStats))
	handle("GET /api/v1/suppressions", s.guard(permRead, s.listSuppressions))
	handle("POST /api/v1/suppressions/{id}/lift", s.guard(permTriage, s.liftSuppression))
	handle("GET /api/v1/entities", s.guard(permRead, s.listEntities))
	handle("GET /api/v1/models", s.guard(permRead, s.listModels))
	handle("GET /api/v1/rollouts", s.guard(permRead, s.listRollouts))
	handle("POST /api/v1/users", s.guard(permAdmin, s.createUser))
	handle("GET /api/v1/users", s.guard(permAdmin, s.listUsers))
	handle("POST /api/v1/users/{id}/disable", s.guard(permAdmin, s.disableUser))
	handle("POST /api/v1/users/{id}/enable", s.guard(permAdmin, s.enableUser))
	handle("GET /api/v1/audit", s.guard(permReadAudit, s.listAudit))
	handle("GET /api/v1/audit/verify", s.guard(permVerifyAudit, s.verifyAudit))
	handle("GET /api/v1/openapi.json", http.HandlerFunc(serveOpenAPI))
	if opts.Registry != nil {
		metrics := promhttp.HandlerFor(opts.Registry, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)})
		handle("GET /metrics", s.guard(permAdmin, func(w http.ResponseWriter, r *http.Request, _ *principal) error {
			metrics.ServeHTTP(w, r)
			return nil
		}))
	}
	// Anything else under /api/: a JSON 405 for a route called with
	// another method, else a JSON 404, not the mux's text. (This catch-all
	// matches every method, so the mux's own 405 never happens.)
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		if allow := documentedMethods(r); allow != "" {
			w.Header().Set("Allow", allow)
			writeError(w, r, s.log, errorf(http.StatusMethodNotAllowed, "method %s not allowed on %s (allowed: %s)", r.Method, r.URL.Path, allow))
			return
		}
		writeError(w, r, s.log, errorf(http.StatusNotFound, "no such endpoint: %s %s", r.Method, r.URL.Path))
	})
	if opts.Console != nil {
		mux.Handle("/", opts.Console)
	}
	s.handler = mux
	return s
}

// serverHealth is healthz's answer.
type serverHealth struct {
	Status   string   `json:"status"` // HealthOK or HealthWarning
	Problems []string `json:"problems,omitempty"`
}

// healthz answers 200 while the server serves: {"status":"ok"}, or
// "warning" with the problems Options.Health reports.
func (s *server) healthz(w http.ResponseWriter, _ *http.Request) {
	h := serverHealth{Status: HealthOK}
	if s.opts.Health != nil {
		if h.Problems = s.opts.Health(); len(h.Problems) > 0 {
			h.Status = HealthWarning
		}
	}
	writeJSON(w, http.StatusOK, h)
}

func (s *server) whoami(w http.ResponseWriter, _ *http.Request, p *principal) error {
	writeJSON(w, http.StatusOK, p.user)
	return nil
}

// decode reads one JSON object from the body into v: at most MaxBodyBytes,
// unknown fields and trailing data rejected.
func decode(w http.ResponseWriter, r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return errorf(http.StatusUnsupportedMediaType, "content type must be application/json")
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		if errors.Is(err, io.EOF) {
			return errorf(http.StatusBadRequest, "empty request body")
		}
		return errorf(http.StatusBadRequest, "invalid JSON body: %s", err.Error())
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return errorf(http.StatusBadRequest, "invalid JSON body: data after the object")
	}
	return nil
}

// ---- enrollment tokens ----

type createTokenReq struct {
	Entity string `json:"entity"`
	TTL    string `json:"ttl"` // Go duration, e.g. "24h"
}

type createTokenResp struct {
	Token     string    `json:"token"`
	ID        string    `json:"id"`
	Entity    string    `json:"entity"`
	CAPin     string    `json:"ca_pin"`
	Command   string    `json:"command"`
	ExpiresAt time.Time `json:"expires_at"`
}

func (s *server) createToken(w http.ResponseWriter, r *http.Request, p *principal) error {
	var req createTokenReq
	if err := decode(w, r, &req); err != nil {
		return err
	}
	entity, err := p.entityFilter(req.Entity)
	if err != nil {
		return err
	}
	if entity == "" {
		return errorf(http.StatusBadRequest, "entity is required")
	}
	if !pki.ValidName(entity) {
		return errorf(http.StatusBadRequest, "invalid entity name %q (want [a-z0-9][a-z0-9._-]{0,62})", entity)
	}
	ttl := DefaultEnrollTokenTTL
	if req.TTL != "" {
		if ttl, err = time.ParseDuration(req.TTL); err != nil || ttl <= 0 || ttl > store.MaxEnrollTokenTTL {
			return errorf(http.StatusBadRequest, "invalid ttl %q (want a duration such as 24h, at most %s)", req.TTL, store.MaxEnrollTokenTTL)
		}
	}
	plain, tok, err := s.db.CreateEnrollTokenInfo(r.Context(), entity, ttl, p.actor())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, createTokenResp{
		Token: plain, ID: tok.ID, Entity: entity, CAPin: s.opts.CAPin, ExpiresAt: tok.ExpiresAt,
		Command: fmt.Sprintf("vigil-agent enroll --server %s --token %s --ca-pin %s", s.enrollServer(r), plain, s.opts.CAPin),
	})
	return nil
}

// enrollServer is the HOST:PORT agents enroll against.
// EnrollServer ":PORT" (no host) takes the request's host name with PORT.
func (s *server) enrollServer(r *http.Request) string {
	port := "4433"
	if s.opts.EnrollServer != "" {
		h, p, err := net.SplitHostPort(s.opts.EnrollServer)
		if err != nil || h != "" || p == "" {
			return s.opts.EnrollServer
		}
		port = p
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if host == "" {
		host = "localhost"
	}
	return net.JoinHostPort(host, port)
}

func (s *server) listTokens(w http.ResponseWriter, r *http.Request, p *principal) error {
	q, err := query(r, "entity")
	if err != nil {
		return err
	}
	entity, err := p.entityFilter(q.Get("entity"))
	if err != nil {
		return err
	}
	toks, err := s.db.ListEnrollTokens(r.Context(), entity)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"tokens": toks})
	return nil
}

// revokeToken revokes an unused enrollment token: 204; a token of another
// entity is 404 like an unknown one (ids do not leak across entities), a
// used one 409 (revoke the agent it enrolled instead).
func (s *server) revokeToken(w http.ResponseWriter, r *http.Request, p *principal) error {
	id := r.PathValue("id")
	if !pki.ValidName(id) {
		return errNotFound
	}
	err := s.db.RevokeEnrollToken(r.Context(), id, p.scopeEntity(), p.actor())
	if errors.Is(err, store.ErrTokenUsed) {
		return errorf(http.StatusConflict, "enrollment token %s was already used; revoke the agent it enrolled instead", id)
	}
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// ---- agents ----

func (s *server) listAgents(w http.ResponseWriter, r *http.Request, p *principal) error {
	q, err := query(r, "entity")
	if err != nil {
		return err
	}
	entity, err := p.entityFilter(q.Get("entity"))
	if err != nil {
		return err
	}
	agents, err := s.db.ListAgents(r.Context(), store.AgentFilter{Entity: entity})
	if err != nil {
		return err
	}
	now := time.Now()
	views := make([]agentView, len(agents))
	for i, a := range agents {
		views[i] = agentView{Agent: a, Health: agentHealth(a, now, s.opts.OfflineAfter)}
	}
	writeJSON(w, http.StatusOK, map[string]any{"agents": views})
	return nil
}

// agentInScope loads an agent, reporting agents outside the caller's scope
// as not found.
func (s *server) agentInScope(ctx context.Context, p *principal, id string) (store.Agent, error) {
	if !pki.ValidName(id) {
		return store.Agent{}, errNotFound
	}
	a, err := s.db.GetAgent(ctx, id)
	if err != nil {
		return a, err
	}
	if !p.sees(a.Entity) {
		return store.Agent{}, errNotFound
	}
	return a, nil
}

func (s *server) getAgent(w http.ResponseWriter, r *http.Request, p *principal) error {
	a, err := s.agentInScope(r.Context(), p, r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, agentView{Agent: a, Health: agentHealth(a, time.Now(), s.opts.OfflineAfter)})
	return nil
}

func (s *server) revokeAgent(w http.ResponseWriter, r *http.Request, p *principal) error {
	id := r.PathValue("id")
	if _, err := s.agentInScope(r.Context(), p, id); err != nil {
		return err
	}
	if err := s.db.RevokeAgent(r.Context(), id, p.actor()); err != nil {
		return err
	}
	if s.opts.OnRevoke != nil {
		s.opts.OnRevoke(id)
	}
	a, err := s.db.GetAgent(r.Context(), id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, a)
	return nil
}

// ---- findings ----

// Times the store can hold: it keeps Unix nanoseconds in an int64, and
// time.UnixNano wraps around outside this range (a filter of year 9999 would
// become one of 1816).
var (
	minStoreTime = time.Unix(0, math.MinInt64)
	maxStoreTime = time.Unix(0, math.MaxInt64)
)

// storable reports whether t is within the range the store can compare.
func storable(t time.Time) bool { return !t.Before(minStoreTime) && !t.After(maxStoreTime) }

// parseTime accepts an RFC 3339 time or a duration back from now ("1h"),
// within the years the store can hold (1678 to 2262).
func parseTime(name, v string, now time.Time) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		if !storable(t) {
			return time.Time{}, errorf(http.StatusBadRequest, "invalid %s %q (out of range: years 1678 to 2262)", name, v)
		}
		return t, nil
	}
	if d, err := time.ParseDuration(v); err == nil && d >= 0 && storable(now.Add(-d)) {
		return now.Add(-d), nil
	}
	return time.Time{}, errorf(http.StatusBadRequest, "invalid %s %q (want RFC 3339 time or a duration such as 24h)", name, v)
}

// query returns the URL query, rejecting parameters not in allowed (a typo
// in a filter must not silently widen the result).
func query(r *http.Request, allowed ...string) (url.Values, error) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, errorf(http.StatusBadRequest, "invalid query string")
	}
	for k, v := range q {
		ok := false
		for _, a := range allowed {
			ok = ok || k == a
		}
		if !ok {
			return nil, errorf(http.StatusBadRequest, "unknown query parameter %q", k)
		}
		if len(v) > 1 {
			return nil, errorf(http.StatusBadRequest, "query parameter %q given more than once", k)
		}
	}
	return q, nil
}

func parseLimit(v string) (int, error) {
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 1000 {
		return 0, errorf(http.StatusBadRequest, "invalid limit %q (1..1000)", v)
	}
	return n, nil
}

// Cursors are opaque to clients; today the id to continue below.
func parseCursor(v string) (int64, error) {
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 1 {
		return 0, errorf(http.StatusBadRequest, "invalid cursor")
	}
	return n, nil
}

// findingFilterParams are the query parameters every findings query
// (list, stream, export) understands.
var findingFilterParams = []string{"entity", "agent", "detector", "since", "until", "severity", "status"}

// findingFilter parses the findings filters of q, scoped to p. Filter values
// only ever reach SQL as bound parameters.
func findingFilter(q url.Values, p *principal, now time.Time) (store.FindingFilter, error) {
	var err error
	f := store.FindingFilter{AgentID: q.Get("agent"), Detector: q.Get("detector"), Status: q.Get("status")}
	if f.Entity, err = p.entityFilter(q.Get("entity")); err != nil {
		return f, err
	}
	if f.AgentID != "" && !pki.ValidName(f.AgentID) {
		return f, errorf(http.StatusBadRequest, "invalid agent id %q", f.AgentID)
	}
	if len(f.Detector) > 128 {
		return f, errorf(http.StatusBadRequest, "detector name too long")
	}
	if f.Status != "" && !store.ValidStatus(f.Status) {
		return f, errorf(http.StatusBadRequest, "invalid status %q (new, acknowledged, false_positive or resolved)", f.Status)
	}
	if f.Since, err = parseTime("since", q.Get("since"), now); err != nil {
		return f, err
	}
	if f.Until, err = parseTime("until", q.Get("until"), now); err != nil {
		return f, err
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Until.After(f.Since) {
		return f, errorf(http.StatusBadRequest, "until must be after since")
	}
	if v := q.Get("severity"); v != "" {
		if f.MinSeverity, err = store.ParseSeverity(v); err != nil {
			return f, errorf(http.StatusBadRequest, "invalid severity %q (low, medium, high or critical: the minimum)", v)
		}
	}
	return f, nil
}

func (s *server) listFindings(w http.ResponseWriter, r *http.Request, p *principal) error {
	q, err := query(r, append(findingFilterParams, "limit", "cursor")...)
	if err != nil {
		return err
	}
	f, err := findingFilter(q, p, time.Now())
	if err != nil {
		return err
	}
	if f.Limit, err = parseLimit(q.Get("limit")); err != nil {
		return err
	}
	if f.BeforeID, err = parseCursor(q.Get("cursor")); err != nil {
		return err
	}
	fs, err := s.db.ListFindings(r.Context(), f)
	if err != nil {
		return err
	}
	resp := map[string]any{"findings": fs}
	if lim := max(f.Limit, 0); len(fs) > 0 && (lim == 0 && len(fs) == 100 || len(fs) == lim) {
		resp["next_cursor"] = strconv.FormatInt(fs[len(fs)-1].ID, 10)
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

func (s *server) getFinding(w http.ResponseWriter, r *http.Request, p *principal) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	f, err := s.findingInScope(r.Context(), p, id)
	if err != nil {
		return err
	}
	notes, err := s.db.FindingNotes(r.Context(), id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, findingDetail{Finding: f, Explanation: explain(f), Provenance: s.provenance(r.Context(), f), Notes: notes})
	return nil
}

// findingInScope loads a finding, reporting findings outside the caller's
// scope as not found.
func (s *server) findingInScope(ctx context.Context, p *principal, id int64) (store.Finding, error) {
	f, err := s.db.GetFinding(ctx, id)
	if err != nil {
		return f, err
	}
	if !p.sees(f.Entity) {
		return store.Finding{}, errNotFound
	}
	return f, nil
}

// ---- users ----

type createUserReq struct {
	Name   string `json:"name"`
	Role   string `json:"role"`
	Entity string `json:"entity,omitempty"`
}

type createUserResp struct {
	Name   string `json:"name"`
	Role   string `json:"role"`
	Entity string `json:"entity,omitempty"`
	Token  string `json:"token"`
}

func (s *server) createUser(w http.ResponseWriter, r *http.Request, p *principal) error {
	var req createUserReq
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if !store.ValidRole(req.Role) {
		return errorf(http.StatusBadRequest, "invalid role %q (admin, analyst or entity-admin)", req.Role)
	}
	if req.Role == store.RoleEntityAdmin && !pki.ValidName(req.Entity) {
		return errorf(http.StatusBadRequest, "entity-admin needs a valid entity")
	}
	if req.Role != store.RoleEntityAdmin && req.Entity != "" {
		return errorf(http.StatusBadRequest, "only entity-admin users have an entity")
	}
	tok, err := s.db.CreateUser(r.Context(), req.Name, req.Role, req.Entity, p.actor())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, createUserResp{Name: req.Name, Role: req.Role, Entity: req.Entity, Token: tok})
	return nil
}

func (s *server) listUsers(w http.ResponseWriter, r *http.Request, _ *principal) error {
	if _, err := query(r); err != nil {
		return err
	}
	us, err := s.db.ListUsers(r.Context(), "")
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"users": us})
	return nil
}

// ---- audit ----

func (s *server) listAudit(w http.ResponseWriter, r *http.Request, p *principal) error {
	q, err := query(r, "entity", "limit", "cursor")
	if err != nil {
		return err
	}
	var f store.AuditFilter
	if f.Entity, err = p.entityFilter(q.Get("entity")); err != nil {
		return err
	}
	if f.Limit, err = parseLimit(q.Get("limit")); err != nil {
		return err
	}
	if f.BeforeID, err = parseCursor(q.Get("cursor")); err != nil {
		return err
	}
	es, err := s.db.ListAudit(r.Context(), f)
	if err != nil {
		return err
	}
	resp := map[string]any{"entries": es}
	if len(es) > 0 && (f.Limit == 0 && len(es) == 100 || len(es) == f.Limit) {
		resp["next_cursor"] = strconv.FormatInt(es[len(es)-1].ID, 10)
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}
