package noderuntime

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// RunningStatus is the status a kubelet reports for a pod whose containers run and are
// ready: phase Running, the sandbox's IPs, every condition True, a running container status
// per container.
func RunningStatus(pod *corev1.Pod, sb *Sandbox, hostIPs []string, started metav1.Time) corev1.PodStatus {
	st := corev1.PodStatus{
		Phase:     corev1.PodRunning,
		StartTime: &started,
		QOSClass:  corev1.PodQOSBestEffort,
	}
	if len(hostIPs) > 0 {
		st.HostIP = hostIPs[0]
		for _, ip := range hostIPs {
			st.HostIPs = append(st.HostIPs, corev1.HostIP{IP: ip})
		}
	}
	if len(sb.IPs) > 0 {
		st.PodIP = sb.IPs[0]
		for _, ip := range sb.IPs {
			st.PodIPs = append(st.PodIPs, corev1.PodIP{IP: ip})
		}
	}
	for _, t := range []corev1.PodConditionType{corev1.PodReadyToStartContainers, corev1.PodInitialized, corev1.ContainersReady, corev1.PodReady, corev1.PodScheduled} {
		st.Conditions = append(st.Conditions, corev1.PodCondition{Type: t, Status: corev1.ConditionTrue, LastTransitionTime: started})
	}
	for _, c := range pod.Spec.Containers {
		yes := true
		st.ContainerStatuses = append(st.ContainerStatuses, corev1.ContainerStatus{
			Name:        c.Name,
			Image:       c.Image,
			ImageID:     "wgmesh.io/builtin-workload",
			ContainerID: "wgmesh://" + sb.ID,
			Ready:       true,
			Started:     &yes,
			State:       corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: started}},
		})
	}
	return st
}

// PendingStatus is the status of a pod whose sandbox could not be made yet: Pending, not
// ready, containers waiting in ContainerCreating, with the reason and message of the
// failure.
func PendingStatus(pod *corev1.Pod, hostIPs []string, reason, message string, now metav1.Time) corev1.PodStatus {
	st := corev1.PodStatus{Phase: corev1.PodPending, Reason: reason, Message: message, StartTime: pod.Status.StartTime, QOSClass: corev1.PodQOSBestEffort}
	if st.StartTime == nil {
		st.StartTime = &now
	}
	if len(hostIPs) > 0 {
		st.HostIP = hostIPs[0]
		for _, ip := range hostIPs {
			st.HostIPs = append(st.HostIPs, corev1.HostIP{IP: ip})
		}
	}
	st.Conditions = []corev1.PodCondition{
		{Type: corev1.PodReadyToStartContainers, Status: corev1.ConditionFalse, LastTransitionTime: now, Reason: reason, Message: message},
		{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.ContainersReady, Status: corev1.ConditionFalse, LastTransitionTime: now, Reason: "ContainersNotReady"},
		{Type: corev1.PodReady, Status: corev1.ConditionFalse, LastTransitionTime: now, Reason: "ContainersNotReady"},
		{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
	}
	for _, c := range pod.Spec.Containers {
		st.ContainerStatuses = append(st.ContainerStatuses, corev1.ContainerStatus{
			Name:  c.Name,
			Image: c.Image,
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating", Message: message}},
		})
	}
	return st
}

// statusUpToDate tells whether have already reports what want reports (phase, IPs,
// readiness, reason), so that an unchanged pod is not written again.
func statusUpToDate(have, want corev1.PodStatus) bool {
	if have.Phase != want.Phase || have.PodIP != want.PodIP || len(have.PodIPs) != len(want.PodIPs) || have.Message != want.Message || have.Reason != want.Reason {
		return false
	}
	for i := range have.PodIPs {
		if have.PodIPs[i] != want.PodIPs[i] {
			return false
		}
	}
	return ready(have) == ready(want) && len(have.ContainerStatuses) == len(want.ContainerStatuses)
}

func ready(st corev1.PodStatus) bool {
	for _, c := range st.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
