package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Prefix starts the name of every namespace the lab creates:
// vigil-lab-<pid>-br (the bridge) and vigil-lab-<pid>-<n> (host n), so
// several labs may run at once and --cleanup can tell stale ones (whose
// process is gone) from live ones.
const Prefix = "vigil-lab-"

// ns is one network namespace.
type ns struct{ name string }

func ipCmd(ctx context.Context, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, "ip", args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}

// do runs fn on an OS thread inside the namespace. Sockets created by fn
// stay in the namespace after it returns, so listeners and connections can
// be used from any goroutine.
func (n ns) do(fn func() error) error {
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("open own namespace: %w", err)
	}
	defer orig.Close()
	target, err := os.Open(filepath.Join("/run/netns", n.name))
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("open namespace %s: %w", n.name, err)
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter namespace %s: %w", n.name, err)
	}
	ferr := fn()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		// Leave the thread locked: it exits with this goroutine instead of
		// running other goroutines in the wrong namespace.
		return errors.Join(ferr, fmt.Errorf("leave namespace %s: %w", n.name, err))
	}
	runtime.UnlockOSThread()
	return ferr
}

// dial connects from inside the namespace.
func (n ns) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := n.do(func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// listen opens a TCP listener inside the namespace.
func (n ns) listen(network, addr string) (net.Listener, error) {
	var l net.Listener
	err := n.do(func() error {
		var err error
		l, err = net.Listen(network, addr)
		return err
	})
	return l, err
}

// listenPacket opens a UDP socket inside the namespace.
func (n ns) listenPacket(network, addr string) (net.PacketConn, error) {
	var c net.PacketConn
	err := n.do(func() error {
		var err error
		c, err = net.ListenPacket(network, addr)
		return err
	})
	return c, err
}

// command runs a program inside the namespace (ip netns exec), killed when
// ctx ends.
func (n ns) command(ctx context.Context, prog string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.name, prog}, args...)...)
	cmd.WaitDelay = 2 * time.Second
	return cmd
}

// pids lists the processes in the namespace.
func (n ns) pids(ctx context.Context) []int {
	out, err := exec.CommandContext(ctx, "ip", "netns", "pids", n.name).Output()
	if err != nil {
		return nil
	}
	var ps []int
	for _, f := range strings.Fields(string(out)) {
		if p, err := strconv.Atoi(f); err == nil {
			ps = append(ps, p)
		}
	}
	return ps
}

// remove kills what still runs in the namespace (processes the lab started)
// and deletes it.
func (n ns) remove(ctx context.Context) error {
	for _, p := range n.pids(ctx) {
		_ = unix.Kill(p, unix.SIGKILL)
	}
	return ipCmd(ctx, "netns", "del", n.name)
}

// Namespaces lists the lab namespaces present on the machine.
func Namespaces(ctx context.Context) ([]string, error) {
	entries, err := os.ReadDir("/run/netns")
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list namespaces: %w", err)
	}
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), Prefix) {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// ownerPID is the pid in a lab namespace's name (0 if none).
func ownerPID(name string) int {
	rest := strings.TrimPrefix(name, Prefix)
	p, _ := strconv.Atoi(strings.SplitN(rest, "-", 2)[0])
	return p
}

// ownedBy selects the namespaces of the lab process pid: named exactly as
// that lab names them (build), vigil-lab-<pid>-...
func ownedBy(names []string, pid int) []string {
	if pid <= 0 {
		return nil
	}
	prefix := fmt.Sprintf("%s%d-", Prefix, pid)
	var out []string
	for _, name := range names {
		if strings.HasPrefix(name, prefix) && len(name) > len(prefix) {
			out = append(out, name)
		}
	}
	return out
}

// stale selects the lab namespaces to remove: all with force, else those
// whose owner is gone or is this process, self (and names without a pid).
func stale(names []string, force bool, self int, alive func(pid int) bool) []string {
	var out []string
	for _, name := range names {
		if p := ownerPID(name); !force && p > 0 && p != self && alive(p) {
			continue // a live lab owns it
		}
		out = append(out, name)
	}
	return out
}

// pidAlive: process p exists (a zombie counts; EPERM means it exists).
func pidAlive(p int) bool {
	err := unix.Kill(p, 0)
	return err == nil || errors.Is(err, unix.EPERM)
}

// removeAll removes the namespaces names, killing what still runs inside,
// and returns those removed.
func removeAll(ctx context.Context, names []string) ([]string, error) {
	var removed []string
	var errs []error
	for _, name := range names {
		if err := (ns{name}).remove(ctx); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, name)
	}
	return removed, errors.Join(errs...)
}

// removeOwned removes the namespaces of the lab process pid (and only
// those), killing what still runs inside. It returns the names removed.
func removeOwned(ctx context.Context, pid int) ([]string, error) {
	names, err := Namespaces(ctx)
	if err != nil {
		return nil, err
	}
	return removeAll(ctx, ownedBy(names, pid))
}

// Cleanup removes stale lab namespaces: those whose owning lab process is
// gone (all of them with force), killing what still runs inside. It returns
// the names removed.
func Cleanup(ctx context.Context, force bool) ([]string, error) {
	names, err := Namespaces(ctx)
	if err != nil {
		return nil, err
	}
	return removeAll(ctx, stale(names, force, os.Getpid(), pidAlive))
}
