package state

import (
	"crypto/ecdsa"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/pki"
	"github.com/vigil-edge/vigil/pki/pkitest"
)

func TestParseIdentity(t *testing.T) {
	tests := []struct {
		name, in string
		ok       bool
	}{
		{"valid", `{"agent_id":"a-0123456789ab","entity":"acme","server":"vigil.example:4433","trust_domain":"vigil.test"}`, true},
		{"ipv6", `{"agent_id":"a-1","entity":"acme","server":"[::1]:4433","trust_domain":"vigil.test"}`, true},
		{"unknown field", `{"agent_id":"a-1","entity":"acme","server":"h:1","trust_domain":"t","x":1}`, false},
		{"bad agent", `{"agent_id":"A B","entity":"acme","server":"h:1","trust_domain":"t"}`, false},
		{"bad server", `{"agent_id":"a-1","entity":"acme","server":"nohost","trust_domain":"t"}`, false},
		{"bad port", `{"agent_id":"a-1","entity":"acme","server":"h:44x","trust_domain":"t"}`, false},
		{"trailing", `{"agent_id":"a-1","entity":"acme","server":"h:1","trust_domain":"t"} {}`, false},
		{"empty", ``, false},
		{"not json", `agent_id: a`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseIdentity([]byte(tt.in))
			if (err == nil) != tt.ok {
				t.Fatalf("ParseIdentity: err %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func FuzzParseIdentity(f *testing.F) {
	f.Add([]byte(`{"agent_id":"a-0123456789ab","entity":"acme","server":"vigil.example:4433","trust_domain":"vigil.test"}`))
	f.Add([]byte(`{"server":"[::1]:1"}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		id, err := ParseIdentity(data)
		if err != nil {
			return
		}
		if err := id.Validate(); err != nil {
			t.Fatalf("parsed identity does not validate: %v", err)
		}
	})
}

// enrolled writes a state dir for an agent of d and returns it.
func enrolled(t *testing.T, d *pkitest.Deployment) Dir {
	t.Helper()
	dir := Dir(t.TempDir())
	c := d.AgentCert(t, "acme", "a-1", time.Hour)
	if err := pki.WriteKey(dir.Path(KeyFile), c.PrivateKey.(*ecdsaKey)); err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteCerts(dir.Path(CertFile), c.Certificate); err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteCerts(dir.Path(CAFile), [][]byte{d.CA.Root.Raw}); err != nil {
		t.Fatal(err)
	}
	if err := dir.WriteIdentity(&Identity{AgentID: "a-1", Entity: "acme", Server: "localhost:4433", TrustDomain: d.CA.TrustDomain}); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestLoadAndReplaceCredentials(t *testing.T) {
	d := pkitest.New(t, "vigil.test")
	dir := enrolled(t, d)
	creds, err := dir.LoadCredentials()
	if err != nil {
		t.Fatal(err)
	}
	if creds.Identity.AgentID != "a-1" || creds.Cert.Leaf == nil {
		t.Fatalf("creds %+v", creds.Identity)
	}
	if fi, err := os.Stat(dir.Path(IdentityFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("identity.json mode %v %v", fi.Mode(), err)
	}
	if ra := creds.RenewAt(); !ra.After(creds.NotBefore()) || !ra.Before(creds.NotAfter()) {
		t.Fatalf("RenewAt %v outside validity", ra)
	}

	// A renewal: new key, new chain.
	key, _ := pki.NewKey()
	csr, _ := pki.NewCSR(key, "a-1")
	chain, err := d.CA.SignAgentCSR(csr, "acme", "a-1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// A chain for another key is refused.
	other, _ := pki.NewKey()
	if err := dir.ReplaceCredentials(other, chain); err == nil {
		t.Fatal("ReplaceCredentials accepted a mismatched key")
	}
	if err := dir.ReplaceCredentials(key, chain); err != nil {
		t.Fatal(err)
	}
	creds2, err := dir.LoadCredentials()
	if err != nil {
		t.Fatal(err)
	}
	if !KeyMatches(key, creds2.Cert.Leaf) {
		t.Fatal("loaded credentials are not the renewed ones")
	}
	if fi, _ := os.Stat(dir.Path(KeyFile)); fi.Mode().Perm() != 0o600 {
		t.Fatalf("agent.key mode %v", fi.Mode())
	}
}

func TestRecoverInterruptedRenewal(t *testing.T) {
	d := pkitest.New(t, "vigil.test")
	renewed := func(t *testing.T, dir Dir) (*ecdsaKey, [][]byte) {
		key, _ := pki.NewKey()
		csr, _ := pki.NewCSR(key, "a-1")
		chain, err := d.CA.SignAgentCSR(csr, "acme", "a-1", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return key, chain
	}
	tests := []struct {
		name    string
		stage   func(t *testing.T, dir Dir, key *ecdsaKey, chain [][]byte)
		renewed bool
	}{
		{"key staged only", func(t *testing.T, dir Dir, key *ecdsaKey, chain [][]byte) {
			_ = pki.WriteKey(dir.Path(KeyFile)+".new", key)
		}, false},
		{"both staged", func(t *testing.T, dir Dir, key *ecdsaKey, chain [][]byte) {
			_ = pki.WriteKey(dir.Path(KeyFile)+".new", key)
			_ = pki.WriteCerts(dir.Path(CertFile)+".new", chain)
		}, true},
		{"key renamed, cert staged", func(t *testing.T, dir Dir, key *ecdsaKey, chain [][]byte) {
			_ = pki.WriteKey(dir.Path(KeyFile), key)
			_ = pki.WriteCerts(dir.Path(CertFile)+".new", chain)
		}, true},
		{"garbage staged cert", func(t *testing.T, dir Dir, key *ecdsaKey, chain [][]byte) {
			_ = os.WriteFile(dir.Path(CertFile)+".new", []byte("junk"), 0o644)
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := enrolled(t, d)
			key, chain := renewed(t, dir)
			tt.stage(t, dir, key, chain)
			creds, err := dir.LoadCredentials()
			if err != nil {
				t.Fatal(err)
			}
			if got := KeyMatches(key, creds.Cert.Leaf); got != tt.renewed {
				t.Fatalf("renewed credentials loaded = %v, want %v", got, tt.renewed)
			}
			for _, n := range []string{KeyFile + ".new", CertFile + ".new"} {
				if _, err := os.Stat(filepath.Join(string(dir), n)); err == nil {
					t.Fatalf("%s left behind", n)
				}
			}
		})
	}
}

func TestLoadCredentialsMismatch(t *testing.T) {
	d := pkitest.New(t, "vigil.test")
	dir := enrolled(t, d)
	other, _ := pki.NewKey()
	_ = pki.WriteKey(dir.Path(KeyFile), other)
	if _, err := dir.LoadCredentials(); err == nil {
		t.Fatal("mismatched key accepted")
	}
	dir = enrolled(t, d)
	_ = dir.WriteIdentity(&Identity{AgentID: "a-2", Entity: "acme", Server: "h:1", TrustDomain: d.CA.TrustDomain})
	if _, err := dir.LoadCredentials(); err == nil {
		t.Fatal("identity.json naming another agent accepted")
	}
	if _, err := Dir(t.TempDir()).LoadCredentials(); err == nil {
		t.Fatal("empty dir accepted")
	}
}

type ecdsaKey = ecdsa.PrivateKey
