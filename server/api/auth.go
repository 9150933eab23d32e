package api

import (
	"net/http"
	"strings"

	"github.com/vigil-edge/vigil/server/store"
)

// permission is what a route needs. Every route names exactly one.
type permission int

const (
	permRead         permission = iota // read findings, agents, suppressions, models, rollouts; live stream, exports (scoped)
	permTriage                         // triage findings, lift suppressions (scoped)
	permManageAgents                   // revoke agents, create/list/revoke enrollment tokens (scoped)
	permReadAudit                      // read the audit log (scoped)
	permVerifyAudit                    // verify the whole audit chain: CERT roles only
	permAdmin                          // users, metrics: admin only
)

// rolePerms is the whole role matrix.
var rolePerms = map[string]map[permission]bool{
	store.RoleAdmin: {permRead: true, permTriage: true, permManageAgents: true, permReadAudit: true,
		permVerifyAudit: true, permAdmin: true},
	store.RoleAnalyst:     {permRead: true, permTriage: true, permReadAudit: true, permVerifyAudit: true},
	store.RoleEntityAdmin: {permRead: true, permTriage: true, permManageAgents: true, permReadAudit: true},
}

// principal is the authenticated caller. Handlers reach data only through
// its scope methods.
type principal struct {
	user store.User
}

// actor is the name recorded in the audit log.
func (p *principal) actor() string { return p.user.Name }

// scopeEntity is the one entity the caller is confined to, or "" for
// CERT-wide roles. Only entity-admins are confined.
func (p *principal) scopeEntity() string {
	if p.user.Role == store.RoleEntityAdmin {
		return p.user.Entity
	}
	return ""
}

// sees reports whether an object of entity is visible to the caller.
func (p *principal) sees(entity string) bool {
	s := p.scopeEntity()
	return s == "" || s == entity
}

// entityFilter merges an entity the client asked for with the caller's scope:
// a confined caller gets its entity when it asks for none, and 403 when it
// asks for another.
func (p *principal) entityFilter(requested string) (string, error) {
	s := p.scopeEntity()
	switch {
	case s == "":
		return requested, nil
	case requested == "" || requested == s:
		return s, nil
	default:
		return "", errorf(http.StatusForbidden, "that entity is outside your scope")
	}
}

// authenticate resolves the bearer token of r.
func (s *server) authenticate(r *http.Request) (*principal, error) {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return nil, errUnauthenticated
	}
	u, err := s.db.Authenticate(r.Context(), strings.TrimSpace(tok))
	if err != nil {
		return nil, err // ErrUnauthorized → 401, others → 500
	}
	return &principal{user: u}, nil
}

// handlerFunc is an authenticated handler.
type handlerFunc func(w http.ResponseWriter, r *http.Request, p *principal) error

// guard wraps h with authentication and the permission check: the one place
// where access is decided.
func (s *server) guard(perm permission, h handlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, err := s.authenticate(r)
		if err != nil {
			writeError(w, r, s.log, err)
			return
		}
		if !rolePerms[p.user.Role][perm] {
			writeError(w, r, s.log, errForbidden)
			return
		}
		r = r.WithContext(store.WithRemote(r.Context(), r.RemoteAddr))
		if err := h(w, r, p); err != nil {
			writeError(w, r, s.log, err)
		}
	}
}
