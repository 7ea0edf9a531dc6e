{{/*
Chart name, truncated to the 63 characters Kubernetes names allow.
*/}}
{{- define "budget-exporter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name; the release name alone when it already contains the chart name.
*/}}
{{- define "budget-exporter.fullname" -}}
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

{{- define "budget-exporter.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every object.
*/}}
{{- define "budget-exporter.labels" -}}
{{- $labels := dict
  "helm.sh/chart" (include "budget-exporter.chart" .)
  "app.kubernetes.io/version" .Chart.AppVersion
  "app.kubernetes.io/managed-by" .Release.Service
  "app.kubernetes.io/part-of" "budget-exporter" }}
{{- $labels = merge $labels (include "budget-exporter.selectorLabels" . | fromYaml) }}
{{- /* commonLabels never replace the chart's own labels. */}}
{{- toYaml (merge $labels (.Values.commonLabels | default dict)) }}
{{- end }}

{{/*
The Service's labels: the chart's labels plus service.labels (which cannot
replace the chart's own, so the ServiceMonitor's selector keeps matching).
*/}}
{{- define "budget-exporter.serviceLabels" -}}
{{- toYaml (merge (include "budget-exporter.labels" . | fromYaml) (.Values.service.labels | default dict)) }}
{{- end }}

{{/*
The namespace of every namespaced object (namespaceOverride, else the release's).
*/}}
{{- define "budget-exporter.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The `job` label Prometheus Operator gives the exporter's targets: the value of
the Service label named by serviceMonitor.jobLabel when the Service has it,
else the Service name (what the Operator's generated relabelling does).
*/}}
{{- define "budget-exporter.scrapeJob" -}}
{{- $job := include "budget-exporter.fullname" . }}
{{- with .Values.serviceMonitor.jobLabel }}
{{- $value := get (include "budget-exporter.serviceLabels" $ | fromYaml) . }}
{{- if $value }}
{{- $job = toString $value }}
{{- end }}
{{- end }}
{{- $job }}
{{- end }}

{{/*
The label matchers that select the exporter's own scrape job in the rules
(BudgetExporterDown): prometheusRule.selector, else the release's job and
namespace as Prometheus Operator labels them.
*/}}
{{- define "budget-exporter.ruleSelector" -}}
{{- if .Values.prometheusRule.selector }}
{{- .Values.prometheusRule.selector }}
{{- else }}
{{- printf "job=%q,namespace=%q" (include "budget-exporter.scrapeJob" .) (include "budget-exporter.namespace" .) }}
{{- end }}
{{- end }}

{{/*
Labels that select the exporter's pods.
*/}}
{{- define "budget-exporter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "budget-exporter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "budget-exporter.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "budget-exporter.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The image reference: repository@digest, else repository:tag (tag defaults to appVersion).
*/}}
{{- define "budget-exporter.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "budget-exporter.configMapName" -}}
{{- default (include "budget-exporter.fullname" .) .Values.existingConfigMap }}
{{- end }}

{{/*
The Secret mounted for *_file credentials, or "" when there is none.
*/}}
{{- define "budget-exporter.secretName" -}}
{{- if .Values.existingSecret }}
{{- .Values.existingSecret }}
{{- else if .Values.secrets }}
{{- include "budget-exporter.fullname" . }}
{{- end }}
{{- end }}

{{/*
The Secret holding the --web.config.file, or "" when the exporter serves plain HTTP.
*/}}
{{- define "budget-exporter.webConfigSecret" -}}
{{- if .Values.webConfig.existingSecret }}
{{- .Values.webConfig.existingSecret }}
{{- else if .Values.webConfig.config }}
{{- printf "%s-web-config" (include "budget-exporter.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/*
"true" when the exporter serves HTTPS: webConfig.tls if set, else whether the
inline web configuration has tls_server_config or a tlsSecret is mounted.
*/}}
{{- define "budget-exporter.tls" -}}
{{- if include "budget-exporter.webConfigSecret" . }}
{{- if not (kindIs "invalid" .Values.webConfig.tls) }}
{{- if .Values.webConfig.tls }}true{{ end }}
{{- else if or (hasKey (.Values.webConfig.config | default dict) "tls_server_config") .Values.webConfig.tlsSecret }}true
{{- end }}
{{- end }}
{{- end }}

{{/*
How the kubelet probes the exporter: "httpGet" or "tcpSocket".
Exporter-toolkit style web configurations protect every path, /-/healthy and
/-/ready included, and the kubelet has no credentials: in "auto" mode the
probes fall back to a TCP connect when the web configuration asks for basic
auth or a client certificate (or cannot be read: an existingSecret), unless
probeHttpHeaders supply the credentials.
*/}}
{{- define "budget-exporter.probeMode" -}}
{{- $web := .Values.webConfig }}
{{- if ne $web.probeMode "auto" }}
{{- $web.probeMode }}
{{- else if not (include "budget-exporter.webConfigSecret" .) }}httpGet
{{- else }}
{{- $config := $web.config | default dict }}
{{- $tlsConfig := get $config "tls_server_config" | default dict }}
{{- $clientCerts := has (get $tlsConfig "client_auth_type" | default "") (list "RequireAnyClientCert" "RequireAndVerifyClientCert") }}
{{- $basicAuth := not (empty (get $config "basic_auth_users")) }}
{{- if or $clientCerts (and (or $basicAuth $web.existingSecret) (not $web.probeHttpHeaders)) }}tcpSocket
{{- else }}httpGet
{{- end }}
{{- end }}
{{- end }}

{{/*
A probe from values, adapted to the web configuration: HTTPS and the
probeHttpHeaders for httpGet probes, or a TCP connect on the same port.
Called with (dict "probe" <probe> "root" $).
*/}}
{{- define "budget-exporter.probe" -}}
{{- $probe := deepCopy .probe }}
{{- $root := .root }}
{{- if and $probe.httpGet (include "budget-exporter.webConfigSecret" $root) }}
{{- if eq (include "budget-exporter.probeMode" $root) "tcpSocket" }}
{{- $probe = omit $probe "httpGet" | merge (dict "tcpSocket" (dict "port" $probe.httpGet.port)) }}
{{- else }}
{{- $get := $probe.httpGet }}
{{- if include "budget-exporter.tls" $root }}
{{- $_ := set $get "scheme" "HTTPS" }}
{{- end }}
{{- with $root.Values.webConfig.probeHttpHeaders }}
{{- $_ := set $get "httpHeaders" (concat ($get.httpHeaders | default list) .) }}
{{- end }}
{{- end }}
{{- end }}
{{- toYaml $probe }}
{{- end }}

{{/*
imagePullSecrets, then global.imagePullSecrets (given as names or as {name}
objects, as umbrella charts pass them), as a LocalObjectReference list.
*/}}
{{- define "budget-exporter.imagePullSecrets" -}}
{{- $secrets := list }}
{{- range concat .Values.imagePullSecrets ((.Values.global).imagePullSecrets | default list) }}
{{- $secrets = append $secrets (ternary (dict "name" .) . (kindIs "string" .)) }}
{{- end }}
{{- with $secrets }}
{{- toYaml . }}
{{- end }}
{{- end }}
