package cli

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	parse := func(args []string, w io.Writer) (string, error) {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(w)
		v := fs.String("v", "", "value")
		err := fs.Parse(args)
		return *v, err
	}
	run := func(_ context.Context, v string, log *slog.Logger) error {
		if v == "fail" {
			return errors.New("it failed")
		}
		log.Info("ran", "v", v)
		return nil
	}
	for _, c := range []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"-v", "x"}, 0, "msg=ran v=x"},
		{[]string{"-h"}, 0, "Usage of t"},
		{[]string{"-bogus"}, 2, "vigil-t: flag provided but not defined: -bogus"},
		{[]string{"-v", "fail"}, 1, "vigil-t: it failed"},
	} {
		var b bytes.Buffer
		if code := Run("vigil-t", c.args, &b, parse, run); code != c.code || !strings.Contains(b.String(), c.out) {
			t.Errorf("%q: exit %d, output %q; want %d and %q", c.args, code, b.String(), c.code, c.out)
		}
	}
}
