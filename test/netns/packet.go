package netns

import (
	"errors"
	"fmt"
	"net"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// PacketSocket is a raw AF_PACKET socket on one interface of a namespace:
// Send puts frames on the wire exactly as given (any source MAC or
// address), Recv returns the frames the interface receives (not the ones it
// sends). Build frames with test/frame.
type PacketSocket struct {
	fd      int
	ifindex int
	where   string
}

// OpenPacketSocket opens a packet socket on iface in ns.
func OpenPacketSocket(ns *NS, iface string) (*PacketSocket, error) {
	s := &PacketSocket{fd: -1, where: fmt.Sprintf("%s in %s", iface, ns)}
	err := ns.Do(func() error {
		ifc, err := net.InterfaceByName(iface)
		if err != nil {
			return err
		}
		s.ifindex = ifc.Index
		s.fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		return unix.Bind(s.fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: s.ifindex})
	})
	if err != nil {
		if s.fd >= 0 {
			unix.Close(s.fd)
		}
		return nil, fmt.Errorf("packet socket on %s: %w", s.where, err)
	}
	return s, nil
}

// Send sends frames in order from one CPU, so that the kernel handles them
// in that order: a later frame that arrived proves an earlier one had its
// chance to.
func (s *PacketSocket) Send(frames ...[]byte) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var old, one unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		return err
	}
	cpu := 0
	for !old.IsSet(cpu) {
		cpu++
	}
	one.Set(cpu)
	if err := unix.SchedSetaffinity(0, &one); err != nil {
		return err
	}
	defer unix.SchedSetaffinity(0, &old) //nolint:errcheck // best effort: the thread is unlocked after
	for _, f := range frames {
		if err := unix.Sendto(s.fd, f, 0, &unix.SockaddrLinklayer{Ifindex: s.ifindex, Halen: 6}); err != nil {
			return fmt.Errorf("sending on %s: %w", s.where, err)
		}
	}
	return nil
}

// Recv returns the next frame the interface received, or an error after
// timeout.
func (s *PacketSocket) Recv(timeout time.Duration) ([]byte, error) {
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 65536)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return nil, fmt.Errorf("no frame on %s within %s", s.where, timeout)
		}
		tv := unix.NsecToTimeval(left.Nanoseconds())
		if err := unix.SetsockoptTimeval(s.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return nil, err
		}
		n, from, err := unix.Recvfrom(s.fd, buf, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("receiving on %s: %w", s.where, err)
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		return append([]byte(nil), buf[:n]...), nil
	}
}

// Close closes the socket.
func (s *PacketSocket) Close() error { return unix.Close(s.fd) }

func htons(v uint16) uint16 { return v<<8 | v>>8 }
