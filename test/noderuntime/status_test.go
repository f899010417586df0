package noderuntime

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func testPod() *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "p", UID: "1234-5678"},
		Spec: corev1.PodSpec{NodeName: "wgm-node-1", Containers: []corev1.Container{{Name: "workload", Image: "x",
			Ports: []corev1.ContainerPort{{ContainerPort: 8080}, {ContainerPort: 8080, Protocol: corev1.ProtocolUDP}, {ContainerPort: 9090, HostPort: 30080}}}}},
	}
}

func TestRunningStatus(t *testing.T) {
	pod := testPod()
	sb := &Sandbox{ID: sandboxID(string(pod.UID)), IPs: []string{"198.19.1.5", "2001:db8:100:1::5"}}
	st := RunningStatus(pod, sb, []string{"198.18.0.11"}, metav1.Now())
	if st.Phase != corev1.PodRunning || st.PodIP != "198.19.1.5" || len(st.PodIPs) != 2 || st.PodIPs[1].IP != "2001:db8:100:1::5" {
		t.Fatalf("status = %+v", st)
	}
	if !ready(st) || len(st.ContainerStatuses) != 1 || !st.ContainerStatuses[0].Ready || st.ContainerStatuses[0].State.Running == nil {
		t.Fatalf("not ready: %+v", st)
	}
	if st.HostIP != "198.18.0.11" {
		t.Fatalf("hostIP = %q", st.HostIP)
	}
	if !statusUpToDate(st, RunningStatus(pod, sb, []string{"198.18.0.11"}, metav1.Now())) {
		t.Fatal("an identical status is reported as changed (would cause needless writes)")
	}
	sb2 := &Sandbox{ID: sb.ID, IPs: []string{"198.19.1.6"}}
	if statusUpToDate(st, RunningStatus(pod, sb2, nil, metav1.Now())) {
		t.Fatal("a changed pod IP is reported as up to date")
	}
}

func TestPendingStatus(t *testing.T) {
	pod := testPod()
	st := PendingStatus(pod, nil, "FailedCreatePodSandBox", "no CNI configuration", metav1.Now())
	if st.Phase != corev1.PodPending || ready(st) || st.Reason != "FailedCreatePodSandBox" {
		t.Fatalf("status = %+v", st)
	}
	if w := st.ContainerStatuses[0].State.Waiting; w == nil || w.Reason != "ContainerCreating" {
		t.Fatalf("container state = %+v", st.ContainerStatuses[0].State)
	}
}

func TestSandboxIDAndPorts(t *testing.T) {
	id := sandboxID("0b2c7c0e-4f5a-4c1e-9d51-6e2c2b9f7a10")
	if len(id) != 64 {
		t.Fatalf("sandbox id %q: want 64 hex digits", id)
	}
	if got := podPorts(testPod()); len(got) != 2 || got[0] != 8080 || got[1] != 9090 {
		t.Fatalf("ports = %v, want [8080 9090]", got)
	}
	rt := runtimeConf(&Sandbox{ID: id, Namespace: "default", Name: "p", PodUID: "u"}, testPod())
	pms, _ := rt.CapabilityArgs["portMappings"].([]map[string]any)
	if len(pms) != 1 || pms[0]["hostPort"] != int32(30080) || pms[0]["protocol"] != "tcp" {
		t.Fatalf("portMappings = %v", rt.CapabilityArgs)
	}
	want := map[string]string{"K8S_POD_NAMESPACE": "default", "K8S_POD_NAME": "p", "K8S_POD_INFRA_CONTAINER_ID": id, "IgnoreUnknown": "1"}
	for _, kv := range rt.Args {
		if v, ok := want[kv[0]]; ok && v != kv[1] {
			t.Errorf("CNI_ARGS %s=%s, want %s", kv[0], kv[1], v)
		}
		delete(want, kv[0])
	}
	if len(want) > 0 || rt.IfName != "eth0" {
		t.Fatalf("missing CNI_ARGS %v or ifname %q", want, rt.IfName)
	}
}

func TestHTTPPathAndDialAnswer(t *testing.T) {
	for in, want := range map[string]string{"hostname": "/hostname", "": "/hostname", "clientip": "/clientip", "echo a b": "/echo?msg=a+b", "/bytes?n=5": "/bytes?n=5"} {
		if got := HTTPPath(in); got != want {
			t.Errorf("HTTPPath(%q) = %q, want %q", in, got, want)
		}
	}
	if got, err := ParseDialAnswer(`{"responses":["pod-a"]}`); err != nil || got != "pod-a" {
		t.Fatalf("ParseDialAnswer = %q, %v", got, err)
	}
	if _, err := ParseDialAnswer(`{"errors":["dial tcp: i/o timeout"]}`); err == nil {
		t.Fatal("ParseDialAnswer accepted an answer with only errors")
	}
}
