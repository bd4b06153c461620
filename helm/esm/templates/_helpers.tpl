{{/*
Names, labels and the pieces shared by the standalone Deployment and the sidecar templates.
Every template here takes the esm chart's own context (. in this chart; .Subcharts.esm in an
application chart that depends on it).
*/}}

{{- define "esm.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "esm.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "esm.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "esm.selectorLabels" -}}
app.kubernetes.io/name: {{ include "esm.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "esm.labels" -}}
helm.sh/chart: {{ include "esm.chart" . }}
{{ include "esm.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: esm
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The labels that select the pods esm runs in: its own, or the application's in sidecar mode. */}}
{{- define "esm.podSelectorLabels" -}}
{{- if eq .Values.mode "sidecar" }}
{{- include "esm.sidecar.podLabels" . }}
{{- else }}
{{- include "esm.selectorLabels" . }}
{{- end }}
{{- end }}

{{- define "esm.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "esm.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "esm.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* esm.yaml: config, with admin.listen set to the admin port and state.path on the volume. */}}
{{- define "esm.config" -}}
{{- $config := mustDeepCopy (default dict .Values.config) }}
{{- $_ := set $config "admin" (dict "listen" (printf "0.0.0.0:%d" (int .Values.admin.port))) }}
{{- $state := mustDeepCopy (default dict (get $config "state")) }}
{{- if and (eq (default "sqlite" (get $state "backend")) "sqlite") (not (get $state "path")) }}
{{- $_ := set $state "path" (printf "%s/esm-state.db" (trimSuffix "/" .Values.statePath)) }}
{{- end }}
{{- $_ := set $config "state" $state }}
{{- /* Values merge maps: the default example function would stay beside the user's own.
Keep only the functions a mapping uses (and the targets of weighted ones). */}}
{{- $functions := default dict (get $config "functions") }}
{{- $used := dict }}
{{- range (default list (get $config "mappings")) }}
{{- $name := toString (default (get . "FunctionArn") (get . "FunctionName")) }}
{{- $parts := splitList ":" $name }}
{{- if and (hasPrefix "arn:" $name) (ge (len $parts) 7) }}{{ $name = index $parts 6 }}{{ end }}
{{- $_ := set $used $name true }}
{{- $function := get $functions $name }}
{{- if kindIs "map" $function }}
{{- range (default list (get $function "targets")) }}
{{- if kindIs "map" . }}{{ $_ := set $used (toString (get . "function")) true }}{{ end }}
{{- end }}
{{- end }}
{{- end }}
{{- $kept := dict }}
{{- range $name, $function := $functions }}
{{- if hasKey $used $name }}{{ $_ := set $kept $name $function }}{{ end }}
{{- end }}
{{- $_ := set $config "functions" $kept }}
{{- toYaml $config }}
{{- end }}

{{- define "esm.configChecksum" -}}
{{- include "esm.config" . | sha256sum }}
{{- end }}

{{/* "true" when a mapping reads a Kinesis or DynamoDB stream. */}}
{{- define "esm.hasStreams" -}}
{{- $found := false }}
{{- range (default list .Values.config.mappings) }}
{{- $arn := toString (get . "EventSourceArn") }}
{{- if or (contains ":kinesis:" $arn) (contains ":dynamodb:" $arn) }}{{ $found = true }}{{ end }}
{{- end }}
{{- if $found }}true{{ end }}
{{- end }}

{{/* "true" when a mapping reads an SQS queue. */}}
{{- define "esm.hasQueues" -}}
{{- $found := false }}
{{- range (default list .Values.config.mappings) }}
{{- if contains ":sqs:" (toString (get . "EventSourceArn")) }}{{ $found = true }}{{ end }}
{{- end }}
{{- if $found }}true{{ end }}
{{- end }}

{{/* "true" once replicas can share a stream's shards: the dynamodb lease backend. */}}
{{- define "esm.sharesShards" -}}
{{- $state := default dict .Values.config.state }}
{{- if eq (toString (get $state "backend")) "dynamodb" }}true{{ end }}
{{- end }}

{{- define "esm.shutdownGraceSeconds" -}}
{{- $delivery := default dict .Values.config.delivery }}
{{- $grace := get $delivery "shutdown_grace_seconds" }}
{{- if kindIs "invalid" $grace }}30{{ else }}{{ $grace | float64 | ceil | int }}{{ end }}
{{- end }}

{{/* PromQL label matchers for this release's esm series. */}}
{{- define "esm.promSelector" -}}
{{- if .Values.metrics.selector }}
{{- .Values.metrics.selector }}
{{- else }}
{{- printf "namespace=%q,job=%q" .Release.Namespace (include "esm.fullname" .) }}
{{- end }}
{{- end }}

{{/* The esm container, in either mode. */}}
{{- define "esm.container" -}}
- name: esm
  image: {{ include "esm.image" . | quote }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args: ["-c", "/etc/esm/esm.yaml"]
  ports:
    - name: esm-admin
      containerPort: {{ .Values.admin.port }}
      protocol: TCP
  {{- if or .Values.env .Values.secrets.env }}
  env:
    {{- range .Values.secrets.env }}
    - name: {{ .name }}
      valueFrom:
        secretKeyRef:
          name: {{ .secretName }}
          key: {{ .key }}
    {{- end }}
    {{- with .Values.env }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- end }}
  {{- with .Values.envFrom }}
  envFrom:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  startupProbe:
    httpGet:
      path: /healthz
      port: esm-admin
    {{- toYaml .Values.probes.startup | nindent 4 }}
  livenessProbe:
    httpGet:
      path: /healthz
      port: esm-admin
    {{- toYaml .Values.probes.liveness | nindent 4 }}
  readinessProbe:
    httpGet:
      path: /readyz
      port: esm-admin
    {{- toYaml .Values.probes.readiness | nindent 4 }}
  {{- with .Values.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.securityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  volumeMounts:
    - name: esm-config
      mountPath: /etc/esm
      readOnly: true
    - name: esm-state
      mountPath: {{ .Values.statePath }}
    - name: esm-tmp
      mountPath: /tmp
    {{- range $index, $secret := .Values.secrets.files }}
    - name: esm-secret-{{ $index }}
      mountPath: {{ $secret.mountPath }}
      readOnly: true
    {{- end }}
    {{- with .Values.extraVolumeMounts }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end }}

{{/* The pod volumes esm needs; the state volume only when `state` is true. */}}
{{- define "esm.volumes" -}}
{{- $ := .context -}}
- name: esm-config
  configMap:
    name: {{ include "esm.fullname" $ }}
- name: esm-tmp
  emptyDir:
    sizeLimit: 64Mi
{{- if .state }}
{{- if not $.Values.persistence.enabled }}
- name: esm-state
  emptyDir:
    sizeLimit: {{ $.Values.persistence.emptyDirSizeLimit }}
{{- else }}
- name: esm-state
  persistentVolumeClaim:
    claimName: {{ default (printf "%s-state" (include "esm.fullname" $)) $.Values.persistence.existingClaim }}
{{- end }}
{{- end }}
{{- range $index, $secret := $.Values.secrets.files }}
- name: esm-secret-{{ $index }}
  secret:
    secretName: {{ $secret.secretName }}
{{- end }}
{{- with $.Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Refuse values that would render something that cannot work, with the reason. */}}
{{- define "esm.validate" -}}
{{- $streams := include "esm.hasStreams" . }}
{{- $queues := include "esm.hasQueues" . }}
{{- $shares := include "esm.sharesShards" . }}
{{- if and .Values.metrics.serviceMonitor.enabled .Values.metrics.podMonitor.enabled }}
{{- fail "metrics: enable serviceMonitor or podMonitor, not both: each would scrape esm and every series would be counted twice" }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.service.enabled) }}
{{- fail "metrics.serviceMonitor needs service.enabled: it scrapes through the Service" }}
{{- end }}
{{- if eq .Values.mode "standalone" }}
{{- if and $streams (not $shares) (gt (int .Values.replicaCount) 1) }}
{{- fail (printf "replicaCount: %d replicas would each read every shard of the stream mappings with the sqlite state backend: use 1, set config.state.backend to dynamodb to share the shards through leases (docs/scaling.md), or put the SQS mappings in a release of their own" (int .Values.replicaCount)) }}
{{- end }}
{{- if and .Values.persistence.enabled (gt (int .Values.replicaCount) 1) }}
{{- fail "persistence: a state volume belongs to one esm process; use replicaCount: 1 (SQS mappings keep no checkpoints: turn persistence off to run several replicas)" }}
{{- end }}
{{- if .Values.autoscaling.keda.enabled }}
{{- if and $streams (not $shares) }}
{{- fail "autoscaling.keda: the configuration has stream mappings, which run in one replica with the sqlite state backend; set config.state.backend to dynamodb to share their shards between replicas (docs/scaling.md), or scale SQS mappings in a release of their own" }}
{{- end }}
{{- if .Values.persistence.enabled }}
{{- fail "autoscaling.keda: a state volume belongs to one esm process; turn persistence off (SQS mappings keep no checkpoints)" }}
{{- end }}
{{- if not (or $queues $streams) }}
{{- fail "autoscaling.keda: no mapping to scale on" }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
