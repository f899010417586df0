package meshsim

// CPU time and resident memory of the real processes, from /proc.

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/wgmesh/wgmesh/test/cluster"
)

// clockTicks is USER_HZ, the unit of the CPU times in /proc/<pid>/stat.
const clockTicks = 100

// Proc is a process's CPU time and resident memory at one moment.
type Proc struct {
	CPU time.Duration // user + system
	// In KiB: VmRSS = RssAnon (heap, stacks) + RssFile (the binary's pages)
	// + RssShmem; VmHWM is the peak of VmRSS.
	RSS, HWM, RSSAnon, RSSFile int64
}

// readProc reads pid's Proc.
func readProc(pid int) (Proc, error) {
	if pid <= 0 {
		return Proc{}, errors.New("no process")
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return Proc{}, err
	}
	rp := strings.LastIndexByte(string(b), ')')
	if rp < 0 || rp+2 > len(b) {
		return Proc{}, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b)[rp+2:])
	if len(f) < 13 {
		return Proc{}, fmt.Errorf("/proc/%d/stat: short", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return Proc{}, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	p := Proc{CPU: time.Duration(ut+st) * time.Second / clockTicks}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Proc{}, err
	}
	for _, kv := range []struct {
		field string
		v     *int64
	}{{"VmRSS", &p.RSS}, {"VmHWM", &p.HWM}, {"RssAnon", &p.RSSAnon}, {"RssFile", &p.RSSFile}} {
		*kv.v, _ = statusKiB(string(status), kv.field)
	}
	return p, nil
}

// statusKiB reads a "kB" field (VmRSS, VmHWM, ...) of a /proc/<pid>/status text.
func statusKiB(status, field string) (int64, error) {
	sc := bufio.NewScanner(strings.NewReader(status))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("no %s", field)
}

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
			if p, err := readProc(n.AgentPID()); err == nil && p.RSS > r.agent[i] {
				r.agent[i], r.anon[i], r.file[i] = p.RSS, p.RSSAnon, p.RSSFile
			}
			if p, err := readProc(wireGuardPID(n)); err == nil {
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
