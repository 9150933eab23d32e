package endpoint

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/vigil-edge/vigil/pki"
	"github.com/vigil-edge/vigil/pki/token"
	"github.com/vigil-edge/vigil/server/store"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

const (
	maxTokenLen    = 512
	maxHostnameLen = 253
	enrollTimeout  = 30 * time.Second
)

// newAgentID returns "a-" followed by 12 random hex digits.
func newAgentID() (string, error) {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("new agent id: %w", err)
	}
	return "a-" + hex.EncodeToString(b[:]), nil
}

// enrollRefusal is a refusal sent to the agent in EnrollResponse.error.
type enrollRefusal struct {
	code   wirev1.ErrorCode
	msg    string // told to the agent
	result string // metric label
}

// handleEnroll serves an ENROLL stream (a connection without a client
// certificate): one EnrollRequest, one EnrollResponse. A refusal is an
// EnrollResponse with error set (CodeTokenInvalid, CodeBadCSR, CodeInternal);
// only a malformed frame closes the connection. The CSR is checked before
// the token is consumed, so a broken CSR does not burn a token. The token is
// never logged.
func (e *Endpoint) handleEnroll(ctx context.Context, p *peer, r *wirev1.Reader, w io.Writer) error {
	setReadDeadline(w, enrollTimeout)
	var req wirev1.EnrollRequest
	if err := r.Read(&req); err != nil {
		if errors.Is(err, io.EOF) {
			return nil
		}
		return err
	}
	setReadDeadline(w, 0)
	resp, ref := e.enroll(ctx, p, &req)
	if ref != nil {
		e.m.enrollments.WithLabelValues(ref.result).Inc()
		p.log.Info("enrollment refused", "code", ref.code.String(), "reason", ref.msg)
		resp = &wirev1.EnrollResponse{Error: &wirev1.Error{Code: uint32(ref.code), Message: ref.msg}}
	} else {
		e.m.enrollments.WithLabelValues("ok").Inc()
		p.log.Info("agent enrolled", "agent", resp.AgentId, "entity", resp.Entity, "hostname", req.Hostname)
	}
	if err := writeFrame(w, resp); err != nil {
		return fmt.Errorf("write enroll response: %w", err)
	}
	return nil
}

func (e *Endpoint) enroll(ctx context.Context, p *peer, req *wirev1.EnrollRequest) (*wirev1.EnrollResponse, *enrollRefusal) {
	tokenInvalid := &enrollRefusal{wirev1.CodeTokenInvalid, "enrollment token invalid, expired or already used", "token_invalid"}
	if req.Token == "" || len(req.Token) > maxTokenLen {
		return nil, tokenInvalid
	}
	hostname := strings.TrimSpace(req.Hostname)
	if len(hostname) > maxHostnameLen {
		return nil, &enrollRefusal{wirev1.CodeProtocol, "hostname too long", "bad_request"}
	}
	if _, err := pki.CheckCSR(req.CsrDer); err != nil {
		return nil, &enrollRefusal{wirev1.CodeBadCSR, err.Error(), "bad_csr"}
	}
	entity, err := e.st.ConsumeEnrollToken(ctx, req.Token, e.cfg.now())
	if err != nil {
		if errors.Is(err, store.ErrTokenInvalid) {
			return nil, tokenInvalid
		}
		p.log.Error("enroll: consume token", "err", err)
		return nil, &enrollRefusal{wirev1.CodeInternal, "server error; retry later", "internal"}
	}
	internal := func(what string, err error) *enrollRefusal {
		// The token is spent: the admin must issue a new one.
		p.log.Error("enroll: "+what, "entity", entity, "err", err)
		return &enrollRefusal{wirev1.CodeInternal, "server error after the token was used; ask for a new token", "internal"}
	}
	agentID, err := newAgentID()
	if err != nil {
		return nil, internal("agent id", err)
	}
	chain, err := e.ca.SignAgentCSR(req.CsrDer, entity, agentID, e.cfg.CertTTL)
	if err != nil {
		if errors.Is(err, pki.ErrBadCSR) {
			return nil, &enrollRefusal{wirev1.CodeBadCSR, err.Error(), "bad_csr"}
		}
		return nil, internal("sign", err)
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return nil, internal("parse issued certificate", err)
	}
	now := e.cfg.now()
	tokenID, _, _ := token.Parse(req.Token, store.EnrollTokenPrefix) // consumed: well formed
	if err := e.st.RegisterAgent(ctx, store.Agent{
		ID:           agentID,
		Entity:       entity,
		Hostname:     hostname,
		CertSerial:   serialHex(leaf),
		CertNotAfter: leaf.NotAfter,
		EnrolledAt:   now,
		EnrollToken:  tokenID,
	}); err != nil {
		return nil, internal("register agent", err)
	}
	return &wirev1.EnrollResponse{
		CertChainDer: chain,
		RootCaDer:    e.ca.Root.Raw,
		AgentId:      agentID,
		Entity:       entity,
	}, nil
}

// serialHex is the certificate serial number as lower-case hex.
func serialHex(c *x509.Certificate) string { return c.SerialNumber.Text(16) }

// renew signs a new certificate for the identity of the connection's
// certificate (never one named by the agent) and records it.
func (e *Endpoint) renew(ctx context.Context, p *peer, req *wirev1.RenewRequest) *wirev1.RenewResponse {
	fail := func(code wirev1.ErrorCode, msg, result string) *wirev1.RenewResponse {
		e.m.renewals.WithLabelValues(result).Inc()
		p.log.Info("renewal refused", "code", code.String(), "reason", msg)
		return &wirev1.RenewResponse{Error: &wirev1.Error{Code: uint32(code), Message: msg}}
	}
	// The limit is the agent's, not the connection's: an agent that
	// reconnects for every renewal must not get a signature (and a row in
	// the certificates table) per reconnect.
	e.renewMu.Lock()
	now := e.cfg.now()
	last, seen := e.lastRenew[p.id.AgentID]
	tooSoon := seen && now.Sub(last) < minRenewInterval && now.Sub(last) > -minRenewInterval
	if !tooSoon {
		e.lastRenew[p.id.AgentID] = now
	}
	e.renewMu.Unlock()
	if tooSoon {
		return fail(wirev1.CodeOverloaded, "renewal requested too often", "too_often")
	}
	chain, err := e.ca.SignAgentCSR(req.CsrDer, p.id.Entity, p.id.AgentID, e.cfg.CertTTL)
	if err != nil {
		if errors.Is(err, pki.ErrBadCSR) {
			return fail(wirev1.CodeBadCSR, err.Error(), "bad_csr")
		}
		p.log.Error("renew: sign", "err", err)
		return fail(wirev1.CodeInternal, "server error; retry later", "internal")
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		p.log.Error("renew: parse issued certificate", "err", err)
		return fail(wirev1.CodeInternal, "server error; retry later", "internal")
	}
	if err := e.st.RecordCert(ctx, p.id.AgentID, serialHex(leaf), leaf.NotAfter); err != nil {
		p.log.Error("renew: record certificate", "err", err)
		return fail(wirev1.CodeInternal, "server error; retry later", "internal")
	}
	e.m.renewals.WithLabelValues("ok").Inc()
	p.log.Info("certificate renewed", "not_after", leaf.NotAfter)
	return &wirev1.RenewResponse{CertChainDer: chain}
}

// minRenewInterval limits renewals per agent (over all its connections).
const minRenewInterval = 10 * time.Second
