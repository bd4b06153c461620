{{/*
The sidecar interface: what an application chart that depends on this chart (mode: sidecar)
includes in its own pod template, passing this chart's context, .Subcharts.esm. See README.md
and deploy/examples/orders-app. Stop order: the application container gets a preStop hook
(esm.sidecar.appLifecycle) that outlasts esm's shutdown grace period, so that esm, stopped at
once by SIGTERM, finishes its in-flight batches while the application still answers.
*/}}

{{/* Pod labels: the Service, PodMonitor and helm test find esm's pods by them. */}}
{{- define "esm.sidecar.podLabels" -}}
esm-sidecar: {{ include "esm.fullname" . }}
{{- end }}

{{/* Pod annotations: a configuration change rolls the pods. */}}
{{- define "esm.sidecar.podAnnotations" -}}
checksum/esm-config: {{ include "esm.configChecksum" . }}
{{- end }}

{{/* The esm container: an item of the pod's `containers` list. */}}
{{- define "esm.sidecar.container" -}}
{{ include "esm.container" . }}
{{- end }}

{{/* esm's volumes: items of the pod's `volumes` list. With persistence enabled and no
existingClaim, the state volume comes from esm.sidecar.volumeClaimTemplate instead. */}}
{{- define "esm.sidecar.volumes" -}}
{{ include "esm.volumes" (dict "context" . "state" (or (not .Values.persistence.enabled) .Values.persistence.existingClaim)) }}
{{- end }}

{{/* With persistence enabled and no existingClaim: an item of a StatefulSet's
volumeClaimTemplates, giving each pod its own state volume. */}}
{{- define "esm.sidecar.volumeClaimTemplate" -}}
{{- if and .Values.persistence.enabled (not .Values.persistence.existingClaim) -}}
- metadata:
    name: esm-state
    labels:
      {{- include "esm.selectorLabels" . | nindent 6 }}
  spec:
    accessModes:
      {{- toYaml .Values.persistence.accessModes | nindent 6 }}
    {{- with include "esm.storageClass" . }}
    {{- . | nindent 4 }}
    {{- end }}
    resources:
      requests:
        storage: {{ .Values.persistence.size }}
{{- end }}
{{- end }}

{{/* The application container's `lifecycle`: its preStop keeps the application up until esm
has stopped reading and finished its in-flight batches. */}}
{{- define "esm.sidecar.appLifecycle" -}}
{{- $seconds := add (include "esm.shutdownGraceSeconds" . | int) (int .Values.sidecar.preStopExtraSeconds) -}}
preStop:
  {{- if eq .Values.sidecar.preStop "exec" }}
  exec:
    command: ["sleep", "{{ $seconds }}"]
  {{- else }}
  sleep:
    seconds: {{ $seconds }}
  {{- end }}
{{- end }}

{{/* The pod's terminationGracePeriodSeconds: the application's preStop, then its own stop. */}}
{{- define "esm.sidecar.terminationGracePeriodSeconds" -}}
{{- add (include "esm.shutdownGraceSeconds" . | int) (int .Values.sidecar.preStopExtraSeconds) (int .Values.sidecar.appShutdownSeconds) }}
{{- end }}

{{/* The service account esm's AWS role is bound to (when this chart creates it). */}}
{{- define "esm.sidecar.serviceAccountName" -}}
{{- include "esm.serviceAccountName" . }}
{{- end }}

{{- define "esm.storageClass" -}}
{{- with .Values.persistence.storageClass }}
{{- if eq . "-" }}
storageClassName: ""
{{- else }}
storageClassName: {{ . | quote }}
{{- end }}
{{- end }}
{{- end }}
