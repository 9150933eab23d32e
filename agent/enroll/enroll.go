// Package enroll performs the agent's one-time enrollment: it makes the
// agent's key on the sensor, sends a CSR with the enrollment token over a
// TLS connection verified against the CA pin (ENROLL stream), and stores the
// issued certificate, the deployment's root CA and the identity in the state
// directory.
package enroll

import (
	"context"
	"crypto/ecdsa"
	"crypto/subtle"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/vigil-edge/vigil/agent/state"
	"github.com/vigil-edge/vigil/agent/uplink"
	"github.com/vigil-edge/vigil/internal/buildinfo"
	"github.com/vigil-edge/vigil/pki"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// ErrAlreadyEnrolled reports a state directory that already holds an identity.
var ErrAlreadyEnrolled = errors.New("already enrolled (use --force to replace the identity)")

// Options are the inputs of an enrollment.
type Options struct {
	Server   string    // HOST:PORT
	Token    string    // secret: never logged
	Pin      string    // "sha256:<hex>" of the root CA's SPKI
	StateDir state.Dir // created 0700 if missing
	Force    bool      // replace an existing identity
	Hostname string    // default os.Hostname()
	Timeout  time.Duration
	// QUIC overrides the QUIC configuration (tests).
	QUIC *quic.Config
}

// Enroll enrolls the agent and returns its identity. A refusal by the server
// is returned as a *uplink.ServerError carrying the server's code and message.
func Enroll(ctx context.Context, o Options, log *slog.Logger) (*state.Identity, error) {
	host, _, err := state.SplitServer(o.Server)
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	if o.Token == "" {
		return nil, errors.New("enroll: empty token")
	}
	wantPin, err := pki.ParsePin(o.Pin)
	if err != nil {
		return nil, fmt.Errorf("enroll: ca pin: %w", err)
	}
	if o.StateDir == "" {
		return nil, errors.New("enroll: no state directory")
	}
	if err := os.MkdirAll(string(o.StateDir), 0o700); err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	// identity.json marks a complete enrollment (it is written last, and the
	// agent and the installers go by it): key and certificate files without
	// it are what an interrupted enrollment left, and are replaced.
	if _, err := os.Lstat(o.StateDir.Path(state.IdentityFile)); err == nil && !o.Force {
		return nil, fmt.Errorf("enroll into %s: %w", o.StateDir, ErrAlreadyEnrolled)
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	if o.Hostname == "" {
		o.Hostname, _ = os.Hostname()
	}
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()

	key, err := pki.NewKey()
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	csr, err := pki.NewCSR(key, o.Hostname)
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	log.Info("enrolling", "server", o.Server)

	conn, err := quic.DialAddr(ctx, o.Server, pki.PinnedTLSConfig(o.Pin, host), o.QUIC)
	if err != nil {
		return nil, fmt.Errorf("enroll: connect to %s: %w", o.Server, err)
	}
	defer conn.CloseWithError(quic.ApplicationErrorCode(wirev1.CodeNoError), "enrolled")
	st, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return nil, fmt.Errorf("enroll: open stream: %w", err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = st.SetDeadline(dl)
	}
	if err := wirev1.Write(st, &wirev1.StreamHeader{
		Kind: wirev1.StreamKind_STREAM_KIND_ENROLL, ProtocolVersion: wirev1.ProtocolVersion, AgentVersion: buildinfo.Version,
	}, 0); err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	if err := wirev1.Write(st, &wirev1.EnrollRequest{Token: o.Token, CsrDer: csr, Hostname: o.Hostname}, 0); err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	var resp wirev1.EnrollResponse
	if err := wirev1.NewReader(st, 0).Read(&resp); err != nil {
		if se, ok := uplink.AsServerError(err); ok {
			return nil, fmt.Errorf("enroll: %w", se)
		}
		return nil, fmt.Errorf("enroll: read response: %w", err)
	}
	if e := resp.GetError(); e != nil {
		return nil, fmt.Errorf("enroll: %w", &uplink.ServerError{Code: wirev1.ErrorCode(e.Code), Message: e.Message})
	}

	chain, root, err := checkResponse(&resp, key, wantPin)
	if err != nil {
		return nil, fmt.Errorf("enroll: server response: %w", err)
	}
	td, err := state.ParseTrustDomain(chain[0])
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	ident, err := pki.IdentityFromCert(chain[0], td)
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	if ident.AgentID != resp.AgentId || ident.Entity != resp.Entity {
		return nil, fmt.Errorf("enroll: certificate names %s, response says agent %q of %q", ident, resp.AgentId, resp.Entity)
	}
	id := &state.Identity{AgentID: ident.AgentID, Entity: ident.Entity, Server: o.Server, TrustDomain: td}

	// identity.json goes last: it marks a complete enrollment.
	_ = os.Remove(o.StateDir.Path(state.IdentityFile))
	if err := o.StateDir.DiscardRenewal(); err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	if err := pki.WriteKey(o.StateDir.Path(state.KeyFile), key); err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	if err := pki.WriteCerts(o.StateDir.Path(state.CertFile), resp.CertChainDer); err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	if err := pki.WriteCerts(o.StateDir.Path(state.CAFile), [][]byte{root.Raw}); err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	if err := matchOwner(string(o.StateDir), state.KeyFile, state.CertFile, state.CAFile); err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	if err := o.StateDir.WriteIdentity(id); err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	if err := matchOwner(string(o.StateDir), state.IdentityFile); err != nil {
		_ = os.Remove(o.StateDir.Path(state.IdentityFile))
		return nil, fmt.Errorf("enroll: %w", err)
	}
	if behind := time.Until(chain[0].NotBefore); behind > 0 {
		log.Warn("this sensor's clock is behind the server's; set it right (NTP)", "behind", behind.Round(time.Second))
	}
	log.Info("enrolled", "agent_id", id.AgentID, "entity", id.Entity, "not_after", chain[0].NotAfter)
	return id, nil
}

// checkResponse verifies the issued chain: the root matches the pin, the
// leaf carries our key and chains to the root for client authentication.
func checkResponse(resp *wirev1.EnrollResponse, key *ecdsa.PrivateKey, wantPin []byte) ([]*x509.Certificate, *x509.Certificate, error) {
	if len(resp.CertChainDer) == 0 || len(resp.RootCaDer) == 0 {
		return nil, nil, errors.New("no certificate chain or root CA")
	}
	root, err := x509.ParseCertificate(resp.RootCaDer)
	if err != nil {
		return nil, nil, fmt.Errorf("parse root CA: %w", err)
	}
	gotPin, err := pki.ParsePin(pki.SPKIPin(root))
	if err != nil || subtle.ConstantTimeCompare(gotPin, wantPin) != 1 {
		return nil, nil, errors.New("the root CA does not match --ca-pin")
	}
	chain := make([]*x509.Certificate, len(resp.CertChainDer))
	for i, der := range resp.CertChainDer {
		if chain[i], err = x509.ParseCertificate(der); err != nil {
			return nil, nil, fmt.Errorf("parse certificate %d: %w", i, err)
		}
	}
	if !state.KeyMatches(key, chain[0]) {
		return nil, nil, errors.New("the certificate does not carry the agent's key")
	}
	roots := x509.NewCertPool()
	roots.AddCert(root)
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	// A sensor clock behind the server's by more than pki.ClockSkew must not
	// refuse the certificate the spent token bought: it is checked at its
	// issuance then. The server checks it with its own clock.
	at := time.Now()
	if at.Before(chain[0].NotBefore) {
		at = chain[0].NotBefore
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: at,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return nil, nil, fmt.Errorf("verify certificate: %w", err)
	}
	return chain, root, nil
}

// matchOwner gives the enrollment files the owner of the state directory
// when enroll runs as root: an admin who runs the printed enroll command with
// sudo must not leave root-owned credentials that the service user (vigil)
// cannot read. Modes are kept (the key stays 0600).
func matchOwner(dir string, files ...string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("stat state dir: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || st.Uid == 0 {
		return nil
	}
	for _, f := range files {
		if err := chownFile(filepath.Join(dir, f), int(st.Uid), int(st.Gid)); err != nil {
			return fmt.Errorf("give %s to the state directory's owner: %w", f, err)
		}
	}
	return nil
}

// chownFile gives path to uid:gid through a descriptor of the file itself:
// the owner of the directory could have replaced it with a symbolic link
// (not followed) or a hard link (refused) to a file of root's.
func chownFile(path string, uid, gid int) error {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); !fi.Mode().IsRegular() || !ok || st.Nlink != 1 {
		return fmt.Errorf("%s is not a regular file with one link", path)
	}
	return f.Chown(uid, gid)
}
