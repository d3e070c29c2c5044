{{/* Labels on every object; the same two select the pods. */}}
{{- define "castellan.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The keyring Secret and the leader Lease, as NAMESPACE/NAME. */}}
{{- define "castellan.caSecret" -}}
{{ .Values.namespace.name }}/{{ .Values.name }}-ca
{{- end }}
{{- define "castellan.leaderLease" -}}
{{ .Values.namespace.name }}/{{ .Values.name }}-leader
{{- end }}

{{/* The image, also used by the plug-in CA's init container. */}}
{{- define "castellan.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end }}
