package meshsim

// The real agents' (and their userspace WireGuard's) resident memory, sampled
// through test/proc.

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/wgmesh/wgmesh/test/cluster"
	"github.com/wgmesh/wgmesh/test/proc"
)

// wireGuardPID is the node's userspace WireGuard process (the agent's
// `wgmesh-agent userspace-wireguard` child), or 0.
func wireGuardPID(n *cluster.Node) int {
	pids, _ := n.Machine.PIDs()
	for _, pid := range pids {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if strings.Contains(string(b), "userspace-wireguard") {
			return pid
		}
	}
	return 0
}

// RSSSampler keeps the largest resident set of each real agent (and of its
// userspace WireGuard) seen while it runs, sampling every second.
type RSSSampler struct {
	stop       chan struct{}
	done       chan struct{}
	mu         sync.Mutex
	agent, wg  []int64 // KiB
	anon, file []int64 // KiB, the agent's at its largest RSS
}

// SampleRSS starts sampling the real agents' memory; Stop ends it.
func (s *Sim) SampleRSS() *RSSSampler {
	n := len(s.real)
	r := &RSSSampler{stop: make(chan struct{}), done: make(chan struct{}),
		agent: make([]int64, n), wg: make([]int64, n), anon: make([]int64, n), file: make([]int64, n)}
	take := func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		for i, n := range s.real {
			if p, err := proc.Read(n.AgentPID()); err == nil && p.RSS > r.agent[i] {
				r.agent[i], r.anon[i], r.file[i] = p.RSS, p.RSSAnon, p.RSSFile
			}
			if p, err := proc.Read(wireGuardPID(n)); err == nil {
				r.wg[i] = max(r.wg[i], p.RSS)
			}
		}
	}
	go func() {
		defer close(r.done)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			take()
			select {
			case <-r.stop:
				take()
				return
			case <-t.C:
			}
		}
	}()
	return r
}

// Stop ends sampling and returns the largest agent and WireGuard RSS over
// all real nodes, in KiB.
func (r *RSSSampler) Stop() (agent, wg int64) {
	close(r.stop)
	<-r.done
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range r.agent {
		agent, wg = max(agent, r.agent[i]), max(wg, r.wg[i])
	}
	return agent, wg
}

// Split is the largest agent's RSS as anonymous and file-backed memory, in
// KiB.
func (r *RSSSampler) Split() (anon, file int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var top int64
	for i := range r.agent {
		if r.agent[i] > top {
			top, anon, file = r.agent[i], r.anon[i], r.file[i]
		}
	}
	return anon, file
}
