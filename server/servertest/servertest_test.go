package servertest_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/vigil-edge/vigil/server/servertest"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

func apiClient(s *servertest.Server) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: s.Roots},
	}}
}

func apiDo(t *testing.T, s *servertest.Server, method, path string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, s.APIURL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+s.AdminToken)
	resp, err := apiClient(s).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestAPIRevokeDisconnects: revoking through the HTTPS API (admin token from
// init) drops the agent's live connection at once and refuses it after.
func TestAPIRevokeDisconnects(t *testing.T) {
	s := servertest.Start(t, servertest.Options{})
	a := s.Enroll(t, "lab")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := s.Dial(ctx, &a.Cert)
	if err != nil {
		t.Fatal(err)
	}
	st, err := servertest.OpenStream(ctx, c, wirev1.StreamKind_STREAM_KIND_CONTROL)
	if err != nil {
		t.Fatal(err)
	}
	if err := wirev1.Write(st, &wirev1.AgentControl{Msg: &wirev1.AgentControl_Hello{Hello: &wirev1.Hello{ProtocolVersion: 1}}}, 0); err != nil {
		t.Fatal(err)
	}
	var ack wirev1.ServerControl
	if err := wirev1.NewReader(st, 0).Read(&ack); err != nil || ack.GetHelloAck().GetAgentId() != a.ID {
		t.Fatalf("hello ack %v %v", &ack, err)
	}
	if code, body := apiDo(t, s, "GET", "/api/v1/agents/"+a.ID); code != 200 || !strings.Contains(body, a.ID) {
		t.Fatalf("get agent: %d %s", code, body)
	}
	if code, body := apiDo(t, s, "POST", "/api/v1/agents/"+a.ID+"/revoke"); code/100 != 2 {
		t.Fatalf("revoke: %d %s", code, body)
	}
	select {
	case <-c.Context().Done():
	case <-time.After(10 * time.Second):
		t.Fatal("revoked agent still connected")
	}
	var ae *quic.ApplicationError
	if err := context.Cause(c.Context()); !errors.As(err, &ae) || wirev1.ErrorCode(ae.ErrorCode) != wirev1.CodeRevoked {
		t.Fatalf("closed with %v, want revoked", err)
	}
	if _, err := s.Dial(ctx, &a.Cert); err == nil {
		// The client may finish its side of the handshake first; the
		// server's alert closes the connection right after.
		t.Log("dial returned before the server's refusal arrived")
	}
}

func TestMetricsServed(t *testing.T) {
	s := servertest.Start(t, servertest.Options{})
	s.Enroll(t, "lab")
	code, body := apiDo(t, s, "GET", "/metrics")
	if code != 200 {
		t.Fatalf("metrics: %d", code)
	}
	for _, m := range []string{"vigil_server_quic_connections", `vigil_server_enrollments_total{result="ok"} 1`, "vigil_server_commit_seconds"} {
		if !strings.Contains(body, m) {
			t.Errorf("metrics lack %s", m)
		}
	}
}
