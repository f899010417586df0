package bench

import (
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wgmesh/wgmesh/test/netns"
)

// TestFinishConnect drives finishConnect through the state a blocking connect is in when a
// signal interrupts it (the handshake in progress in the kernel), with a non-blocking
// connect in a namespace of its own: it completes against a listener and reports the
// refusal of a closed port, where connect() again would only say EALREADY.
func TestFinishConnect(t *testing.T) {
	netns.SkipUnlessRoot(t)
	ns := netns.NewForTest(t, "wgm-bench-conn")
	err := ns.Do(func() error {
		h, err := ns.Netlink()
		if err != nil {
			return err
		}
		defer h.Close()
		lo, err := h.LinkByName("lo")
		if err != nil {
			return err
		}
		if err := h.LinkSetUp(lo); err != nil {
			return err
		}
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			return err
		}
		defer ln.Close()
		open := netip.MustParseAddrPort(ln.Addr().String())
		closed := netip.AddrPortFrom(open.Addr(), open.Port()+1)
		for _, tc := range []struct {
			addr netip.AddrPort
			want error
		}{{open, nil}, {closed, unix.ECONNREFUSED}} {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
			if err != nil {
				return err
			}
			err = unix.Connect(fd, &unix.SockaddrInet4{Port: int(tc.addr.Port()), Addr: tc.addr.Addr().As4()})
			if !errors.Is(err, unix.EINPROGRESS) && err != nil {
				unix.Close(fd)
				return err
			}
			got := finishConnect(fd, time.Now().Add(connectTimeout))
			unix.Close(fd)
			if got != tc.want && !errors.Is(got, tc.want) {
				t.Errorf("finishConnect to %s = %v, want %v", tc.addr, got, tc.want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
