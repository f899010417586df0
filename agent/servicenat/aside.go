package servicenat

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// --service-proxy=auto (the chart's default): the service NAT programs
// Services unless kube-proxy does on this node, and then stands aside: it
// removes its rules and its health check node ports, and programs nothing
// while kube-proxy's rules (or its health endpoint) are there. It comes back
// when they are gone (kube-proxy removed and its rules cleaned up, or a node
// rebooted without it). At boot the two may both program for up to a sync
// period: harmless, since a connection is NATed once, by whichever hook runs
// first, to an endpoint of the same Service. One Service is never left to
// neither.

// Event reasons of the stand-aside.
const (
	ReasonStandingAside = "ServiceNATStandingAside"
	ReasonResumed       = "ServiceNATResumed"
)

// KubeProxyHealthzAddr is where kube-proxy serves /healthz unless told
// otherwise (--healthz-bind-address=0.0.0.0:10256); the agent shares the
// node's network namespace.
const KubeProxyHealthzAddr = "127.0.0.1:10256"

// kubeProxyFound reports where kube-proxy shows on this node: its rules
// (nftables mode, or iptables-nft chains), which only a process with
// CAP_NET_ADMIN on the node can write; and, when configured
// (--kube-proxy-healthz, for iptables-legacy whose rules nftables does not
// see), its health endpoint, which anything listening there could fake.
func (p *Proxy) kubeProxyFound() []string {
	found, err := KubeProxyRules(p.o.NetNSFd)
	if err != nil {
		p.o.Log.Error(err, "looking for kube-proxy's rules")
	}
	if p.o.KubeProxyHealthz != "" && kubeProxyHealthz(p.o.KubeProxyHealthz) {
		found = append(found, "kube-proxy's health endpoint on "+p.o.KubeProxyHealthz)
	}
	return found
}

// kubeProxyHealthz reports whether addr answers /healthz as kube-proxy does:
// a JSON body with lastUpdated and currentTime (200 when healthy, 503 when
// not: either way kube-proxy runs).
func kubeProxyHealthz(addr string) bool {
	c := http.Client{Timeout: time.Second, Transport: &http.Transport{Proxy: nil,
		DialContext: (&net.Dialer{Timeout: time.Second}).DialContext}}
	resp, err := c.Get("http://" + addr + "/healthz")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var body struct {
		LastUpdated *string `json:"lastUpdated"`
		CurrentTime *string `json:"currentTime"`
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil || json.Unmarshal(b, &body) != nil {
		return false
	}
	return body.LastUpdated != nil && body.CurrentTime != nil
}

// standAside reports whether the service NAT stands aside for this sync. It
// looks for kube-proxy on the first sync, on every periodic sync and, while
// aside, only on periodic syncs (Service changes then cost nothing).
func (p *Proxy) standAside(periodic bool) bool {
	if !p.o.StandAside {
		return false
	}
	if p.aside && !periodic {
		return true
	}
	if !p.aside && !periodic && p.table != nil {
		return false
	}
	found := p.kubeProxyFound()
	if len(found) == 0 {
		if p.aside {
			p.aside = false
			p.table = nil // everything is programmed again
			p.metrics.StandingAside.Set(0)
			p.o.Log.Info("kube-proxy is gone: the service NAT programs Services again", "node", p.o.NodeName)
			p.nodeEvent(corev1.EventTypeNormal, ReasonResumed, "kube-proxy no longer programs Services on node %s: wgmesh's service NAT does again", p.o.NodeName)
			p.setConflictCondition(metav1.ConditionFalse, "NoKubeProxy", "no kube-proxy rules on the node")
		}
		return false
	}
	if !p.aside {
		p.aside = true
		if err := p.Delete(); err != nil {
			// Try again at the next periodic sync; kube-proxy's rules still work.
			p.aside = false
			p.o.Log.Error(err, "removing the service NAT's rules to stand aside for kube-proxy")
			return true
		}
		p.table, p.models = nil, map[ServiceKey]Service{}
		p.o.HealthCheck.Set(nil) // kube-proxy serves the health check node ports
		p.setGauges()
		p.metrics.StandingAside.Set(1)
		msg := fmt.Sprintf("kube-proxy programs Services on node %s (%v): wgmesh's service NAT stands aside (--service-proxy=auto) and removed its rules", p.o.NodeName, found)
		p.o.Log.Info("kube-proxy detected: the service NAT stands aside", "node", p.o.NodeName, "found", found)
		p.nodeEvent(corev1.EventTypeNormal, ReasonStandingAside, "%s", msg)
		p.setConflictCondition(metav1.ConditionFalse, ReasonStandingAside, msg)
	}
	p.syncedMu.Lock()
	p.synced = true // ready: kube-proxy serves the node's Services
	p.syncedMu.Unlock()
	return true
}

// nodeEvent records an Event on this node's Node.
func (p *Proxy) nodeEvent(eventType, reason, format string, args ...any) {
	if p.events == nil {
		return
	}
	ref := &corev1.ObjectReference{Kind: "Node", Name: p.o.NodeName, APIVersion: "v1"}
	if p.nodeLister != nil {
		if n, err := p.nodeLister.Get(p.o.NodeName); err == nil {
			ref.UID = n.UID
		}
	}
	p.events.Eventf(ref, nil, eventType, reason, "DetectKubeProxy", format, args...)
}
