package e2e

import (
	"bufio"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
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
