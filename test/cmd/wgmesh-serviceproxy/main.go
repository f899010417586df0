// Command wgmesh-serviceproxy runs only the agent's service NAT
// (agent/servicenat) on the agent's runtime (agent/kube), as its own
// process, so that the benchmark can hold it side by side with kube-proxy:
// same API server, same objects, its own network namespace, its own RSS.
// The agent runs the same code beside the mesh, on the same cache.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/wgmesh/wgmesh/agent/kube"
	"github.com/wgmesh/wgmesh/agent/servicenat"
	"github.com/wgmesh/wgmesh/podnet"
)

func main() {
	var kubeconfig, node, clusterCIDRs, serviceCIDRs, metricsAddr, healthAddr string
	// controller-runtime's client/config package registers --kubeconfig on the
	// default FlagSet already; defining it again panics at start.
	if flag.Lookup("kubeconfig") == nil {
		flag.String("kubeconfig", "", "kubeconfig of the API server.")
	}
	flag.StringVar(&node, "node-name", os.Getenv("NODE_NAME"), "This node's name.")
	flag.StringVar(&clusterCIDRs, "cluster-cidrs", "10.244.0.0/16", "Pod ranges, comma separated.")
	flag.StringVar(&serviceCIDRs, "service-cidrs", "10.96.0.0/12", "Service ranges, comma separated.")
	flag.StringVar(&metricsAddr, "metrics-bind-address", ":9472", "Prometheus metrics address.")
	flag.StringVar(&healthAddr, "health-probe-bind-address", ":9473", "/healthz and /readyz address.")
	zopts := zap.Options{}
	zopts.BindFlags(flag.CommandLine)
	flag.Parse()
	kubeconfig = flag.Lookup("kubeconfig").Value.String()
	log := zap.New(zap.UseFlagOptions(&zopts)).WithName("serviceproxy")
	ctrl.SetLogger(log)

	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		fail(err)
	}
	cfg.QPS, cfg.Burst = 50, 100
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	cc, err := cidrs("--cluster-cidrs", clusterCIDRs)
	if err != nil {
		fail(err)
	}
	sc, err := cidrs("--service-cidrs", serviceCIDRs)
	if err != nil {
		fail(err)
	}
	p := servicenat.New(servicenat.Options{NodeName: node, ClusterCIDRs: cc, ServiceCIDRs: sc, Log: log, Registerer: reg})
	// The agent's runtime (one client stack, one informer cache), without
	// its endpoints: this process serves its own below.
	rt, err := kube.New(cfg, kube.Options{NodeName: node, Log: log, MetricsBindAddress: "0", ByObject: servicenat.CacheOptions()})
	if err != nil {
		fail(err)
	}
	if err := rt.Add(manager.RunnableFunc(func(ctx context.Context) error { return p.Run(ctx, rt) })); err != nil {
		fail(err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	serve(ctx, metricsAddr, promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	health := http.NewServeMux()
	health.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	health.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := p.Synced(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	serve(ctx, healthAddr, health)
	if err := rt.Start(ctx); err != nil {
		fail(err)
	}
}

func serve(ctx context.Context, addr string, h http.Handler) {
	if addr == "" || addr == "0" {
		return
	}
	srv := &http.Server{Addr: addr, Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fail(err)
		}
	}()
	go func() { <-ctx.Done(); _ = srv.Close() }()
}

func cidrs(flag, s string) ([]netip.Prefix, error) {
	return podnet.ParseCIDRs(flag, strings.Split(s, ","))
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "wgmesh-serviceproxy:", err)
	os.Exit(1)
}
