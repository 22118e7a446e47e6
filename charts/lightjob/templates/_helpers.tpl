{{- define "lightjob.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "lightjob.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "lightjob.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "lightjob.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "lightjob.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The operator's rules: mirrors lightjob/operator/rbac.py (a test compares them). */}}
{{- define "lightjob.namespacedRules" -}}
- apiGroups: ["lightjob.dev"]
  resources: ["lightningjobs"]
  verbs: ["get", "list", "watch", "patch", "delete"]
- apiGroups: ["lightjob.dev"]
  resources: ["lightningjobs/status"]
  verbs: ["patch"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch", "create", "delete"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "create"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- with .Values.gangScheduling.provider }}
- apiGroups: [{{ ternary "scheduling.volcano.sh" "scheduling.x-k8s.io" (eq . "volcano") | quote }}]
  resources: ["podgroups"]
  verbs: ["get", "create", "patch"]
{{- end }}
{{- end -}}


{{- define "lightjob.leaseName" -}}
{{- default (include "lightjob.fullname" .) .Values.leaderElection.leaseName -}}
{{- end -}}

{{/* Values the schema cannot check alone; the operator would refuse them at start. */}}
{{- define "lightjob.checkValues" -}}
{{- $election := .Values.leaderElection -}}
{{- if and (gt (int .Values.replicaCount) 1) (not $election.enabled) -}}
{{- fail "replicaCount > 1 needs leaderElection.enabled=true: without it every replica reconciles every job" -}}
{{- end -}}
{{- if and $election.enabled (not (and (lt (float64 $election.retryPeriod) (float64 $election.renewDeadline)) (lt (float64 $election.renewDeadline) (float64 $election.leaseDuration)))) -}}
{{- fail (printf "leaderElection needs retryPeriod < renewDeadline < leaseDuration (got %v, %v, %v): the leader must give up before a standby may take over" $election.retryPeriod $election.renewDeadline $election.leaseDuration) -}}
{{- end -}}
{{- if and .Values.livenessProbe.enabled (eq (int .Values.livenessProbe.port) (int .Values.metrics.port)) -}}
{{- fail "livenessProbe.port must differ from metrics.port" -}}
{{- end -}}
{{- end -}}
