package sign

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/term"
)

// PassphraseEnv is the environment variable holding the signing-key passphrase for scripts.
const PassphraseEnv = "VIGIL_KEY_PASSPHRASE"

// Passphrase returns the signing-key passphrase: the value of VIGIL_KEY_PASSPHRASE if it is set
// and not empty, otherwise what the user types at a terminal prompt (on /dev/tty, or stdin if that
// is a terminal; nothing is echoed). With confirm (for keygen) the user types it twice. Without a
// terminal and without the variable it fails rather than read a passphrase from a pipe.
func Passphrase(confirm bool) ([]byte, error) {
	return passphrase(os.Getenv, openTerminal, confirm)
}

type terminal struct {
	fd  int
	out io.Writer
	c   io.Closer
}

func openTerminal() (*terminal, error) {
	if tty, err := os.OpenFile("/dev/tty", os.O_RDWR, 0); err == nil {
		if term.IsTerminal(int(tty.Fd())) {
			return &terminal{fd: int(tty.Fd()), out: tty, c: tty}, nil
		}
		tty.Close()
	}
	if term.IsTerminal(int(os.Stdin.Fd())) {
		return &terminal{fd: int(os.Stdin.Fd()), out: os.Stderr, c: io.NopCloser(nil)}, nil
	}
	return nil, errors.New("no terminal")
}

func passphrase(getenv func(string) string, open func() (*terminal, error), confirm bool) ([]byte, error) {
	if v := getenv(PassphraseEnv); v != "" {
		return []byte(v), nil
	}
	t, err := open()
	if err != nil {
		return nil, fmt.Errorf("passphrase: set %s or run in a terminal: %w", PassphraseEnv, err)
	}
	defer t.c.Close()
	read := func(prompt string) ([]byte, error) {
		fmt.Fprint(t.out, prompt)
		b, err := term.ReadPassword(t.fd)
		fmt.Fprintln(t.out)
		if err != nil {
			return nil, fmt.Errorf("passphrase: read: %w", err)
		}
		return b, nil
	}
	p, err := read("Passphrase for the signing key: ")
	if err != nil {
		return nil, err
	}
	if len(p) == 0 {
		return nil, errors.New("passphrase: empty")
	}
	if confirm {
		again, err := read("Repeat the passphrase: ")
		if err != nil {
			return nil, err
		}
		if subtle.ConstantTimeCompare(p, again) != 1 {
			return nil, errors.New("passphrase: the two entries differ")
		}
	}
	return p, nil
}
