package sign

import (
	"errors"
	"testing"
)

func TestPassphraseSources(t *testing.T) {
	noTTY := func() (*terminal, error) { return nil, errors.New("no terminal") }
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == PassphraseEnv {
				return v
			}
			return ""
		}
	}
	p, err := passphrase(env("from-env-123"), noTTY, true)
	if err != nil || string(p) != "from-env-123" {
		t.Fatalf("from env: %q %v", p, err)
	}
	if _, err := passphrase(env(""), noTTY, false); err == nil {
		t.Fatal("no env and no terminal: want an error, not a passphrase from a pipe")
	}
}
