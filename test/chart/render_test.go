package chart

import (
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
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
		{"agent.userspace.nativeSidecar=true", []string{"/agent/userspace", "'nativeSidecar' not allowed"}},
		{"uninstall.timeout=2x", []string{"/uninstall/timeout"}},
		{"uninstall.timeout=0m", []string{"uninstall.timeout", `"0m" is no time to wait`}},
		{"agent.endpoint=nohostport", []string{"/agent/endpoint"}},
		{"agent.serviceCIDRs=10.96.0.0/33", []string{"/agent/serviceCIDRs"}},
		{"agent.keyRotationPeriod=-1h", []string{"/agent/keyRotationPeriod"}},
		{"agent.keyRotationPeriod=30d", []string{"/agent/keyRotationPeriod"}},
		{"agent.perPeerMetricsLimit=0", []string{"/agent/perPeerMetricsLimit"}},
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
			// Uninstall: the agent checks its own DaemonSet as it stops.
			if agent.env["POD_NAMESPACE"] != "metadata.namespace" || flagArgs(agent.args)["daemonset-name"] != "wgmesh-agent" {
				t.Errorf("agent: env %v, args %v; want POD_NAMESPACE from metadata.namespace and --daemonset-name=wgmesh-agent", agent.env, agent.args)
			}
			if g, _, _ := unstructuredInt(spec, "terminationGracePeriodSeconds"); g < 40 {
				t.Errorf("agent: terminationGracePeriodSeconds %d leaves no room for the cleanup (20s) after the manager's shutdown", g)
			}
			if agent.live != "/healthz" || agent.readiness != "/readyz" {
				t.Errorf("agent: probes %q/%q, want /healthz and /readyz", agent.live, agent.readiness)
			}
			for vol, path := range map[string]string{"wireguard-run": "/var/run/wireguard", "state": "/var/lib/wgmesh", "cni-conf": "/etc/cni/net.d", "cni-bin": "/opt/cni/bin", "cni-state": "/var/lib/cni", "lib-modules": "/lib/modules", "dev-tun": "/dev/net/tun"} {
				if agent.mounts[vol] != path {
					t.Errorf("agent: volume %s mounted at %q, want %q", vol, agent.mounts[vol], path)
				}
			}
			if slices.ContainsFunc(cs, func(c container) bool { return slices.Contains(c.args, "userspace-wireguard") }) {
				t.Error("agent pod: a userspace-wireguard container is rendered; it belongs to the wireguard DaemonSet")
			}
			mode := flagArgs(agent.args)["wireguard-mode"]
			wg := lookup(objs, "DaemonSet", "-wireguard")
			if mode != "userspace" {
				if wg != nil {
					t.Errorf("wireguard-mode %s: the wireguard DaemonSet %s is rendered", mode, wg.GetName())
				}
				if flagArgs(agent.args)["userspace-wireguard-sidecar"] != "false" {
					t.Errorf("wireguard-mode %s: agent args %v, want --userspace-wireguard-sidecar=false", mode, agent.args)
				}
				return
			}
			if wg == nil {
				t.Fatal("wireguard-mode userspace: no DaemonSet *-wireguard")
			}
			if wg.GetName() != "wgmesh-wireguard" {
				t.Errorf("wireguard DaemonSet named %s, want wgmesh-wireguard", wg.GetName())
			}
			wcs := containers(t, wg)
			if len(wcs) != 1 || wcs[0].init {
				t.Fatalf("wireguard DaemonSet: containers %+v, want one", wcs)
			}
			uw := wcs[0]
			// The agent adopts a TUN wgmesh0 whose UAPI socket in
			// /var/run/wireguard answers: both must see the same directory
			// and the same interface name the agent uses.
			if !slices.Equal(uw.command, []string{"wgmesh-agent"}) || !slices.Equal(uw.args, []string{"userspace-wireguard", "--interface=wgmesh0"}) {
				t.Errorf("userspace container runs %v %v", uw.command, uw.args)
			}
			if uw.mounts["wireguard-run"] != "/var/run/wireguard" || uw.mounts["dev-tun"] != "/dev/net/tun" || len(uw.mounts) != 2 {
				t.Errorf("userspace container mounts %v, want only the shared /var/run/wireguard and /dev/net/tun", uw.mounts)
			}
			wantHostPath(t, wg, "wireguard-run", "/var/run/wireguard")
			wantHostPath(t, wg, "dev-tun", "/dev/net/tun")
			// Exactly one owner: the agent is told to wait for this
			// process, which has a startup probe on its socket.
			if flagArgs(agent.args)["userspace-wireguard-sidecar"] != "true" {
				t.Errorf("agent args %v: want --userspace-wireguard-sidecar=true beside the wireguard DaemonSet", agent.args)
			}
			if !uw.startup {
				t.Error("userspace container has no startup probe")
			}
			// Not privileged: the TUN device and NET_ADMIN only.
			if uw.privileged || !slices.Equal(uw.capAdd, []string{"NET_ADMIN"}) || !slices.Equal(uw.capDrop, []string{"ALL"}) {
				t.Errorf("userspace container: privileged %v, capabilities add %v drop %v; want NET_ADMIN only", uw.privileged, uw.capAdd, uw.capDrop)
			}
			// On the host network, with no API credentials, on every node
			// the agent runs on.
			ws := podSpec(wg)
			if ws["hostNetwork"] != true || ws["automountServiceAccountToken"] != false || ws["serviceAccountName"] != nil {
				t.Errorf("wireguard pod: hostNetwork %v, automountServiceAccountToken %v, serviceAccountName %v; want true, false and none",
					ws["hostNetwork"], ws["automountServiceAccountToken"], ws["serviceAccountName"])
			}
			for _, field := range []string{"priorityClassName", "nodeSelector", "tolerations", "affinity", "imagePullSecrets"} {
				if !reflect.DeepEqual(ws[field], spec[field]) {
					t.Errorf("wireguard pod %s = %v, the agent's is %v: they must run on the same nodes", field, ws[field], spec[field])
				}
			}
			if strings.Contains(s.values, "OnDelete") {
				if typ, _, _ := unstructured.NestedString(wg.Object, "spec", "updateStrategy", "type"); typ != "OnDelete" {
					t.Errorf("wireguard DaemonSet updateStrategy %q, want OnDelete from agent.userspace.updateStrategy", typ)
				}
				if a, _, _ := unstructured.NestedString(wg.Object, "spec", "template", "metadata", "annotations", "example.com/owner"); a != "network-team" {
					t.Errorf("wireguard pod annotations lack agent.userspace.podAnnotations")
				}
			}
		})
	}
}

