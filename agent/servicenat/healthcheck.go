package servicenat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/go-logr/logr"
)

// HealthTarget is one Service with externalTrafficPolicy Local and its
// number of local endpoints.
type HealthTarget struct {
	Service        ServiceKey
	LocalEndpoints int
}

// healthTargets lists the HealthCheckNodePorts to serve.
func healthTargets(models map[ServiceKey]Service) map[uint16]HealthTarget {
	out := map[uint16]HealthTarget{}
	for k, s := range models {
		if !s.ExternalLocal || s.HealthCheckNodePort == 0 {
			continue
		}
		seen := map[string]bool{}
		for _, p := range s.Ports {
			for _, e := range Categorize(p.Endpoints).Local {
				seen[e.Addr.String()] = true
			}
		}
		out[s.HealthCheckNodePort] = HealthTarget{Service: k, LocalEndpoints: len(seen)}
	}
	return out
}

// HealthServer answers load balancers' health checks on each
// HealthCheckNodePort, as kube-proxy does: 200 with the count of local
// endpoints when there is one, 503 when there is none, so that traffic
// with externalTrafficPolicy Local only goes to nodes that can serve it.
type HealthServer struct {
	listen func(network, addr string) (net.Listener, error)
	log    logr.Logger

	mu      sync.Mutex
	targets map[uint16]HealthTarget
	servers map[uint16]*http.Server
	failed  map[uint16]string
	ctx     context.Context
}

// NewHealthServer returns a server; listen defaults to net.Listen (tests
// pass one that listens inside a network namespace).
func NewHealthServer(listen func(network, addr string) (net.Listener, error), log logr.Logger) *HealthServer {
	if listen == nil {
		listen = net.Listen
	}
	return &HealthServer{listen: listen, log: log, targets: map[uint16]HealthTarget{}, servers: map[uint16]*http.Server{}, failed: map[uint16]string{}}
}

// Run keeps the listeners until ctx ends.
func (h *HealthServer) Run(ctx context.Context) {
	h.mu.Lock()
	h.ctx = ctx
	h.reconcileLocked()
	h.mu.Unlock()
	<-ctx.Done()
	h.mu.Lock()
	defer h.mu.Unlock()
	for port, s := range h.servers {
		_ = s.Close()
		delete(h.servers, port)
	}
}

// Set replaces the targets, opening and closing listeners as needed.
func (h *HealthServer) Set(targets map[uint16]HealthTarget) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.targets = targets
	h.reconcileLocked()
}

func (h *HealthServer) reconcileLocked() {
	if h.ctx == nil || h.ctx.Err() != nil {
		return
	}
	for port, s := range h.servers {
		if _, ok := h.targets[port]; !ok {
			_ = s.Close()
			delete(h.servers, port)
		}
	}
	ports := make([]int, 0, len(h.targets))
	for p := range h.targets {
		ports = append(ports, int(p))
	}
	sort.Ints(ports)
	for _, pi := range ports {
		port := uint16(pi)
		if _, ok := h.servers[port]; ok {
			continue
		}
		ln, err := h.listen("tcp", fmt.Sprintf(":%d", port))
		if err != nil {
			if h.failed[port] != err.Error() {
				h.failed[port] = err.Error()
				h.log.Error(err, "cannot serve health check node port", "port", port, "service", h.targets[port].Service.String())
			}
			continue
		}
		delete(h.failed, port)
		srv := &http.Server{Handler: h.handler(port), ReadHeaderTimeout: 5 * time.Second}
		h.servers[port] = srv
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				h.log.Error(err, "health check node port stopped", "port", port)
			}
		}()
	}
}

func (h *HealthServer) handler(port uint16) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		h.mu.Lock()
		t, ok := h.targets[port]
		h.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		if !ok || t.LocalEndpoints == 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
		} else {
			w.WriteHeader(http.StatusOK)
		}
		_ = json.NewEncoder(w).Encode(map[string]any{
			"service":             map[string]string{"namespace": t.Service.Namespace, "name": t.Service.Name},
			"localEndpoints":      t.LocalEndpoints,
			"serviceProxyHealthy": true,
		})
	})
}
