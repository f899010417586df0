{{/* Name prefix of every object: the release name, plus "-wgmesh" unless it
already says wgmesh. */}}
{{- define "wgmesh.fullname" -}}
{{- if contains "wgmesh" .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-wgmesh" .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "wgmesh.labels" -}}
app.kubernetes.io/name: wgmesh
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Selector labels of one component; call with (list $ "agent"). */}}
{{- define "wgmesh.selectorLabels" -}}
{{- $ := index . 0 -}}
app.kubernetes.io/name: wgmesh
app.kubernetes.io/instance: {{ $.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "wgmesh.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The port of a bind address such as ":8080" or "127.0.0.1:8080". */}}
{{- define "wgmesh.port" -}}
{{- regexReplaceAll "^.*:" . "" -}}
{{- end -}}

{{- define "wgmesh.agentClusterCIDRs" -}}
{{- default .Values.operator.clusterCIDRs .Values.agent.clusterCIDRs -}}
{{- end -}}

{{/* Environment for reaching the API server without kube-proxy. */}}
{{- define "wgmesh.apiServerEnv" -}}
{{- if .Values.kubernetesServiceHost }}
- name: KUBERNETES_SERVICE_HOST
  value: {{ .Values.kubernetesServiceHost | quote }}
{{- end }}
{{- if .Values.kubernetesServicePort }}
- name: KUBERNETES_SERVICE_PORT
  value: {{ .Values.kubernetesServicePort | quote }}
{{- end }}
{{- end -}}

{{/* Annotations of the uninstall hook's objects; call with the weight. */}}
{{- define "wgmesh.uninstallHook" -}}
helm.sh/hook: pre-delete
helm.sh/hook-weight: {{ . | quote }}
helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
{{- end -}}

{{/* Seconds in a duration of hours, minutes and seconds such as "2m" or
"1m30s" (the form values.schema.json allows for uninstall.timeout). */}}
{{- define "wgmesh.seconds" -}}
{{- $total := 0 -}}
{{- range $unit, $mult := dict "h" 3600 "m" 60 "s" 1 -}}
{{- with regexFind (printf "[0-9]+%s" $unit) $ -}}
{{- $total = add $total (mul (trimSuffix $unit . | int) $mult) -}}
{{- end -}}
{{- end -}}
{{- $total -}}
{{- end -}}

{{/* Checks values.schema.json cannot express. */}}
{{- define "wgmesh.validate" -}}
{{- range $key, $list := dict "operator.clusterCIDRs" .Values.operator.clusterCIDRs "agent.clusterCIDRs" .Values.agent.clusterCIDRs "agent.serviceCIDRs" .Values.agent.serviceCIDRs -}}
{{- $v4 := 0 -}}{{- $v6 := 0 -}}
{{- range (splitList "," $list) -}}
{{- if contains ":" . }}{{ $v6 = add1 $v6 }}{{ else if . }}{{ $v4 = add1 $v4 }}{{ end -}}
{{- end -}}
{{- if or (gt $v4 1) (gt $v6 1) -}}
{{- fail (printf "%s: %q has more than one IPv4 or more than one IPv6 CIDR; want at most one of each, such as \"10.244.0.0/16,fd00:10:244::/56\"" $key $list) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.uninstall.enabled (eq (include "wgmesh.seconds" .Values.uninstall.timeout) "0") -}}
{{- fail (printf "uninstall.timeout: %q is no time to wait; want a duration such as \"2m\" or \"1m30s\"" .Values.uninstall.timeout) -}}
{{- end -}}
{{- if and (not .Values.operator.leaderElect) (gt (int .Values.operator.replicas) 1) -}}
{{- fail (printf "operator.leaderElect=false with operator.replicas=%d: without leader election every replica would allocate pod CIDRs and write MeshPeers at once; set operator.replicas=1 or operator.leaderElect=true" (int .Values.operator.replicas)) -}}
{{- end -}}
{{- end -}}
