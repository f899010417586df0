package wireguard

import (
	"bufio"
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

// socketAnswers reports whether a userspace WireGuard process answers on the
// UAPI socket of name, and its process id.
func socketAnswers(name string) (int, bool) {
	c, err := net.DialTimeout("unix", SocketPath(name), time.Second)
	if err != nil {
		return 0, false
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
		return pid, false
	}
	s := bufio.NewScanner(c)
	s.Buffer(make([]byte, 64*1024), 16*1024*1024)
	for s.Scan() {
		if strings.HasPrefix(s.Text(), "errno=") {
			return pid, s.Text() == "errno=0"
		}
	}
	return pid, false
}
