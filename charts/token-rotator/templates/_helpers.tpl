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
Name of the leader-election Lease (in the release namespace).
*/}}
{{- define "token-rotator.leaseName" -}}
{{- default (include "token-rotator.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/*
The operator Deployments to render, as YAML `{instances: [...]}` (read it with fromYaml):
one for the release when `shards` is empty, else one per shard. Each instance has
  name            the Deployment's (and PodDisruptionBudget's) name
  shard           the shard's name, "" without shards
  selector        the --selector value
  replicaCount    the shard's replicaCount, else replicaCount
  resources       the shard's resources, else resources
  extraArgs       extraArgs, then the shard's extraArgs
  leaderElection  leaderElection.enabled, or more than one replica (several pods must never
                  reconcile at once)
  leaseName       leaderElection.leaseName (default: the full name), plus "-<shard>"
  pdb             podDisruptionBudget.enabled, or when null more than one replica
Fails, naming the value and the fix, on a shard without a valid unique name or without a
selector of its own, and on `selector` set together with `shards`.
*/}}
{{- define "token-rotator.instances" -}}
{{- $fullname := include "token-rotator.fullname" . }}
{{- $leaseName := include "token-rotator.leaseName" . }}
{{- $shards := .Values.shards | default list }}
{{- if and $shards .Values.selector }}
{{- fail (printf "selector (%q) and shards cannot be used together: every shard has its own selector. Set selector to \"\" and put the label selector in each shards[].selector (or remove shards for one unsharded Deployment)" .Values.selector) }}
{{- end }}
{{- $entries := list }}
{{- if $shards }}
{{- $entries = $shards }}
{{- else }}
{{- $entries = list (dict "name" "" "selector" .Values.selector) }}
{{- end }}
{{- $names := dict }}
{{- $selectors := dict }}
{{- $instances := list }}
{{- range $i, $shard := $entries }}
{{- $name := $shard.name | default "" | toString }}
{{- $selector := $shard.selector | default "" | toString }}
{{- if $shards }}
{{- if not (and (regexMatch "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$" $name) (le (len $name) 63)) }}
{{- fail (printf "shards[%d].name %q is not a DNS label: use 1 to 63 lower-case letters, digits and '-', starting and ending with a letter or digit (it names the Deployment <fullname>-<name> and the Lease <leaseName>-<name>)" $i $name) }}
{{- end }}
{{- if hasKey $names $name }}
{{- fail (printf "shards[%d].name %q is also the name of shards[%d]: give every shard a unique name (it names the shard's Deployment and Lease)" $i $name (get $names $name)) }}
{{- end }}
{{- $_ := set $names $name $i }}
{{- if not (trim $selector) }}
{{- fail (printf "shards[%d].selector is empty (shard %q): set a label selector such as shard=%s; a shard without one would reconcile every ProviderCredential, overlapping the other shards" $i $name $name) }}
{{- end }}
{{- if hasKey $selectors $selector }}
{{- fail (printf "shards[%d].selector %q is also the selector of shards[%d]: shards must select disjoint sets of ProviderCredentials (two shards reconciling one would both rotate its tokens)" $i $selector (get $selectors $selector)) }}
{{- end }}
{{- $_ := set $selectors $selector $i }}
{{- end }}
{{- $replicas := int (hasKey $shard "replicaCount" | ternary $shard.replicaCount $.Values.replicaCount) }}
{{- $pdb := $.Values.podDisruptionBudget.enabled }}
{{- $instances = append $instances (dict
  "name" (ternary (printf "%s-%s" $fullname $name) $fullname (ne $name ""))
  "shard" $name
  "selector" $selector
  "replicaCount" $replicas
  "resources" (hasKey $shard "resources" | ternary $shard.resources $.Values.resources)
  "extraArgs" (concat ($.Values.extraArgs | default list) ($shard.extraArgs | default list))
  "leaderElection" (or $.Values.leaderElection.enabled (gt $replicas 1))
  "leaseName" (ternary (printf "%s-%s" $leaseName $name) $leaseName (ne $name ""))
  "pdb" (ternary $pdb (gt $replicas 1) (kindIs "bool" $pdb))
) }}
{{- end }}
{{- toYaml (dict "instances" $instances) }}
{{- end }}

{{/*
Labels of one instance's objects (given as dict "root" $ "instance" $instance): the release's
labels plus, for a shard, tokenrotator.dev/shard.
*/}}
{{- define "token-rotator.instanceLabels" -}}
{{ include "token-rotator.labels" .root }}
{{- with .instance.shard }}
tokenrotator.dev/shard: {{ . | quote }}
{{- end }}
{{- end }}

