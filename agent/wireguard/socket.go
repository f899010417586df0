package wireguard

import (
	"bufio"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// SocketDir is where userspace WireGuard serves its UAPI sockets.
const SocketDir = "/var/run/wireguard"

// SocketPath is the UAPI socket of interface name.
func SocketPath(name string) string { return filepath.Join(SocketDir, name+".sock") }

// SocketAnswers reports whether a userspace WireGuard process answers on the
// UAPI socket of name, and its process id.
func SocketAnswers(name string) (int, bool) {
	st, pid := socketState(name)
	return pid, st == socketServing
}

// socketStatus is what the UAPI socket of a TUN link says about its owner.
type socketStatus int

const (
	// socketServing: a process answered "get" with errno=0.
	socketServing socketStatus = iota
	// socketDead: no socket file, or nobody listens on it: the TUN carries
	// no traffic and may be replaced.
	socketDead
	// socketBusy: something holds the socket but did not answer in time
	// (a process starting or under load): never a reason to delete.
	socketBusy
)

func socketState(name string) (socketStatus, int) {
	c, err := net.DialTimeout("unix", SocketPath(name), time.Second)
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ECONNREFUSED) {
			return socketDead, 0
		}
		return socketBusy, 0
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	pid := 0
	if uc, ok := c.(*net.UnixConn); ok {
		if raw, err := uc.SyscallConn(); err == nil {
			_ = raw.Control(func(fd uintptr) {
				if cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil {
					pid = int(cred.Pid)
				}
			})
		}
	}
	if _, err := c.Write([]byte("get=1\n\n")); err != nil {
		return socketBusy, pid
	}
	s := bufio.NewScanner(c)
	s.Buffer(make([]byte, 64*1024), 16*1024*1024)
	for s.Scan() {
		if strings.HasPrefix(s.Text(), "errno=") {
			if s.Text() == "errno=0" {
				return socketServing, pid
			}
			return socketBusy, pid
		}
	}
	return socketBusy, pid
}
