{{/*
Names, labels and shared values of the elastic-spawner chart.
*/}}

{{- define "elastic-spawner.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Resource name prefix: fullnameOverride, else the release name when it contains the chart name,
else <release>-<chart>.
*/}}
{{- define "elastic-spawner.fullname" -}}
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

{{/* Cluster-scoped objects (ClusterRole, ClusterRoleBinding) also carry the namespace. */}}
{{- define "elastic-spawner.clusterName" -}}
{{- printf "%s-%s" .Release.Namespace (include "elastic-spawner.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "elastic-spawner.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels; call with (dict "root" $ "component" "migrator"). */}}
{{- define "elastic-spawner.selectorLabels" -}}
app.kubernetes.io/name: {{ include "elastic-spawner.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end }}

{{/* Common labels; call with (dict "root" $ "component" "migrator") or (dict "root" $). */}}
{{- define "elastic-spawner.labels" -}}
helm.sh/chart: {{ include "elastic-spawner.chart" .root }}
{{ include "elastic-spawner.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: elastic-spawner
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The Secret with the S3 settings and the checkpoint signing key. */}}
{{- define "elastic-spawner.s3SecretName" -}}
{{- if .Values.s3.existingSecret }}
{{- .Values.s3.existingSecret }}
{{- else }}
{{- printf "%s-s3" (include "elastic-spawner.fullname" .) }}
{{- end }}
{{- end }}

{{/* The Secret with the hub secret from which each server's checkpoint key is derived. */}}
{{- define "elastic-spawner.signingSecretName" -}}
{{- if .Values.checkpointSigning.existingSecret }}
{{- .Values.checkpointSigning.existingSecret }}
{{- else }}
{{- printf "%s-signing" (include "elastic-spawner.fullname" .) }}
{{- end }}
{{- end }}

{{- define "elastic-spawner.s3CaName" -}}
{{- printf "%s-s3-ca" (include "elastic-spawner.fullname" .) }}
{{- end }}

{{- define "elastic-spawner.devStoreName" -}}
{{- printf "%s-store" (include "elastic-spawner.fullname" .) }}
{{- end }}

{{- define "elastic-spawner.migratorName" -}}
{{- printf "%s-migrator" (include "elastic-spawner.fullname" .) }}
{{- end }}

{{/*
The ServiceAccount the migrator's code runs as: its own in mode "deployment", the hub's in mode
"managed" (z2jh runs managed services as subprocesses of the hub).
*/}}
{{- define "elastic-spawner.migratorServiceAccountName" -}}
{{- if eq .Values.migrator.mode "managed" }}
{{- .Values.jupyterhub.hubServiceAccountName }}
{{- else if .Values.migrator.serviceAccount.name }}
{{- .Values.migrator.serviceAccount.name }}
{{- else }}
{{- include "elastic-spawner.migratorName" . }}
{{- end }}
{{- end }}

{{/* The S3 endpoint: explicit, else the development store's Service, else AWS (empty). */}}
{{- define "elastic-spawner.s3Endpoint" -}}
{{- if .Values.s3.endpoint }}
{{- .Values.s3.endpoint }}
{{- else if .Values.devStore.enabled }}
{{- printf "http://%s:%d" (include "elastic-spawner.devStoreName" .) (int .Values.devStore.port) }}
{{- end }}
{{- end }}

{{/* The hub's ElasticSpawnerMixin.store_url template for this bucket and prefix. */}}
{{- define "elastic-spawner.storeUrl" -}}
{{- $prefix := trimAll "/" .Values.s3.prefix }}
{{- if $prefix }}
{{- printf "s3://%s/%s/{username}/{servername}" .Values.s3.bucket $prefix }}
{{- else }}
{{- printf "s3://%s/{username}/{servername}" .Values.s3.bucket }}
{{- end }}
{{- end }}

{{/*
A Secret value: the configured one, else the one already stored in this release's Secret (kept
across upgrades), else a fresh random one. Call with (list $ "secret-name" "key" .Values.x.y length).
*/}}
{{- define "elastic-spawner.secretValue" -}}
{{- $root := index . 0 }}
{{- $name := index . 1 }}
{{- $key := index . 2 }}
{{- $given := index . 3 }}
{{- $length := index . 4 }}
{{- if $given }}
{{- $given }}
{{- else }}
{{- $existing := lookup "v1" "Secret" $root.Release.Namespace $name }}
{{- if and $existing $existing.data (hasKey $existing.data $key) }}
{{- index $existing.data $key | b64dec }}
{{- else }}
{{- randAlphaNum $length }}
{{- end }}
{{- end }}
{{- end }}

{{/* image reference */}}
{{- define "elastic-spawner.image" -}}
{{- printf "%s:%s" .name (toString .tag) }}
{{- end }}

{{/*
Env var -> key in the S3 Secret. Same mapping as ElasticKubeSpawner.store_secret_keys' default
(elastic_spawner/kube.py DEFAULT_SECRET_KEYS), so the spawner needs only store_secret_name.
*/}}
{{- define "elastic-spawner.secretKeys" -}}
ELASTIC_S3_ENDPOINT: endpoint
ELASTIC_S3_ACCESS_KEY: access-key
ELASTIC_S3_SECRET_KEY: secret-key
ELASTIC_S3_SESSION_TOKEN: session-token
ELASTIC_S3_REGION: region
{{- end }}

{{/*
env entries for the S3 settings, read from the Secret (never inlined). optional: a Secret
without, say, a session token still starts the pod (as the spawner does for user pods).
*/}}
{{- define "elastic-spawner.s3Env" -}}
{{- $secret := include "elastic-spawner.s3SecretName" . }}
{{- range $env, $key := include "elastic-spawner.secretKeys" . | fromYaml }}
- name: {{ $env }}
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $key }}
      optional: true
{{- end }}
{{- if .Values.s3.caBundle }}
- name: ELASTIC_S3_CA_BUNDLE
  value: /etc/elastic-spawner/s3-ca/ca.crt
{{- end }}
{{- end }}

{{/*
The z2jh values this release needs (printed by NOTES.txt; helm/z2jh-values.yaml is the same
for release "elastic-spawner" with default values, plus comments).
*/}}
{{- define "elastic-spawner.z2jhValues" -}}
{{- $secret := include "elastic-spawner.s3SecretName" . -}}
{{- $svc := .Values.migrator.serviceName -}}
hub:
  image:
    name: {{ .Values.migrator.image.name }}
    tag: {{ .Values.migrator.image.tag | toString | quote }}
  config:
    JupyterHub:
      spawner_class: elastic-kube
      custom_scopes:
        "custom:elastic:read":
          description: Read users' server checkpoints and migration history (elastic-spawner service).
        "custom:elastic:migrate":
          description: Migrate and resize users' servers and delete their checkpoints (elastic-spawner service).
          subscopes:
            - "custom:elastic:read"
    ElasticKubeSpawner:
      store_url: {{ include "elastic-spawner.storeUrl" . | quote }}
      store_secret_name: {{ $secret }}
  extraEnv:
    {{- range $env, $key := include "elastic-spawner.secretKeys" . | fromYaml }}
    {{ $env }}:
      valueFrom:
        secretKeyRef:
          name: {{ $secret }}
          key: {{ $key }}
          optional: true
    {{- end }}
    {{- if .Values.checkpointSigning.enabled }}
    ELASTIC_HUB_SECRET:
      valueFrom:
        secretKeyRef:
          name: {{ include "elastic-spawner.signingSecretName" . }}
          key: hub-secret
          optional: true
    {{- end }}
  {{- if .Values.migrator.enabled }}
  services:
    {{ $svc }}:
      {{- if eq .Values.migrator.mode "managed" }}
      url: http://hub:{{ .Values.migrator.port }}
      command:
        {{- toYaml .Values.migrator.command | nindent 8 }}
        - --ElasticService.service_url=http://0.0.0.0:{{ .Values.migrator.port }}
        - --ElasticService.proxy_url={{ .Values.jupyterhub.proxyUrl }}
        - --ElasticService.store_url={{ include "elastic-spawner.storeUrl" . }}
      {{- else }}
      url: http://{{ include "elastic-spawner.migratorName" . }}:{{ .Values.migrator.port }}
      {{- end }}
      oauth_client_allowed_scopes:
        - "custom:elastic:migrate"
        - "custom:elastic:read"
  loadRoles:
    elastic-service:
      description: The elastic-spawner migrator service's own token.
      services:
        - {{ $svc }}
      scopes:
        - list:users
        - read:users
        - admin:servers
        - access:servers
    elastic-operators:
      description: Who may migrate and resize servers (add admins here).
      scopes:
        - "custom:elastic:migrate"
        - "access:services!service={{ $svc }}"
      users: []
  {{- if eq .Values.migrator.mode "managed" }}
  service:
    extraPorts:
      - name: elastic
        port: {{ .Values.migrator.port }}
        targetPort: {{ .Values.migrator.port }}
  networkPolicy:
    ingress:
      - from:
          - podSelector:
              matchLabels:
                component: proxy
        ports:
          - port: {{ .Values.migrator.port }}
  {{- end }}
  {{- end }}
singleuser:
  image:
    name: elastic-spawner/singleuser
    tag: {{ .Chart.AppVersion | quote }}
{{- if and .Values.migrator.enabled (eq .Values.migrator.mode "deployment") }}
proxy:
  chp:
    networkPolicy:
      egress:
        - to:
            - podSelector:
                matchLabels:
                  {{- include "elastic-spawner.selectorLabels" (dict "root" . "component" "migrator") | nindent 18 }}
          ports:
            - port: {{ .Values.migrator.port }}
              protocol: TCP
{{- end }}
{{- end }}
