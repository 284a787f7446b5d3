{{/*
Chart name, overridable with nameOverride.
*/}}
{{- define "token-rotator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: <release>-<chart>, or <release> when it already contains the chart name.
*/}}
{{- define "token-rotator.fullname" -}}
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

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "token-rotator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels that select the operator pods. Never change these between versions: Deployment
selectors are immutable.
*/}}
{{- define "token-rotator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "token-rotator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Standard labels for every object of the release.
*/}}
{{- define "token-rotator.labels" -}}
helm.sh/chart: {{ include "token-rotator.chart" . }}
{{ include "token-rotator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: token-rotator
{{- end }}

{{/*
Name of the ServiceAccount the operator runs as.
*/}}
{{- define "token-rotator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "token-rotator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Image reference: repository:tag (tag defaults to appVersion), or repository@digest.
*/}}
{{- define "token-rotator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) }}
{{- end }}
{{- end }}

{{/*
"true" when the operator runs with --leader-election: explicitly enabled, or more than one
replica (several pods must never reconcile at once).
*/}}
{{- define "token-rotator.leaderElection" -}}
{{- if or .Values.leaderElection.enabled (gt (int .Values.replicaCount) 1) }}true{{ end }}
{{- end }}

{{/*
Name of the leader-election Lease (in the release namespace).
*/}}
{{- define "token-rotator.leaseName" -}}
{{- default (include "token-rotator.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/*
"true" when the PodDisruptionBudget is rendered: podDisruptionBudget.enabled true, or unset
(null) with more than one replica.
*/}}
{{- define "token-rotator.pdbEnabled" -}}
{{- $enabled := .Values.podDisruptionBudget.enabled }}
{{- if kindIs "bool" $enabled }}
{{- if $enabled }}true{{ end }}
{{- else if gt (int .Values.replicaCount) 1 }}true{{ end }}
{{- end }}

{{/*
The watched namespaces, de-duplicated, in the given order.
*/}}
{{- define "token-rotator.watchNamespaces" -}}
{{- range $i, $ns := uniq .Values.watchNamespaces }}
{{ $ns }}
{{- end }}
{{- end }}

{{/*
RBAC rules for the namespaced resources the operator reconciles. Used by the ClusterRole
(cluster-wide) or by one Role per watched namespace.
  - providercredentials: list and watch (the controller reads from its cache).
  - providercredentials/status: report status (patch).
  - providercredentials/finalizers: update, required by the OwnerReferencesPermissionEnforcement
    admission plugin because owned Secrets carry ownerReferences with blockOwnerDeletion.
  - secrets: read credentials (label-filtered) and write target/state Secrets. No delete:
    owned Secrets are garbage-collected through their ownerReferences.
  - events.k8s.io events: record Events.
*/}}
{{- define "token-rotator.rules" -}}
- apiGroups: ["tokenrotator.dev"]
  resources: ["providercredentials"]
  verbs: ["list", "watch"]
- apiGroups: ["tokenrotator.dev"]
  resources: ["providercredentials/status"]
  verbs: ["patch"]
- apiGroups: ["tokenrotator.dev"]
  resources: ["providercredentials/finalizers"]
  verbs: ["update"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "update", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
