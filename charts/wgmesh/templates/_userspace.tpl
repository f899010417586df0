{{/* The long-lived userspace WireGuard process (wireguardMode userspace): it
holds the TUN device wgmesh0 and serves the UAPI socket
/var/run/wireguard/wgmesh0.sock. The agent finds a TUN link whose socket
answers and configures it through wgctrl instead of starting its own process,
so that restarting the agent container never drops the data plane. Call with
(list $ nativeSidecar). */}}
{{- define "wgmesh.userspaceContainer" -}}
{{- $ := index . 0 -}}
{{- $a := $.Values.agent -}}
- name: userspace-wireguard
  image: {{ include "wgmesh.image" $ }}
  imagePullPolicy: {{ $.Values.image.pullPolicy }}
  command: [wgmesh-agent]
  args:
    - userspace-wireguard
    - --interface=wgmesh0
  {{- if index . 1 }}
  # A native sidecar: started before the agent, kept running beside it.
  restartPolicy: Always
  {{- end }}
  # Not privileged: it needs only the TUN device (mounted below) and
  # NET_ADMIN to create wgmesh0.
  {{- with $a.userspace.securityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  # Started (for a native sidecar: before the agent starts) once its UAPI
  # socket answers.
  startupProbe:
    exec:
      command: [wgmesh-agent, userspace-wireguard, --probe, --interface=wgmesh0]
    periodSeconds: 1
    failureThreshold: 60
  {{- with $a.userspace.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  volumeMounts:
    - name: wireguard-run
      mountPath: /var/run/wireguard
    - name: dev-tun
      mountPath: /dev/net/tun
{{- end -}}
