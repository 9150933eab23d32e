package state

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/pki"
	"github.com/vigil-edge/vigil/pki/pkitest"
)

// TestReplaceCredentialsConcurrentLoad: the uplink renews (ReplaceCredentials)
// while the updater's fetcher loads the credentials (LoadCredentials, which
// completes or discards a staged renewal). A load that runs while a renewal
// is being staged must not take it for an interrupted one: discarding the
// staged key between its write and the certificate's leaves the new
// certificate with the old key, and the agent can never connect again.
func TestReplaceCredentialsConcurrentLoad(t *testing.T) {
	d := pkitest.New(t, "vigil.test")
	dir := enrolled(t, d)
	for i := range 30 {
		key, _ := pki.NewKey()
		csr, _ := pki.NewCSR(key, "a-1")
		chain, err := d.CA.SignAgentCSR(csr, "acme", "a-1", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		var stop atomic.Bool
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				_, _ = dir.LoadCredentials() // may fail while the files change
			}
		}()
		rerr := dir.ReplaceCredentials(key, chain)
		stop.Store(true)
		wg.Wait()
		creds, err := dir.LoadCredentials()
		if err != nil {
			t.Fatalf("renewal %d (ReplaceCredentials: %v): credentials broken: %v", i, rerr, err)
		}
		if rerr != nil {
			t.Fatalf("renewal %d: ReplaceCredentials: %v", i, rerr)
		}
		if !KeyMatches(key, creds.Cert.Leaf) {
			t.Fatalf("renewal %d: the renewed credentials are not loaded", i)
		}
	}
}