// wantHostPath checks that a pod template's volume is the host path.
func wantHostPath(t *testing.T, obj *unstructured.Unstructured, volume, path string) {
	t.Helper()
	vols, _, _ := unstructured.NestedSlice(obj.Object, "spec", "template", "spec", "volumes")
	for _, v := range vols {
		v := v.(map[string]any)
		if v["name"] == volume {
			if p, _, _ := unstructured.NestedString(v, "hostPath", "path"); p != path {
				t.Errorf("%s: volume %s is %v, want hostPath %s", obj.GetName(), volume, v, path)
			}
			return
		}
	}
	t.Errorf("%s: no volume %s", obj.GetName(), volume)
}

// TestAgentChangesDoNotRestartWireGuard: in userspace mode, changing an
// agent value (a flag, its resources, extra flags) or an operator value
// changes the agent's pod template, which rolls the agent, and leaves the
// wireguard DaemonSet's pod template as it is, so the data plane stays up;
// changing agent.userspace.* does the opposite; a new image changes both.
func TestAgentChangesDoNotRestartWireGuard(t *testing.T) {
	base := scenario{name: "userspace", values: scenarios[1].values}
	templates := func(set ...string) (agent, wg any) {
		t.Helper()
		var extra []string
		for _, s := range set {
			extra = append(extra, "--set", s)
		}
		objs := render(t, "wgmesh", "kube-system", base, extra...)
		a, _, _ := unstructured.NestedMap(find(t, objs, "DaemonSet", "-agent").Object, "spec", "template")
		w, _, _ := unstructured.NestedMap(find(t, objs, "DaemonSet", "-wireguard").Object, "spec", "template")
		return a, w
	}
	agent0, wg0 := templates()
	for _, tc := range []struct {
		set                 []string
		agentRolls, wgRolls bool
	}{
		{[]string{"agent.serviceSyncPeriod=10s"}, true, false},
		{[]string{"agent.cleanupOnExit=true", "agent.mtu=1380"}, true, false},
		{[]string{"agent.extraArgs={--zap-log-level=debug}", "agent.resources.limits.memory=512Mi"}, true, false},
		{[]string{`agent.podAnnotations.example\.com/x=y`, "agent.securityContext.privileged=true"}, true, false},
		{[]string{"operator.replicas=3", "operator.clusterCIDRs=198.19.0.0/16"}, true, false}, // agent --cluster-cidrs follows the operator's
		{[]string{"agent.userspace.resources.limits.memory=512Mi"}, false, true},
		{[]string{"uninstall.timeout=4m", "uninstall.resources.limits.memory=64Mi"}, false, false},
		{[]string{"uninstall.enabled=false"}, true, false}, // no --daemonset-name
		{[]string{"image.tag=0.2.0"}, true, true},
	} {
		agent, wg := templates(tc.set...)
		if rolled := !reflect.DeepEqual(agent, agent0); rolled != tc.agentRolls {
			t.Errorf("--set %v: agent pod template changed %v, want %v", tc.set, rolled, tc.agentRolls)
		}
		if rolled := !reflect.DeepEqual(wg, wg0); rolled != tc.wgRolls {
			t.Errorf("--set %v: wireguard pod template changed %v, want %v", tc.set, rolled, tc.wgRolls)
		}
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

// hookAnnotations are what Helm needs to run an object as the uninstall hook
// and delete it afterwards (or before the next attempt, when it failed).
func hookAnnotations(t *testing.T, o *unstructured.Unstructured) (weight int) {
	t.Helper()
	a := o.GetAnnotations()
	if a["helm.sh/hook"] != "pre-delete" || a["helm.sh/hook-delete-policy"] != "before-hook-creation,hook-succeeded" {
		t.Errorf("%s %s: annotations %v, want helm.sh/hook pre-delete and hook-delete-policy before-hook-creation,hook-succeeded", o.GetKind(), o.GetName(), a)
	}
	w, err := strconv.Atoi(a["helm.sh/hook-weight"])
	if err != nil {
		t.Errorf("%s %s: hook-weight %q: %v", o.GetKind(), o.GetName(), a["helm.sh/hook-weight"], err)
	}
	return w
}

// TestUninstallHook checks the pre-delete hook that removes wgmesh from the
// nodes on helm uninstall: a Job running `wgmesh-operator uninstall` on the
// agent DaemonSet and, in userspace mode, then the wireguard one, with its
// own ServiceAccount, Role and RoleBinding, all hooks made before the Job;
// on the host network, placed like the operator, non-root with a read-only
// root filesystem, bounded in time; none of it with uninstall.enabled=false.
func TestUninstallHook(t *testing.T) {
	for _, s := range scenarios {
		t.Run(s.name, func(t *testing.T) {
			objs := render(t, "wgmesh", "kube-system", s)
			job := find(t, objs, "Job", "-uninstall")
			jobWeight := hookAnnotations(t, job)
			for _, kind := range []string{"ServiceAccount", "Role", "RoleBinding"} {
				o := find(t, objs, kind, "-uninstall")
				if w := hookAnnotations(t, o); w >= jobWeight {
					t.Errorf("%s %s: hook weight %d, want below the Job's %d (it must exist before the Job)", kind, o.GetName(), w, jobWeight)
				}
			}
			spec := podSpec(job)
			if spec["serviceAccountName"] != "wgmesh-uninstall" || spec["restartPolicy"] != "Never" || spec["hostNetwork"] != true {
				t.Errorf("Job pod: serviceAccountName %v, restartPolicy %v, hostNetwork %v; want wgmesh-uninstall, Never, true",
					spec["serviceAccountName"], spec["restartPolicy"], spec["hostNetwork"])
			}
			operator := podSpec(find(t, objs, "Deployment", "-operator"))
			for _, field := range []string{"tolerations", "nodeSelector"} {
				if !reflect.DeepEqual(spec[field], operator[field]) {
					t.Errorf("Job pod %s = %v, want the operator's %v", field, spec[field], operator[field])
				}
			}
			if backoff, _, _ := unstructuredInt(job.Object, "spec", "backoffLimit"); backoff > 1 {
				t.Errorf("Job backoffLimit %d, want at most 1", backoff)
			}
			if d, _, _ := unstructuredInt(job.Object, "spec", "activeDeadlineSeconds"); d != 180 {
				t.Errorf("Job activeDeadlineSeconds %d, want 180 (uninstall.timeout 2m plus a minute)", d)
			}
			if nonRoot, _, _ := unstructured.NestedBool(spec, "securityContext", "runAsNonRoot"); !nonRoot {
				t.Error("Job pod: not runAsNonRoot")
			}
			if uid, _, _ := unstructuredInt(spec, "securityContext", "runAsUser"); uid != 65532 {
				t.Errorf("Job pod: runAsUser %d, want 65532 (the image's nonroot user)", uid)
			}
			cs := containers(t, job)
			if len(cs) != 1 {
				t.Fatalf("Job: %d containers", len(cs))
			}
			list, _, _ := unstructured.NestedSlice(job.Object, "spec", "template", "spec", "containers")
			c0 := list[0].(map[string]any)
			if ro, _, _ := unstructured.NestedBool(c0, "securityContext", "readOnlyRootFilesystem"); !ro || cs[0].privileged {
				t.Errorf("Job container: readOnlyRootFilesystem %v, privileged %v", ro, cs[0].privileged)
			}
			if _, ok, _ := unstructured.NestedMap(c0, "resources", "requests"); !ok {
				t.Error("Job container: no resource requests")
			}
			want := []string{"uninstall", "--namespace=kube-system", "--daemonset=wgmesh-agent", "--timeout=2m"}
			if strings.Contains(s.values, "wireguardMode: userspace") {
				want[2] = "--daemonset=wgmesh-agent,wgmesh-wireguard"
			}
			if !slices.Equal(cs[0].command, []string{"wgmesh-operator"}) || !slices.Equal(cs[0].args, want) {
				t.Errorf("Job runs %v %v, want wgmesh-operator %v", cs[0].command, cs[0].args, want)
			}
			if strings.Contains(s.values, "kubernetesServiceHost") && cs[0].env["KUBERNETES_SERVICE_HOST"] != "198.18.0.1" {
				t.Errorf("Job env %v: no KUBERNETES_SERVICE_HOST (the API server without kube-proxy)", cs[0].env)
			}
			role := find(t, objs, "Role", "-uninstall")
			rules, _, _ := unstructured.NestedSlice(role.Object, "rules")
			names, _, _ := unstructured.NestedStringSlice(rules[0].(map[string]any), "resourceNames")
			if got := "--daemonset=" + strings.Join(names, ","); got != want[2] {
				t.Errorf("uninstall Role covers DaemonSets %v, the Job deletes %s", names, want[2])
			}
		})
	}

	objs := render(t, "wgmesh", "kube-system", scenario{name: "no-uninstall", values: "uninstall:\n  enabled: false\nagent:\n  wireguardMode: userspace\n"})
	for _, o := range objs {
		if o.GetLabels()["app.kubernetes.io/component"] == "uninstall" || o.GetAnnotations()["helm.sh/hook"] != "" {
			t.Errorf("uninstall.enabled=false renders %s %s", o.GetKind(), o.GetName())
		}
	}
	if lookup(objs, "Role", "-agent") != nil {
		t.Error("uninstall.enabled=false renders the agent's Role (reading its DaemonSet)")
	}
	agent := containers(t, find(t, objs, "DaemonSet", "-agent"))[0]
	if _, ok := flagArgs(agent.args)["daemonset-name"]; ok {
		t.Errorf("uninstall.enabled=false: agent args %v still pass --daemonset-name", agent.args)
	}
}
