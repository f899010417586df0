package chart

import (
	"slices"
	"strings"
	"testing"
)

func TestLint(t *testing.T) {
	for _, s := range scenarios {
		if _, err := runHelm(t, "lint", "--strict", chartDir(t), "-f", valuesFile(t, s)); err != nil {
			t.Errorf("scenario %s: %v", s.name, err)
		}
	}
}

// TestSchemaRefusesBadValues: values.schema.json (or the chart's own checks)
// refuse what the binaries would refuse at start, naming the value's path and
// what would be accepted.
func TestSchemaRefusesBadValues(t *testing.T) {
	for _, tc := range []struct {
		set  string
		want []string
	}{
		{"agent.wireguardMode=foo", []string{"/agent/wireguardMode", "'auto', 'kernel', 'userspace'"}},
		{"agent.endpointAddressType=Hostname", []string{"/agent/endpointAddressType", "'InternalIP', 'ExternalIP'"}},
		{"agent.listenPort=70000", []string{"/agent/listenPort", "65,535"}},
		{"agent.mtu=1000", []string{"/agent/mtu", "1,280"}},
		{"agent.wireguardmode=userspace", []string{"/agent", "'wireguardmode' not allowed"}},
		{"agent.endpoint=nohostport", []string{"/agent/endpoint"}},
		{"agent.serviceCIDRs=10.96.0.0/33", []string{"/agent/serviceCIDRs"}},
		{"operator.clusterCIDRs=banana", []string{"/operator/clusterCIDRs"}},
		{"operator.nodeCIDRMaskSizeIPv4=33", []string{"/operator/nodeCIDRMaskSizeIPv4", "32"}},
		{"operator.replicas=0", []string{"/operator/replicas"}},
		{"operator.leaderElect=maybe", []string{"/operator/leaderElect", "boolean"}},
		{"operator.healthProbeBindAddress=0", []string{"/operator/healthProbeBindAddress"}},
		{`operator.clusterCIDRs=198.19.0.0/16\,198.20.0.0/16`, []string{"operator.clusterCIDRs", "198.19.0.0/16,198.20.0.0/16", "at most one of each"}},
		{"image.pullPolicy=Sometimes", []string{"/image/pullPolicy"}},
		{"operator.leaderElect=false", []string{"operator.leaderElect=false with operator.replicas=2", "set operator.replicas=1"}},
	} {
		_, err := runHelm(t, "template", "x", chartDir(t), "--set", tc.set)
		if err == nil {
			t.Errorf("--set %s: rendered, want a refusal", tc.set)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("--set %s: message does not contain %q:\n%v", tc.set, w, err)
			}
		}
	}
}

