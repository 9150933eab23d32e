package pluginhost

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// privileges are what the agent process may do to confine a plugin.
type privileges struct {
	// setIDs: it may run the plugin as another user (root, or
	// CAP_SETUID and CAP_SETGID effective).
	setIDs bool
	// newNetns: it may give the plugin a network namespace of its own
	// (root, or CAP_SYS_ADMIN effective).
	newNetns bool
}

// processPrivileges reads the calling process's privileges. Capabilities
// that cannot be read count as absent.
func processPrivileges() privileges {
	root := os.Geteuid() == 0
	eff := effectiveCaps()
	has := func(c uintptr) bool { return eff&(1<<c) != 0 }
	return privileges{
		setIDs:   root || has(unix.CAP_SETUID) && has(unix.CAP_SETGID),
		newNetns: root || has(unix.CAP_SYS_ADMIN),
	}
}

// effectiveCaps returns the calling thread's effective capability set (0 if
// it cannot be read).
func effectiveCaps() uint64 {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return 0
	}
	return uint64(data[1].Effective)<<32 | uint64(data[0].Effective)
}

// SwitchesUser reports whether plugins started by this process run as
// another user than the agent's (Config.Credential, default nobody) unless
// Config.KeepPrivileges is set: it is root, or holds CAP_SETUID and
// CAP_SETGID. Such a plugin must be able to read its model files as that
// user.
func SwitchesUser() bool { return processPrivileges().setIDs }

// procAttr returns the attributes of a plugin process started by a process
// with privileges pv: killed when the agent dies; as another user
// (cfg.Credential, default nobody) when pv allows it; without network
// (a new, empty network namespace) when pv allows it and cfg.Network is
// not set. cfg.KeepPrivileges keeps the agent's user and network.
func procAttr(cfg *Config, pv privileges) *syscall.SysProcAttr {
	attr := &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if cfg.KeepPrivileges {
		return attr
	}
	if pv.setIDs {
		cred := cfg.Credential
		if cred == nil {
			cred = &syscall.Credential{Uid: NobodyID, Gid: NobodyID, Groups: []uint32{}}
		}
		attr.Credential = cred
	}
	if pv.newNetns && !cfg.Network {
		attr.Cloneflags = syscall.CLONE_NEWNET
	}
	return attr
}

// withoutAmbientCaps runs start, which starts the plugin process, on an OS
// thread whose ambient capability set is empty, so that the plugin gets no
// capability from the agent: ambient capabilities (systemd's
// AmbientCapabilities=, which gives the agent CAP_NET_RAW and CAP_NET_ADMIN)
// survive execve and a change between non-root users, and a new process
// inherits them from the thread that forks it. syscall.SysProcAttr can only
// add ambient capabilities, and syscall.AllThreadsSyscall, which would clear
// them for the whole process, fails in cgo builds, so the set is cleared on
// this one thread. The thread keeps its empty set afterwards: ambient
// capabilities only matter at execve, and nothing the agent executes
// (plugins, tcpdump -ddd) needs them. The thread's permitted and effective
// sets, which the agent's own capture uses, are not changed. (A confined
// plugin is started from a thread of its own instead, startConfined, which
// clears the set the same way.)
func withoutAmbientCaps(start func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := clearAmbientCaps(); err != nil {
		return err
	}
	return start()
}

// clearAmbientCaps empties the calling thread's ambient capability set.
func clearAmbientCaps() error {
	// EINVAL: a kernel before 4.3, which has no ambient capabilities.
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("clear ambient capabilities: %w", err)
	}
	return nil
}
