package pki

import (
	"errors"
	"testing"
	"time"
)

// TestSignAgentCSRIssuingCAExpired: once the issuing CA has expired (or
// the agent's certificate would end before it began), signing refuses with
// ErrIssuingCAExpiring instead of issuing a certificate whose NotAfter
// precedes its NotBefore, which no peer accepts: the enrolling sensor
// would spend its one-time token on it.
func TestSignAgentCSRIssuingCAExpired(t *testing.T) {
	for _, tt := range []struct {
		name string
		at   time.Duration // relative to the issuing CA's NotAfter
		ok   bool
	}{
		{"a day before the issuing CA ends", -24 * time.Hour, true},
		{"an hour after it ended", time.Hour, false},
		{"a year after", 365 * 24 * time.Hour, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ca := newTestCA(t)
			ca.now = func() time.Time { return ca.Issuing.NotAfter.Add(tt.at) }
			csr, _ := newCSR(t)
			chain, err := ca.SignAgentCSR(csr, "acme", "a-1", 0)
			if tt.ok {
				if err != nil {
					t.Fatal(err)
				}
				if len(chain) == 0 {
					t.Fatal("no chain")
				}
				return
			}
			if !errors.Is(err, ErrIssuingCAExpiring) {
				t.Fatalf("err = %v (chain of %d), want ErrIssuingCAExpiring", err, len(chain))
			}
		})
	}
}