// TestRenderedPods checks what the data plane depends on in each scenario.
func TestRenderedPods(t *testing.T) {
	for _, s := range scenarios {
		t.Run(s.name, func(t *testing.T) {
			objs := render(t, "wgmesh", "kube-system", s)
			ds := find(t, objs, "DaemonSet", "-agent")
			spec := ds.Object["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
			if spec["hostNetwork"] != true {
				t.Errorf("agent: hostNetwork = %v, want true", spec["hostNetwork"])
			}
			if spec["priorityClassName"] != "system-node-critical" {
				t.Errorf("agent: priorityClassName = %v", spec["priorityClassName"])
			}
			if tol, _ := spec["tolerations"].([]any); len(tol) != 1 || tol[0].(map[string]any)["operator"] != "Exists" || len(tol[0].(map[string]any)) != 1 {
				t.Errorf("agent: tolerations = %v, want one {operator: Exists} so it runs on every node", spec["tolerations"])
			}
			cs := containers(t, ds)
			agent := cs[slices.IndexFunc(cs, func(c container) bool { return c.name == "agent" })]
			if !agent.hasNodeNameEnv {
				t.Error("agent: no NODE_NAME from fieldRef spec.nodeName")
			}
			if agent.live != "/healthz" || agent.readiness != "/readyz" {
				t.Errorf("agent: probes %q/%q, want /healthz and /readyz", agent.live, agent.readiness)
			}
			for vol, path := range map[string]string{"wireguard-run": "/var/run/wireguard", "state": "/var/lib/wgmesh", "cni-conf": "/etc/cni/net.d", "cni-bin": "/opt/cni/bin", "cni-state": "/var/lib/cni", "lib-modules": "/lib/modules", "dev-tun": "/dev/net/tun"} {
				if agent.mounts[vol] != path {
					t.Errorf("agent: volume %s mounted at %q, want %q", vol, agent.mounts[vol], path)
				}
			}
			mode := flagArgs(agent.args)["wireguard-mode"]
			i := slices.IndexFunc(cs, func(c container) bool { return slices.Contains(c.args, "userspace-wireguard") })
			if mode != "userspace" {
				if i >= 0 {
					t.Errorf("wireguard-mode %s: a userspace-wireguard container is rendered", mode)
				}
				return
			}
			if i < 0 {
				t.Fatal("wireguard-mode userspace: no container runs `wgmesh-agent userspace-wireguard`")
			}
			uw := cs[i]
			// The agent adopts a TUN wgmesh0 whose UAPI socket in
			// /var/run/wireguard answers: both must see the same directory
			// and the same interface name the agent uses.
			if !slices.Equal(uw.command, []string{"wgmesh-agent"}) || !slices.Equal(uw.args, []string{"userspace-wireguard", "--interface=wgmesh0"}) {
				t.Errorf("userspace container runs %v %v", uw.command, uw.args)
			}
			if uw.mounts["wireguard-run"] != "/var/run/wireguard" || uw.mounts["dev-tun"] != "/dev/net/tun" {
				t.Errorf("userspace container mounts %v, want the shared /var/run/wireguard and /dev/net/tun", uw.mounts)
			}
			// Exactly one owner: the agent is told to wait for this
			// container, which has a startup probe on its socket.
			if flagArgs(agent.args)["userspace-wireguard-sidecar"] != "true" {
				t.Errorf("agent args %v: want --userspace-wireguard-sidecar=true beside the userspace-wireguard container", agent.args)
			}
			if !uw.startup {
				t.Error("userspace container has no startup probe")
			}
			// Not privileged: the TUN device and NET_ADMIN only.
			if uw.privileged || !slices.Equal(uw.capAdd, []string{"NET_ADMIN"}) || !slices.Equal(uw.capDrop, []string{"ALL"}) {
				t.Errorf("userspace container: privileged %v, capabilities add %v drop %v; want NET_ADMIN only", uw.privileged, uw.capAdd, uw.capDrop)
			}
			native := !strings.Contains(s.values, "nativeSidecar: false")
			if uw.init != native || uw.sidecar != native {
				t.Errorf("userspace container: init container %v, restartPolicy Always %v; want both %v", uw.init, uw.sidecar, native)
			}
		})
	}
}

func TestOperatorDeployment(t *testing.T) {
	objs := render(t, "wgmesh", "kube-system", scenarios[0])
	d := find(t, objs, "Deployment", "-operator")
	cs := containers(t, d)
	if len(cs) != 1 {
		t.Fatalf("operator: %d containers, want 1", len(cs))
	}
	args := flagArgs(cs[0].args)
	if args["leader-elect"] != "true" {
		t.Errorf("operator: --leader-elect=%q, want true", args["leader-elect"])
	}
	if cs[0].live != "/healthz" || cs[0].readiness != "/readyz" {
		t.Errorf("operator: probes %q/%q, want /healthz and /readyz", cs[0].live, cs[0].readiness)
	}
	if r, _, _ := unstructuredInt(d.Object, "spec", "replicas"); r != 2 {
		t.Errorf("operator: replicas %d, want 2", r)
	}
	nonRoot, _ := d.Object["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)["securityContext"].(map[string]any)["runAsNonRoot"].(bool)
	if !nonRoot {
		t.Error("operator: pod does not run as non-root")
	}
}

func unstructuredInt(obj map[string]any, fields ...string) (int64, bool, error) {
	v := any(obj)
	for _, f := range fields {
		m, ok := v.(map[string]any)
		if !ok {
			return 0, false, nil
		}
		v = m[f]
	}
	switch n := v.(type) {
	case int64:
		return n, true, nil
	case float64:
		return int64(n), true, nil
	case int:
		return int64(n), true, nil
	}
	return 0, false, nil
}
