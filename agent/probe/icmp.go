package probe

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// ICMPPinger sends ICMP echoes on raw sockets (CAP_NET_RAW), one per address
// family, opened on first use in the calling thread's network namespace.
// Replies are matched by identifier, sequence number and source address;
// echoes of other programs on the host are ignored.
type ICMPPinger struct {
	id uint16

	mu      sync.Mutex
	seq     uint16
	conns   map[bool]*icmp.PacketConn // by IPv6
	pending map[pendingKey]chan time.Time
}

type pendingKey struct {
	v6   bool
	seq  uint16
	addr netip.Addr
}

// NewICMPPinger makes a pinger with a random echo identifier.
func NewICMPPinger() *ICMPPinger {
	return &ICMPPinger{id: uint16(rand.Uint32()), conns: map[bool]*icmp.PacketConn{}, pending: map[pendingKey]chan time.Time{}}
}

// Close closes the sockets.
func (p *ICMPPinger) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var errs []error
	for k, c := range p.conns {
		errs = append(errs, c.Close())
		delete(p.conns, k)
	}
	return errors.Join(errs...)
}

func (p *ICMPPinger) conn(v6 bool) (*icmp.PacketConn, error) {
	if c := p.conns[v6]; c != nil {
		return c, nil
	}
	network, addr := "ip4:icmp", "0.0.0.0"
	if v6 {
		network, addr = "ip6:ipv6-icmp", "::"
	}
	c, err := icmp.ListenPacket(network, addr)
	if err != nil {
		return nil, fmt.Errorf("opening ICMP socket (%s; needs CAP_NET_RAW): %w", network, err)
	}
	if v6 {
		// Only echo replies reach this socket.
		var f ipv6.ICMPFilter
		f.SetAll(true)
		f.Accept(ipv6.ICMPTypeEchoReply)
		_ = c.IPv6PacketConn().SetICMPFilter(&f)
	}
	p.conns[v6] = c
	go p.receive(c, v6)
	return c, nil
}

func (p *ICMPPinger) receive(c *icmp.PacketConn, v6 bool) {
	buf := make([]byte, 1500)
	proto := 1
	if v6 {
		proto = 58
	}
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return // closed
		}
		now := time.Now()
		m, err := icmp.ParseMessage(proto, buf[:n])
		if err != nil || (m.Type != ipv4.ICMPTypeEchoReply && m.Type != ipv6.ICMPTypeEchoReply) {
			continue
		}
		echo, ok := m.Body.(*icmp.Echo)
		if !ok || uint16(echo.ID) != p.id {
			continue
		}
		ip, ok := from.(*net.IPAddr)
		if !ok {
			continue
		}
		a, _ := netip.AddrFromSlice(ip.IP)
		k := pendingKey{v6: v6, seq: uint16(echo.Seq), addr: a.Unmap()}
		p.mu.Lock()
		ch := p.pending[k]
		delete(p.pending, k)
		p.mu.Unlock()
		if ch != nil {
			ch <- now
		}
	}
}

// Ping implements Pinger.
func (p *ICMPPinger) Ping(ctx context.Context, t Target, timeout time.Duration) (time.Duration, error) {
	addr := t.Addr.Unmap()
	v6 := addr.Is6()
	p.mu.Lock()
	c, err := p.conn(v6)
	if err != nil {
		p.mu.Unlock()
		return 0, err
	}
	p.seq++
	seq := p.seq
	k := pendingKey{v6: v6, seq: seq, addr: addr}
	ch := make(chan time.Time, 1)
	p.pending[k] = ch
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.pending, k)
		p.mu.Unlock()
	}()

	typ := icmp.Type(ipv4.ICMPTypeEcho)
	if v6 {
		typ = ipv6.ICMPTypeEchoRequest
	}
	data := make([]byte, 16)
	copy(data, "wgmesh-probe")
	binary.BigEndian.PutUint32(data[12:], uint32(seq))
	msg, err := (&icmp.Message{Type: typ, Body: &icmp.Echo{ID: int(p.id), Seq: int(seq), Data: data}}).Marshal(nil)
	if err != nil {
		return 0, err
	}
	sent := time.Now()
	if _, err := c.WriteTo(msg, &net.IPAddr{IP: addr.AsSlice()}); err != nil {
		return 0, fmt.Errorf("echo to %s (peer %s): %w", addr, t.Peer, err)
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case at := <-ch:
		return at.Sub(sent), nil
	case <-timer.C:
		return 0, fmt.Errorf("no echo reply from %s (peer %s) within %s", addr, t.Peer, timeout)
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}
