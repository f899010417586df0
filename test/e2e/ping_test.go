package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/test/wait"
)

// pingStream is a running `ping -D -i 0.01` (in a pod's network namespace:
// the caller builds the command) whose output is collected for stop.
type pingStream struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  strings.Builder
	done chan struct{}
}

func startPing(t *testing.T, cmd *exec.Cmd) *pingStream {
	t.Helper()
	p := &pingStream{cmd: cmd, done: make(chan struct{})}
	r, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			p.mu.Lock()
			p.out.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
		}
	}()
	return p
}

func (p *pingStream) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// replyAt is the arrival time ping -D prints before each reply.
var replyAt = regexp.MustCompile(`(?m)^\[(\d+\.\d+)\] \d+ bytes from .*icmp_seq=\d+`)

// stop ends the ping (SIGINT: it prints its summary) and returns pings sent
// and answered, and the longest time without an answer (ping slows down
// while nothing comes back, so a count of lost pings understates a long
// interruption; the time between replies does not). Calling it again
// returns the same.
func (p *pingStream) stop() (sent, received int, gap time.Duration) {
	_ = p.cmd.Process.Signal(os.Interrupt)
	<-p.done
	_ = p.cmd.Wait()
	out := p.output()
	if m := pingSummary.FindStringSubmatch(out); m != nil {
		sent, _ = strconv.Atoi(m[1])
		received, _ = strconv.Atoi(m[2])
	}
	var last float64
	for _, m := range replyAt.FindAllStringSubmatch(out, -1) {
		at, _ := strconv.ParseFloat(m[1], 64)
		if last != 0 {
			gap = max(gap, time.Duration((at-last)*float64(time.Second)))
		}
		last = at
	}
	return sent, received, gap
}

// pingBarrier is how many replies awaitReplies waits for on each side of an
// event: a second of pings every 10 ms.
const pingBarrier = 100

// repliesAfter counts the replies that arrived at or after since (ping -D's
// times, the same clock).
func (p *pingStream) repliesAfter(since time.Time) int {
	n := 0
	for _, m := range replyAt.FindAllStringSubmatch(p.output(), -1) {
		if at, err := strconv.ParseFloat(m[1], 64); err == nil && at >= float64(since.UnixMicro())/1e6 {
			n++
		}
	}
	return n
}

// awaitReplies waits until n replies have arrived after since: the barrier
// around an event across which no reply may be lost. Before it, it proves
// the stream runs; after it, that traffic flows again, so that stop counts
// every loss the event caused rather than what a fixed sleep happened to
// cover.
func (p *pingStream) awaitReplies(n int, since time.Time) error {
	return wait.Poll(context.Background(), 30*time.Second, func() error {
		if got := p.repliesAfter(since); got < n {
			return fmt.Errorf("%d of %d ping replies since %s", got, n, since.Format("15:04:05.000"))
		}
		return nil
	})
}

// TestPingBarrier reads replies the way awaitReplies does, from a ping -D
// output (no cluster needed).
func TestPingBarrier(t *testing.T) {
	t0 := time.Unix(1700000000, 0)
	p := &pingStream{done: make(chan struct{})}
	for i := range 5 {
		fmt.Fprintf(&p.out, "[%d.%06d] 64 bytes from 198.19.1.2: icmp_seq=%d ttl=63 time=0.2 ms\n", t0.Unix(), i*10000, i+1)
	}
	p.out.WriteString("[1700000000.060000] From 198.19.1.1 icmp_seq=7 Destination Host Unreachable\n")
	if got := p.repliesAfter(t0); got != 5 {
		t.Errorf("replies since the first: %d, want 5", got)
	}
	if got := p.repliesAfter(t0.Add(25 * time.Millisecond)); got != 2 {
		t.Errorf("replies since 25 ms: %d, want 2 (an error line is no reply)", got)
	}
	if err := p.awaitReplies(5, t0); err != nil {
		t.Errorf("5 replies there: %v", err)
	}
}