{{/*
Labels that select one instance's pods: the release's selector labels plus, for a shard,
tokenrotator.dev/shard, so that the Deployments of two shards never select each other's pods.
*/}}
{{- define "token-rotator.instanceSelectorLabels" -}}
{{ include "token-rotator.selectorLabels" .root }}
{{- with .instance.shard }}
tokenrotator.dev/shard: {{ . | quote }}
{{- end }}
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
  - secrets: read credentials (label-filtered), write target/state Secrets, and delete a state
    Secret left with nothing to hold (a resource without a refresh token needs none) or a copy
    no longer wanted; the admission policy limits writes and deletes to Secrets the operator
    manages. Owned Secrets are otherwise garbage-collected through their ownerReferences.
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
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
# spec.credentials.serviceAccount: the ServiceAccount's consent (its opt-in label and its
# owner's pins, metadata only) and one token minted per token request. The operator mints
# only for ServiceAccounts that opted in, never default, never for the API audience.
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["get"]
{{- if .Values.serviceAccountTokens.clusterWide }}
- apiGroups: [""]
  resources: ["serviceaccounts/token"]
  verbs: ["create"]
{{- end }}
{{- if .Values.rolloutRestarts.enabled }}
# spec.rollout: read and restart the workloads that consent (annotation tokenrotator.dev/restart-on).
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets", "daemonsets"]
  verbs: ["get", "patch"]
{{- end }}
{{- if .Values.crossNamespaceDelivery.enabled }}
# spec.delivery: which namespaces consent (TokenDeliveryGrants) and their labels, and the
# finalizer that removes the copies when a ProviderCredential goes.
- apiGroups: ["tokenrotator.dev"]
  resources: ["tokendeliverygrants"]
  verbs: ["list", "watch"]
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
- apiGroups: ["tokenrotator.dev"]
  resources: ["providercredentials"]
  verbs: ["patch"]
{{- end }}
{{- end }}

{{/*
Seconds in a Prometheus duration of whole units (90s, 15m, 1h30m, 1d; values.schema.json
checks the form), for comparisons with time() in the alert rules.
*/}}
{{- define "token-rotator.durationSeconds" -}}
{{- $units := dict "s" 1 "m" 60 "h" 3600 "d" 86400 "w" 604800 }}
{{- if not (regexMatch "^([0-9]+[smhdw])+$" (toString .)) }}
{{- fail (printf "%q is not a duration such as 90s, 15m or 1h30m" (toString .)) }}
{{- end }}
{{- $total := 0 }}
{{- range regexFindAll "[0-9]+[smhdw]" (toString .) -1 }}
{{- $total = add $total (mul (regexFind "^[0-9]+" . | atoi) (get $units (regexFind "[smhdw]$" .))) }}
{{- end }}
{{- $total }}
{{- end }}

{{/*
A PromQL label-matcher list from the given matchers (empty ones dropped) and
prometheusRule.selector: `{a="1",b!="2"}`, or nothing when there are none. Called with
dict "root" $ "matchers" (list ...).
*/}}
{{- define "token-rotator.ruleMatchers" -}}
{{- $matchers := list }}
{{- range append .matchers .root.Values.prometheusRule.selector }}
{{- if trim . }}
{{- $matchers = append $matchers (trim .) }}
{{- end }}
{{- end }}
{{- with $matchers }}{{ printf "{%s}" (join "," .) }}{{ end }}
{{- end }}

{{/*
One CRD from a file of the chart (a byte-for-byte copy of the repository's crds/, generated by
`token-rotator crd`), with the chart's labels and annotations. Called with
dict "root" $ "file" "files/….yaml".
*/}}
{{- define "token-rotator.crd" -}}
{{- $root := .root }}
{{- $file := .file }}
{{- $raw := $root.Files.Get $file }}
{{- if not $raw }}
{{- fail (printf "%s is missing from the chart: run hack/sync-chart-crd.sh" $file) }}
{{- end }}
{{- $crd := fromYaml $raw }}
{{- if hasKey $crd "Error" }}
{{- fail (printf "%s does not parse: %s" $file $crd.Error) }}
{{- end }}
{{- if ne (toString $crd.kind) "CustomResourceDefinition" }}
{{- fail (printf "%s is not a single CustomResourceDefinition" $file) }}
{{- end }}
{{- $meta := $crd.metadata }}
{{- $annotations := $meta.annotations | default dict }}
{{- with $root.Values.crds.annotations }}
{{- $annotations = merge $annotations . }}
{{- end }}
{{- if $root.Values.crds.keep }}
{{- $_ := set $annotations "helm.sh/resource-policy" "keep" }}
{{- end }}
{{- if $annotations }}
{{- $_ := set $meta "annotations" $annotations }}
{{- end }}
{{- $labels := merge ($meta.labels | default dict) (include "token-rotator.labels" $root | fromYaml) }}
{{- $_ := set $meta "labels" $labels }}
{{ toYaml $crd }}
{{- end }}
