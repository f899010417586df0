package netns

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Packet is one line of a capture summary.
type Packet struct {
	Family  string // "IP", "IP6", "ARP", or what tcpdump printed first
	Src     string // address without port
	SrcPort int    // 0 when the protocol has no ports
	Dst     string
	DstPort int
	Proto   string // "UDP", "TCP", "ICMP", "ICMP6", ... ("" when unknown)
	Line    string // the whole tcpdump line
}

// Capture is a running tcpdump inside a namespace.
type Capture struct {
	cmd    *exec.Cmd
	stdout bytes.Buffer
	stderr *syncBuffer
	done   chan error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// StartCapture runs tcpdump on iface ("any" for all) inside ns with a pcap filter ("" for
// everything) and returns once tcpdump is listening. Needs the tcpdump binary.
//
// A bridge's own interface sees only what is delivered to the bridge itself, not frames it
// forwards between its ports: to see everything crossing a bridge, capture on "any" with
// CaptureOptions.InboundOnly (each packet once, as it enters a port).
func StartCapture(ctx context.Context, ns *NS, iface, filter string) (*Capture, error) {
	return StartCaptureWith(ctx, ns, CaptureOptions{Iface: iface, Filter: filter})
}

// CaptureOptions describe a capture.
type CaptureOptions struct {
	Iface  string // "any" for every interface
	Filter string // pcap filter; "" for everything
	// InboundOnly captures packets as they are received only (tcpdump -Q in).
	InboundOnly bool
}

// StartCaptureWith is StartCapture with options.
func StartCaptureWith(ctx context.Context, ns *NS, o CaptureOptions) (*Capture, error) {
	iface, filter := o.Iface, o.Filter
	argv := []string{"tcpdump", "-i", iface, "-nn", "-t", "-l", "-p", "-Z", "root"}
	if o.InboundOnly {
		argv = append(argv, "-Q", "in")
	}
	if filter != "" {
		argv = append(argv, strings.Fields(filter)...)
	}
	c := &Capture{cmd: ns.Command(context.WithoutCancel(ctx), argv...), stderr: &syncBuffer{}, done: make(chan error, 1)}
	c.cmd.Stdout = &c.stdout
	pr, pw := io.Pipe()
	c.cmd.Stderr = pw
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("tcpdump in %s: %w", ns, err)
	}
	listening := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		once := sync.Once{}
		for sc.Scan() {
			c.stderr.Write(append(sc.Bytes(), '\n'))
			if strings.Contains(sc.Text(), "listening on") {
				once.Do(func() { close(listening) })
			}
		}
	}()
	go func() { err := c.cmd.Wait(); pw.Close(); c.done <- err }()
	select {
	case <-listening:
		return c, nil
	case err := <-c.done:
		return nil, fmt.Errorf("tcpdump -i %s %s in %s exited: %v: %s", iface, filter, ns, err, c.stderr.String())
	case <-time.After(15 * time.Second):
		c.cmd.Process.Kill()
		return nil, fmt.Errorf("tcpdump -i %s in %s: not listening after 15s: %s", iface, ns, c.stderr.String())
	case <-ctx.Done():
		c.cmd.Process.Kill()
		return nil, ctx.Err()
	}
}

// Stop ends the capture and returns the packets it saw.
func (c *Capture) Stop() ([]Packet, error) {
	// Give tcpdump a moment to print what the kernel already handed it.
	time.Sleep(100 * time.Millisecond)
	_ = c.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
		c.cmd.Process.Kill()
		<-c.done
	}
	return ParseTcpdump(c.stdout.String()), nil
}

// ParseTcpdump parses `tcpdump -nn -t` output lines.
func ParseTcpdump(out string) []Packet {
	var pkts []Packet
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		pkts = append(pkts, parseLine(line))
	}
	return pkts
}

func parseLine(line string) Packet {
	p := Packet{Line: line}
	f := strings.Fields(line)
	// With -i any, lines start with "<iface> <direction>"; skip to the family.
	for len(f) > 0 && f[0] != "IP" && f[0] != "IP6" && !strings.HasPrefix(f[0], "ARP") {
		f = f[1:]
	}
	if len(f) == 0 {
		return p
	}
	p.Family = strings.TrimSuffix(f[0], ",")
	if (p.Family != "IP" && p.Family != "IP6") || len(f) < 4 || f[2] != ">" {
		return p
	}
	p.Src, p.SrcPort = splitHostPort(f[1], p.Family == "IP6")
	p.Dst, p.DstPort = splitHostPort(strings.TrimSuffix(f[3], ":"), p.Family == "IP6")
	if len(f) > 4 {
		proto := strings.TrimSuffix(f[4], ",")
		switch {
		case proto == "UDP" || proto == "ICMP" || proto == "ICMP6":
			p.Proto = proto
		case p.Family == "IP6" && proto == "ICMP6":
			p.Proto = "ICMP6"
		case strings.HasPrefix(proto, "Flags"):
			p.Proto = "TCP"
		default:
			if p.SrcPort != 0 {
				// tcpdump decodes well-known UDP ports by name (for example "UDP" is
				// missing for DNS); keep what is known.
				p.Proto = proto
			}
		}
	}
	return p
}

func splitHostPort(s string, v6 bool) (string, int) {
	i := strings.LastIndexByte(s, '.')
	if i < 0 {
		return s, 0
	}
	if !v6 && strings.Count(s, ".") != 4 {
		return s, 0
	}
	port, err := strconv.Atoi(s[i+1:])
	if err != nil {
		return s, 0
	}
	return s[:i], port
}
