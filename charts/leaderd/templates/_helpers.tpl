{{/*
Helpers. The "leaderd.sidecar.*" templates are also the public interface for
a parent chart that depends on this one (see README.md, "Sidecar"):
  {{- include "leaderd.sidecar.containers" .Subcharts.leaderd | nindent 8 }}
*/}}

{{- define "leaderd.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "leaderd.fullname" -}}
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

{{- define "leaderd.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "leaderd.labels" -}}
helm.sh/chart: {{ include "leaderd.chart" . }}
app.kubernetes.io/name: {{ include "leaderd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The labels that select the candidate pods: the chart's own in
standalone mode, the workload's in sidecar mode. */}}
{{- define "leaderd.selectorLabels" -}}
{{- include "leaderd.selectorLabels.raw" . | trim }}
{{- end }}

{{- define "leaderd.selectorLabels.raw" -}}
{{- if eq .Values.mode "sidecar" }}
{{- if not .Values.sidecar.selectorLabels }}
{{- fail "sidecar.selectorLabels is required in sidecar mode: the labels of your workload's pods, e.g. {app: my-controller}" }}
{{- end }}
{{- toYaml .Values.sidecar.selectorLabels }}
{{- else }}
app.kubernetes.io/name: {{ include "leaderd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}
{{- end }}

{{/* The same selector as "key=value,key=value" for pod_label.selector. */}}
{{- define "leaderd.selectorString" -}}
{{- $parts := list }}
{{- range $k, $v := (include "leaderd.selectorLabels" . | fromYaml) }}
{{- $parts = append $parts (printf "%s=%s" $k $v) }}
{{- end }}
{{- join "," (sortAlpha $parts) }}
{{- end }}

{{- define "leaderd.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "leaderd.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "leaderd.electionName" -}}
{{- default (include "leaderd.fullname" .) .Values.election.name }}
{{- end }}

{{- define "leaderd.leaseNamespace" -}}
{{- default .Release.Namespace .Values.backend.kubernetes.namespace }}
{{- end }}

{{- define "leaderd.leaseName" -}}
{{- default (include "leaderd.electionName" .) .Values.backend.kubernetes.leaseName }}
{{- end }}

{{- define "leaderd.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* Whether the leaderd binary is copied into a workload image. */}}
{{- define "leaderd.inject" -}}
{{- if and (eq .Values.mode "standalone") .Values.standalone.image.repository .Values.standalone.injectLeaderd }}true{{ end }}
{{- end }}

{{/* Whether the configuration is assembled by an init container (the Redis
URL comes from a Secret). */}}
{{- define "leaderd.renderConfig" -}}
{{- if and (eq .Values.backend.type "redis") .Values.backend.redis.existingSecret }}true{{ end }}
{{- end }}

{{/* Whether the Redis password comes from a Secret (leaderd's password_file). */}}
{{- define "leaderd.passwordFile" -}}
{{- if and (eq .Values.backend.type "redis") .Values.backend.redis.passwordSecret }}true{{ end }}
{{- end }}

{{/* Whether switchover is enabled by a bearer token from a Secret
(leaderd's http.admin_token_file). */}}
{{- define "leaderd.adminToken" -}}
{{- if or .Values.admin.tokenSecret.name .Values.admin.tokenSecret.create }}true{{ end }}
{{- end }}

{{/* The Secret that holds the admin token: the named one, or with create
the chart's own (<fullname>-admin by default). */}}
{{- define "leaderd.adminTokenSecretName" -}}
{{- if .Values.admin.tokenSecret.name }}{{ .Values.admin.tokenSecret.name }}{{ else }}{{ include "leaderd.fullname" . }}-admin{{ end }}
{{- end }}

{{/* Whether a health probe is set (then leaderd.yaml gets a health section). */}}
{{- define "leaderd.health" -}}
{{- if or .Values.health.exec .Values.health.http .Values.health.file }}true{{ end }}
{{- end }}

{{/* Where the admin token's Secret is mounted: a file, never the ConfigMap. */}}
{{- define "leaderd.adminTokenFile" -}}/etc/leaderd-admin/token{{- end }}

{{/* The URL `leaderd status` and `leaderd switchover` use inside the pod
(LEADERD_URL): the admin listener when there is one, which needs no token
and serves every endpoint, else the main port. */}}
{{- define "leaderd.cliUrl" -}}
{{- if .Values.admin.listen }}http://{{ .Values.admin.listen }}{{ else }}http://127.0.0.1:{{ .Values.httpPort }}{{ end }}
{{- end }}

{{/* Whether the candidates only observe (election.mode=observe): they never
lead, so there is no leader process, health probe or leader Service. */}}
{{- define "leaderd.observer" -}}
{{- if eq .Values.election.mode "observe" }}true{{ end }}
{{- end }}

{{/* Placeholder for the Redis URL that the init container fills in. */}}
{{- define "leaderd.urlPlaceholder" -}}__LEADERD_REDIS_URL__{{- end }}

{{/*
A duration (15s, 500ms, 1m30s; units ms s m h) in seconds, as a float
string. values.schema.json only admits this syntax.
*/}}
{{- define "leaderd.seconds" -}}
{{- $total := 0.0 }}
{{- range (regexFindAll "[0-9]+(\\.[0-9]+)?(ms|s|m|h)" (toString .) -1) }}
{{- $n := regexFind "^[0-9.]+" . | float64 }}
{{- $unit := regexReplaceAll "^[0-9.]+" . "" }}
{{- if eq $unit "ms" }}{{ $total = addf $total (divf $n 1000) }}
{{- else if eq $unit "s" }}{{ $total = addf $total $n }}
{{- else if eq $unit "m" }}{{ $total = addf $total (mulf $n 60) }}
{{- else if eq $unit "h" }}{{ $total = addf $total (mulf $n 3600) }}
{{- end }}
{{- end }}
{{- $total }}
{{- end }}

{{/*
Seconds the shutdown sequence may take: the leader process's grace period,
the stopped_leading hook's timeout, the release (bounded by
min(renewDeadline, 5s)), and a 5s margin; rounded up.
*/}}
{{- define "leaderd.terminationGracePeriodSeconds" -}}
{{- if kindIs "float64" .Values.terminationGracePeriodSeconds }}
{{- .Values.terminationGracePeriodSeconds | int }}
{{- else if kindIs "int64" .Values.terminationGracePeriodSeconds }}
{{- .Values.terminationGracePeriodSeconds }}
{{- else }}
{{- $grace := 0.0 }}
{{- if and (eq .Values.mode "standalone") .Values.standalone.leaderProcess.command }}
{{- $grace = include "leaderd.seconds" .Values.standalone.leaderProcess.gracePeriod | float64 }}
{{- end }}
{{- $hooks := include "leaderd.seconds" .Values.hooks.timeout | float64 }}
{{- $release := min 5 (include "leaderd.seconds" .Values.election.renewDeadline | float64 | ceil | int) }}
{{- addf $grace $hooks $release 5 | ceil | int }}
{{- end }}
{{- end }}

{{/* Timing rule checks that give a chart-level message before leaderd
would refuse to start. */}}
{{- define "leaderd.validate" -}}
{{- $lease := include "leaderd.seconds" .Values.election.leaseDuration | float64 }}
{{- $renew := include "leaderd.seconds" .Values.election.renewDeadline | float64 }}
{{- $retry := include "leaderd.seconds" .Values.election.retryPeriod | float64 }}
{{- if ge $renew $lease }}
{{- fail (printf "election.renewDeadline (%s) must be shorter than election.leaseDuration (%s)" .Values.election.renewDeadline .Values.election.leaseDuration) }}
{{- end }}
{{- if and (eq .Values.backend.type "kubernetes") (ne $lease (floor $lease)) }}
{{- fail (printf "election.leaseDuration (%s) must be whole seconds with backend.type=kubernetes (a Lease's leaseDurationSeconds)" .Values.election.leaseDuration) }}
{{- end }}
{{- if le $renew (mulf 1.2 $retry) }}
{{- fail (printf "election.renewDeadline (%s) must be longer than 1.2 × election.retryPeriod (%s)" .Values.election.renewDeadline .Values.election.retryPeriod) }}
{{- end }}
{{- if and (eq .Values.backend.type "redis") (not .Values.backend.redis.existingSecret) }}
{{- if not (or .Values.backend.redis.url (dig "backend" "redis" "sentinel" "" .Values.extraConfig)) }}
{{- fail "backend.type=redis needs backend.redis.url, backend.redis.existingSecret, or extraConfig.backend.redis.sentinel" }}
{{- end }}
{{- if regexMatch "^rediss?://[^/@]*:[^/@]+@" .Values.backend.redis.url }}
{{- fail "backend.redis.url contains a password: put the whole URL in a Secret and set backend.redis.existingSecret (it would otherwise be stored in a ConfigMap)" }}
{{- end }}
{{- end }}
{{- with .Values.admin.listen }}
{{- $port := regexReplaceAll "^.*:" . "" | int }}
{{- if or (lt $port 1) (gt $port 65535) }}
{{- fail (printf "admin.listen (%s): the port must be between 1 and 65535" .) }}
{{- end }}
{{- if eq $port ($.Values.httpPort | int) }}
{{- fail (printf "admin.listen (%s) must use another port than httpPort (%v): leaderd already listens on 0.0.0.0:%v" . $.Values.httpPort $.Values.httpPort) }}
{{- end }}
{{- end }}
{{- if and (include "leaderd.observer" .) (eq .Values.mode "standalone") .Values.standalone.leaderProcess.command }}
{{- fail "election.mode=observe never leads, so it cannot run standalone.leaderProcess.command: remove the command or use election.mode=candidate" }}
{{- end }}
{{- if and (include "leaderd.observer" .) (include "leaderd.health" .) }}
{{- fail "election.mode=observe never leads, so its health decides nothing: remove the health probe or use election.mode=candidate" }}
{{- end }}
{{- $probes := 0 }}
{{- range (list .Values.health.exec .Values.health.http .Values.health.file) }}{{ if . }}{{ $probes = add1 $probes }}{{ end }}{{ end }}
{{- if gt $probes 1 }}
{{- fail "health: set exactly one of health.exec, health.http and health.file" }}
{{- end }}
{{- if and .Values.health.file (not .Values.health.maxAge) }}
{{- fail "health.file needs health.maxAge: how recently the file must have been modified, e.g. 10s" }}
{{- end }}
{{- if and .Values.health.maxAge (not .Values.health.file) }}
{{- fail "health.maxAge applies to a file probe only (health.file)" }}
{{- end }}
{{- if and .Values.health.file (eq (include "leaderd.seconds" .Values.health.maxAge | float64) 0.0) }}
{{- fail "health.maxAge must be greater than zero" }}
{{- end }}
{{- if include "leaderd.health" . }}
{{- $period := include "leaderd.seconds" .Values.health.period | float64 }}
{{- $timeout := include "leaderd.seconds" .Values.health.timeout | float64 }}
{{- if or (lt $period 0.01) (lt $timeout 0.01) }}
{{- fail (printf "health.period (%s) and health.timeout (%s) must be at least 10ms" .Values.health.period .Values.health.timeout) }}
{{- end }}
{{- if gt $timeout $period }}
{{- fail (printf "health.timeout (%s) must not be longer than health.period (%s): probes run one at a time" .Values.health.timeout .Values.health.period) }}
{{- end }}
{{- end }}
{{- if and .Values.election.preemptDelay (eq (include "leaderd.seconds" .Values.election.preemptDelay | float64) 0.0) }}
{{- fail "election.preemptDelay must be greater than zero (or empty: 2 × leaseDuration)" }}
{{- end }}
{{- if and .Values.election.preemptDelay (not .Values.election.preempt) }}
{{- fail "election.preemptDelay has no effect without election.preempt: true; set both or remove it" }}
{{- end }}
{{- if and (include "leaderd.observer" .) (or .Values.election.preempt (ne (.Values.election.priority | int) 0)) }}
{{- fail "election.mode=observe never competes, so election.priority and election.preempt decide nothing: remove them or use election.mode=candidate" }}
{{- end }}
{{- if and .Values.health.unhealthyBackoff (lt (include "leaderd.seconds" .Values.health.unhealthyBackoff | float64) $lease) }}
{{- fail (printf "health.unhealthyBackoff (%s) must be at least election.leaseDuration (%s), or two flapping candidates hand the lease back and forth" .Values.health.unhealthyBackoff .Values.election.leaseDuration) }}
{{- end }}
{{- if and .Values.leaderService.enabled (not .Values.podLabel.enabled) (not (include "leaderd.observer" .)) }}
{{- fail "leaderService.enabled needs podLabel.enabled: the leader Service selects the leader's pod by that label" }}
{{- end }}
{{- if and (eq .Values.mode "standalone") .Values.standalone.leaderProcess.command }}
{{- $needed := include "leaderd.seconds" .Values.standalone.leaderProcess.gracePeriod | float64 }}
{{- if .Values.hooks.stoppedLeading }}{{ $needed = addf $needed (include "leaderd.seconds" .Values.hooks.timeout | float64) 0.1 }}{{ end }}
{{- if .Values.podLabel.enabled }}{{ $needed = addf $needed 0.1 }}{{ end }}
{{- if ge $needed (subf $lease $renew) }}
{{- fail (printf "standalone.leaderProcess.gracePeriod (%s)%s%s must be shorter than election.leaseDuration − election.renewDeadline (%.3gs): the workload must be stopped before another candidate can lead" .Values.standalone.leaderProcess.gracePeriod (ternary (printf " + hooks.timeout (%s) + 100ms" .Values.hooks.timeout) "" (not (empty .Values.hooks.stoppedLeading))) (ternary " + 100ms (pod label)" "" .Values.podLabel.enabled) (subf $lease $renew)) }}
{{- end }}
{{- end }}
{{- end }}

{{/* leaderd.yaml, in leaderd's own format (config/leaderd.yaml documents it). */}}
{{- define "leaderd.config" -}}
{{- $election := dict "name" (include "leaderd.electionName" .) "lease_duration" .Values.election.leaseDuration "renew_deadline" .Values.election.renewDeadline "retry_period" .Values.election.retryPeriod "mode" .Values.election.mode }}
{{- if not (include "leaderd.observer" .) }}
{{- $_ := set $election "priority" (.Values.election.priority | int64) }}
{{- $_ := set $election "preempt" .Values.election.preempt }}
{{- with .Values.election.preemptDelay }}
{{- $_ := set $election "preempt_delay" . }}
{{- end }}
{{- end }}
{{- $backend := dict }}
{{- if eq .Values.backend.type "kubernetes" }}
{{- $_ := set $backend "kubernetes" (dict "namespace" (include "leaderd.leaseNamespace" .) "lease_name" (include "leaderd.leaseName" .)) }}
{{- else }}
{{- $redis := dict "key_prefix" .Values.backend.redis.keyPrefix }}
{{- if include "leaderd.renderConfig" . }}
{{- $_ := set $redis "urls" (list (include "leaderd.urlPlaceholder" .)) }}
{{- else if .Values.backend.redis.url }}
{{- $_ := set $redis "urls" (list .Values.backend.redis.url) }}
{{- end }}
{{- if .Values.backend.redis.passwordSecret }}
{{- $_ := set $redis "password_file" "/etc/leaderd-redis-password/password" }}
{{- end }}
{{- $_ := set $backend "redis" $redis }}
{{- end }}
{{- $config := dict "election" $election "backend" $backend }}
{{- $http := dict "listen" (printf "0.0.0.0:%v" .Values.httpPort) }}
{{- with .Values.advertiseUrl }}
{{- $_ := set $http "advertise_url" . }}
{{- end }}
{{- if include "leaderd.adminToken" . }}
{{- $_ := set $http "admin_token_file" (include "leaderd.adminTokenFile" .) }}
{{- end }}
{{- with .Values.admin.listen }}
{{- $_ := set $http "admin_listen" . }}
{{- end }}
{{- $_ := set $config "http" $http }}
{{- $_ := set $config "hooks" (dict "started_leading" .Values.hooks.startedLeading "stopped_leading" .Values.hooks.stoppedLeading "new_leader" .Values.hooks.newLeader "timeout" .Values.hooks.timeout "step_down_on_failure" .Values.hooks.stepDownOnFailure) }}
{{- if and (eq .Values.mode "standalone") .Values.standalone.leaderProcess.command }}
{{- $_ := set $config "leader_process" (dict "command" .Values.standalone.leaderProcess.command "grace_period" .Values.standalone.leaderProcess.gracePeriod "on_exit" .Values.standalone.leaderProcess.onExit) }}
{{- end }}
{{- if .Values.podLabel.enabled }}
{{- $_ := set $config "pod_label" (dict "key" .Values.podLabel.key "leader_value" .Values.podLabel.leaderValue "follower_value" .Values.podLabel.followerValue "selector" (include "leaderd.selectorString" .) "annotation" .Values.podLabel.annotation) }}
{{- end }}
{{- if include "leaderd.health" . }}
{{- $health := dict "period" .Values.health.period "timeout" .Values.health.timeout "failure_threshold" (.Values.health.failureThreshold | int) "success_threshold" (.Values.health.successThreshold | int) }}
{{- with .Values.health.exec }}{{ $_ := set $health "exec" . }}{{ end }}
{{- with .Values.health.http }}{{ $_ := set $health "http" . }}{{ end }}
{{- with .Values.health.file }}{{ $_ := set $health "file" . }}{{ end }}
{{- with .Values.health.maxAge }}{{ $_ := set $health "max_age" . }}{{ end }}
{{- with .Values.health.unhealthyBackoff }}{{ $_ := set $health "unhealthy_backoff" . }}{{ end }}
{{- $_ := set $config "health" $health }}
{{- end }}
{{- toYaml (mergeOverwrite $config (deepCopy .Values.extraConfig)) }}
{{- end }}

{{/* The path of leaderd's binary inside the container. */}}
{{- define "leaderd.binary" -}}
{{- if include "leaderd.inject" . }}/opt/leaderd/bin/leaderd{{ else }}leaderd{{ end }}
{{- end }}

{{- define "leaderd.env" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
# leaderd advertises http://$POD_IP:<port> to the other candidates.
- name: POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
- name: LEADERD_CONFIG
  value: /etc/leaderd/leaderd.yaml
- name: LEADERD_LOG
  value: {{ .Values.log.level | quote }}
- name: LEADERD_LOG_FORMAT
  value: {{ .Values.log.format | quote }}
# For `leaderd status` and `leaderd switchover` run with kubectl exec.
- name: LEADERD_URL
  value: {{ include "leaderd.cliUrl" . | quote }}
{{- if include "leaderd.adminToken" . }}
- name: LEADERD_ADMIN_TOKEN_FILE
  value: {{ include "leaderd.adminTokenFile" . }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Init container, only when needed: it copies leaderd's binary into a workload
image (standalone with standalone.image) and/or writes leaderd.yaml with the
Redis URL from the Secret into an in-memory volume, then checks the file.
*/}}
{{- define "leaderd.sidecar.initContainers" -}}
{{- include "leaderd.sidecar.initContainers.raw" . | trim }}
{{- end }}

{{- define "leaderd.sidecar.initContainers.raw" -}}
{{- if or (include "leaderd.inject" .) (include "leaderd.renderConfig" .) }}
{{- $script := list "set -euo pipefail" }}
{{- if include "leaderd.inject" . }}
{{- $script = append $script "cp /usr/local/bin/leaderd /opt/leaderd/bin/leaderd" }}
{{- end }}
{{- if include "leaderd.renderConfig" . }}
{{- $script = append $script "umask 027" }}
{{- $script = append $script "url=$(cat /etc/leaderd-redis-url/url)" }}
{{- $script = append $script (printf "case $url in *'\"'*|*\\\\*|*$'\\n'*) echo \"leaderd-init: the Redis URL in Secret %s, key %s, contains a quote, a backslash or a newline: percent-encode it\" >&2; exit 2;; esac" .Values.backend.redis.existingSecret .Values.backend.redis.existingSecretKey) }}
{{- $script = append $script "template=$(cat /etc/leaderd-template/leaderd.yaml)" }}
{{- $script = append $script `quoted="\"$url\""` }}
{{- $script = append $script (printf "printf '%%s\\n' \"${template//%s/\"$quoted\"}\" > /etc/leaderd/leaderd.yaml" (include "leaderd.urlPlaceholder" .)) }}
{{- $script = append $script "/usr/local/bin/leaderd check --offline --config /etc/leaderd/leaderd.yaml" }}
{{- end }}
- name: leaderd-init
  image: {{ include "leaderd.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command: ["/bin/bash", "-c"]
  args:
    - {{ join "\n" $script | quote }}
  env:
    {{- include "leaderd.env" . | nindent 4 }}
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  resources:
    requests:
      cpu: 10m
      memory: 16Mi
    limits:
      memory: 64Mi
  volumeMounts:
    {{- if include "leaderd.inject" . }}
    - name: leaderd-bin
      mountPath: /opt/leaderd/bin
    {{- end }}
    {{- if include "leaderd.renderConfig" . }}
    - name: leaderd-config
      mountPath: /etc/leaderd
    - name: leaderd-config-template
      mountPath: /etc/leaderd-template
      readOnly: true
    - name: leaderd-redis-url
      mountPath: /etc/leaderd-redis-url
      readOnly: true
    {{- if include "leaderd.passwordFile" . }}
    - name: leaderd-redis-password
      mountPath: /etc/leaderd-redis-password
      readOnly: true
    {{- end }}
    {{- end }}
{{- end }}
{{- end }}

{{/* The leaderd container (the sidecar; in standalone mode it also runs the workload). */}}
{{- define "leaderd.sidecar.containers" -}}
{{- include "leaderd.sidecar.containers.raw" . | trim }}
{{- end }}

{{- define "leaderd.sidecar.containers.raw" -}}
{{- $standalone := eq .Values.mode "standalone" }}
- name: leaderd
  {{- if and $standalone .Values.standalone.image.repository }}
  image: {{ printf "%s:%s" .Values.standalone.image.repository (required "standalone.image.tag is required with standalone.image.repository" .Values.standalone.image.tag) }}
  imagePullPolicy: {{ .Values.standalone.image.pullPolicy }}
  command: [{{ include "leaderd.binary" . | quote }}, "run"]
  {{- else }}
  image: {{ include "leaderd.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command: ["/usr/local/bin/leaderd", "run"]
  {{- end }}
  env:
    {{- include "leaderd.env" . | nindent 4 }}
  ports:
    - name: leaderd-http
      containerPort: {{ .Values.httpPort }}
      protocol: TCP
    {{- if $standalone }}
    {{- with .Values.standalone.ports }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
    {{- end }}
  livenessProbe:
    httpGet:
      path: /healthz
      port: leaderd-http
    {{- toYaml .Values.livenessProbe | nindent 4 }}
  readinessProbe:
    httpGet:
      path: {{ include "leaderd.readinessPath" . }}
      port: leaderd-http
    {{- toYaml .Values.readinessProbe | nindent 4 }}
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  resources:
    {{- toYaml .Values.resources | nindent 4 }}
  volumeMounts:
    - name: leaderd-config
      mountPath: /etc/leaderd
      readOnly: true
    - name: leaderd-tmp
      mountPath: /tmp
    {{- if include "leaderd.inject" . }}
    - name: leaderd-bin
      mountPath: /opt/leaderd/bin
      readOnly: true
    {{- end }}
    {{- if include "leaderd.passwordFile" . }}
    - name: leaderd-redis-password
      mountPath: /etc/leaderd-redis-password
      readOnly: true
    {{- end }}
    {{- if include "leaderd.adminToken" . }}
    - name: leaderd-admin-token
      mountPath: {{ include "leaderd.adminTokenFile" . | dir }}
      readOnly: true
    {{- end }}
{{- end }}

{{/*
The readinessProbe's path. Standalone: /readyz (the pod is only leaderd and
its leader process). Sidecar: /healthz, so that the workload's readiness
does not follow the election backend (a pod is Ready only when all its
containers are: a Redis outage would take every pod out of its Services);
/readyz only with sidecar.readinessOnBackend. Never /leader: only one pod
could be Ready, and a rolling update would stall.
*/}}
{{- define "leaderd.readinessPath" -}}
{{- if or (eq .Values.mode "standalone") .Values.sidecar.readinessOnBackend }}/readyz{{ else }}/healthz{{ end }}
{{- end }}

{{- define "leaderd.sidecar.volumes" -}}
{{- include "leaderd.sidecar.volumes.raw" . | trim }}
{{- end }}

{{- define "leaderd.sidecar.volumes.raw" -}}
{{- if include "leaderd.renderConfig" . }}
- name: leaderd-config
  emptyDir:
    medium: Memory
    sizeLimit: 1Mi
- name: leaderd-config-template
  configMap:
    name: {{ include "leaderd.fullname" . }}
- name: leaderd-redis-url
  secret:
    secretName: {{ .Values.backend.redis.existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ .Values.backend.redis.existingSecretKey }}
        path: url
{{- else }}
- name: leaderd-config
  configMap:
    name: {{ include "leaderd.fullname" . }}
{{- end }}
{{- if include "leaderd.passwordFile" . }}
- name: leaderd-redis-password
  secret:
    secretName: {{ .Values.backend.redis.passwordSecret }}
    defaultMode: 0440
    items:
      - key: {{ .Values.backend.redis.passwordSecretKey }}
        path: password
{{- end }}
{{- if include "leaderd.adminToken" . }}
- name: leaderd-admin-token
  secret:
    secretName: {{ include "leaderd.adminTokenSecretName" . }}
    defaultMode: 0440
    items:
      - key: {{ .Values.admin.tokenSecret.key }}
        path: {{ include "leaderd.adminTokenFile" . | base }}
{{- end }}
- name: leaderd-tmp
  emptyDir:
    sizeLimit: 64Mi
{{- if include "leaderd.inject" . }}
- name: leaderd-bin
  emptyDir:
    sizeLimit: 64Mi
{{- end }}
{{- end }}

{{/* Pod template annotation that rolls the pods when the configuration changes. */}}
{{- define "leaderd.sidecar.podAnnotations" -}}
checksum/leaderd-config: {{ include "leaderd.config" . | sha256sum }}
{{- end }}

{{- define "leaderd.sidecar.serviceAccountName" -}}
{{ include "leaderd.serviceAccountName" . }}
{{- end }}

{{/* The pieces of a pod spec to add to your workload, as one YAML block
(printed by NOTES.txt in sidecar mode). */}}
{{- define "leaderd.sidecar.podSpec" -}}
metadata:
  annotations:
    {{- include "leaderd.sidecar.podAnnotations" . | nindent 4 }}
spec:
  serviceAccountName: {{ include "leaderd.serviceAccountName" . }}
  {{- if or .Values.podLabel.enabled (eq .Values.backend.type "kubernetes") }}
  automountServiceAccountToken: true
  {{- end }}
  terminationGracePeriodSeconds: {{ include "leaderd.terminationGracePeriodSeconds" . }}
  {{- with (include "leaderd.sidecar.initContainers" .) }}
  initContainers:
    {{- . | nindent 4 }}
  {{- end }}
  containers:
    {{- include "leaderd.sidecar.containers" . | nindent 4 }}
  volumes:
    {{- include "leaderd.sidecar.volumes" . | nindent 4 }}
{{- end }}
