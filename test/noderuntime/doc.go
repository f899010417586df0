// Package noderuntime is the local cluster's kubelet and container runtime stand-in, run
// by test/cmd/wgmesh-testnode inside each node's network and mount namespaces:
//
//   - RegisterNode registers the Node as a kubelet does (InternalIP addresses, Ready
//     condition, capacity; never a podCIDR).
//   - Run watches the Pods bound to the node (spec.nodeName). For each it makes a network
//     namespace (/run/netns/wgm-pod-<uid>, private to the node), calls CNI ADD through libcni
//     with the first configuration in the node's /etc/cni/net.d, exactly as containerd does
//     (container ID, netns path, ifname eth0, CNI_ARGS IgnoreUnknown, K8S_POD_NAMESPACE,
//     K8S_POD_NAME, K8S_POD_INFRA_CONTAINER_ID, K8S_POD_UID, portMappings for hostPorts,
//     cache in /var/lib/cni), starts the built-in Workload in it, and writes the Pod status
//     (Running, podIP/podIPs, Ready and ContainersReady, containerStatuses).
//   - A failed CNI ADD is undone (CNI DEL, namespace removed), reported as a Warning Event
//     FailedCreatePodSandBox and a Pending status with that reason, and retried.
//   - A pod being deleted gets CNI DEL, its workload stopped, its namespace removed, and is
//     then deleted with grace period 0, as a kubelet finalises a pod.
//   - Sandboxes are recorded in /var/lib/cni/wgmesh-testnode, so a restarted runtime keeps
//     pods' addresses and tears down those whose pods went away meanwhile.
//
// The Workload answers with the pod name over TCP, UDP and HTTP on every declared container
// port (8080 when none); its /dial endpoint dials from inside the pod, like agnhost netexec.
// Request and NSDialer are the matching client, used by the tests from node namespaces.
package noderuntime
