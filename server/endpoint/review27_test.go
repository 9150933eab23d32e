package endpoint_test

import (
	"testing"

	"github.com/vigil-edge/vigil/pki/token"
	"github.com/vigil-edge/vigil/server/servertest"
	"github.com/vigil-edge/vigil/server/store"
)

// TestEnrollRecordsTokenUser: an enrollment token's used_by names the agent
// it enrolled. It stayed empty, and neither audit entry named both the
// token and the agent: an admin whose token leaked could not tell which
// agent to revoke.
func TestEnrollRecordsTokenUser(t *testing.T) {
	s := servertest.Start(t, servertest.Options{})
	ctx := ctxT(t)
	tok := s.EnrollToken(t, "e1")
	other := s.EnrollToken(t, "e1")
	a, err := s.EnrollWith(ctx, tok, "h")
	if err != nil {
		t.Fatal(err)
	}
	tokID, _, err := token.Parse(tok, store.EnrollTokenPrefix)
	if err != nil {
		t.Fatal(err)
	}
	otherID, _, err := token.Parse(other, store.EnrollTokenPrefix)
	if err != nil {
		t.Fatal(err)
	}
	toks, err := s.Store.ListEnrollTokens(ctx, "e1")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]store.EnrollToken{}
	for _, et := range toks {
		got[et.ID] = et
	}
	if et := got[tokID]; et.UsedAt.IsZero() || et.UsedBy != a.ID {
		t.Errorf("used token: used_at %v, used_by %q; want agent %q", et.UsedAt, et.UsedBy, a.ID)
	}
	if et := got[otherID]; !et.UsedAt.IsZero() || et.UsedBy != "" {
		t.Errorf("unused token: used_at %v, used_by %q", et.UsedAt, et.UsedBy)
	}
}
