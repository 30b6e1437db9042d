{{/* Names ------------------------------------------------------------------------------------ */}}

{{- define "mattermost-rtcd.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mattermost-rtcd.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The RtcdCluster, and so its API Service (<name>) and headless Service (<name>-hosts). */}}
{{- define "mattermost-rtcd.clusterName" -}}
{{- $n := default (include "mattermost-rtcd.fullname" .) .Values.rtcdCluster.name -}}
{{- if or (gt (len $n) 57) (not (regexMatch "^[a-z]([-a-z0-9]*[a-z0-9])?$" $n)) -}}
{{- fail (printf "rtcdCluster.name %q: must be a DNS-1035 label of at most 57 characters (the operator names Services <name> and <name>-hosts); set rtcdCluster.name or a shorter release name" $n) -}}
{{- end -}}
{{- $n -}}
{{- end -}}

{{- define "mattermost-rtcd.operatorName" -}}
{{- default (printf "%s-operator" (include "mattermost-rtcd.fullname" .) | trunc 63 | trimSuffix "-") .Values.operator.name -}}
{{- end -}}

{{- define "mattermost-rtcd.operatorServiceAccount" -}}
{{- if .Values.operator.serviceAccount.create -}}
{{- default (include "mattermost-rtcd.operatorName" .) .Values.operator.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.operator.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "mattermost-rtcd.cleanupName" -}}
{{- printf "%s-cleanup" (include "mattermost-rtcd.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels ----------------------------------------------------------------------------------- */}}

{{- define "mattermost-rtcd.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "mattermost-rtcd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: rtcd-rs
{{- end -}}

{{- define "mattermost-rtcd.operatorSelector" -}}
app.kubernetes.io/name: {{ include "mattermost-rtcd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* The spec.clients entry of the Calls plugin's client (pluginClient), as JSON. */}}
{{- define "mattermost-rtcd.pluginClient" -}}
{{- $pc := .Values.pluginClient | default dict -}}
{{- $e := dict "clientIdKey" (default "clientID" $pc.clientIdKey) "authKeyKey" (default "authKey" $pc.authKeyKey) -}}
{{- if $pc.existingSecret -}}
{{- $_ := set $e "secretName" $pc.existingSecret -}}
{{- else -}}
{{- $_ := set $e "secretName" (printf "%s-plugin-client" (include "mattermost-rtcd.clusterName" .)) -}}
{{- $_ := set $e "generate" true -}}
{{- $_ := set $e "clientId" (default "mattermost" $pc.clientId) -}}
{{- end -}}
{{- toJson $e -}}
{{- end -}}

{{/* Values -> strings -------------------------------------------------------------------------
Helm reads numbers in values files as float64, so plain toString would turn 16777216 into
"1.6777216e+07": whole numbers are printed as integers. */}}
{{- define "mattermost-rtcd.str" -}}
{{- if and (kindIs "float64" .) (eq (floor .) .) (lt . 1e15) (gt . -1e15) -}}
{{- printf "%d" (int64 .) -}}
{{- else -}}
{{- toString . -}}
{{- end -}}
{{- end -}}

{{/* Replaces map $parent[$key] by a copy whose values are strings (labels, annotations, ...).
Called as: include "mattermost-rtcd.strmap" (list $parent "key") */}}
{{- define "mattermost-rtcd.strmap" -}}
{{- $parent := index . 0 -}}
{{- $key := index . 1 -}}
{{- if and $parent (kindIs "map" $parent) (hasKey $parent $key) (kindIs "map" (get $parent $key)) -}}
{{- $out := dict -}}
{{- range $k, $v := get $parent $key -}}
{{- $_ := set $out $k (include "mattermost-rtcd.str" $v) -}}
{{- end -}}
{{- $_ := set $parent $key $out -}}
{{- end -}}
{{- end -}}

{{/* The RtcdCluster spec, as JSON ---------------------------------------------------------------
The upstream-style keys give a base; rtcdCluster.spec wins field by field (maps are merged,
lists replaced), except config.extraEnv, which is joined (an entry of rtcdCluster.spec wins over
one of the same name from configuration.environmentVariables / rtcd.ice.hostOverride). */}}
{{- define "mattermost-rtcd.spec" -}}
{{- $v := .Values -}}
{{- $base := dict -}}
{{- $img := $v.image | default dict -}}
{{- $tag := include "mattermost-rtcd.str" (default .Chart.AppVersion $img.tag) -}}
{{- $_ := set $base "image" (printf "%s:%s" (default "ghcr.io/rtcd-rs/rtcd" $img.repository) $tag) -}}
{{- with $img.pullPolicy }}{{ $_ := set $base "imagePullPolicy" . }}{{ end -}}
{{- with $v.imagePullSecrets }}{{ $_ := set $base "imagePullSecrets" . }}{{ end -}}
{{- with $v.resources }}{{ $_ := set $base "resources" . }}{{ end -}}
{{- with $v.nodeSelector }}{{ $_ := set $base "nodeSelector" . }}{{ end -}}
{{- if and (kindIs "slice" $v.tolerations) $v.tolerations }}{{ $_ := set $base "tolerations" $v.tolerations }}{{ end -}}
{{- with $v.affinity }}{{ $_ := set $base "affinity" . }}{{ end -}}
{{- $svc := $v.service | default dict -}}
{{- $config := dict -}}
{{- $rtc := dict -}}
{{- with $svc.APIport }}{{ $_ := set $config "apiPort" (int64 .) }}{{ end -}}
{{- with $svc.RTCport }}{{ $_ := set $rtc "udpPort" (int64 .) }}{{ $_ := set $rtc "tcpPort" (int64 .) }}{{ end -}}
{{- if $rtc }}{{ $_ := set $config "rtc" $rtc }}{{ end -}}
{{- if $config }}{{ $_ := set $base "config" $config }}{{ end -}}
{{- $cfg := $v.configuration | default dict -}}
{{- with $cfg.terminationGracePeriod }}{{ $_ := set $base "drain" (dict "terminationGracePeriodSeconds" (int64 .)) }}{{ end -}}
{{- $ann := dict -}}
{{- range $k, $a := ($svc.annotations | default dict) }}{{ $_ := set $ann $k (include "mattermost-rtcd.str" $a) }}{{ end -}}
{{- $svcType := default "ClusterIP" $svc.type -}}
{{- if eq $svcType "NodePort" -}}
{{- fail "service.type NodePort has no equivalent: each rtcd instance needs its media port reachable on one fixed address. Use ClusterIP (media on the nodes' own addresses; behind NAT see rtcdCluster.spec.iceHostOverride.portOverride) or LoadBalancer (one LoadBalancer Service per node)" -}}
{{- else if eq $svcType "LoadBalancer" -}}
{{- $media := dict "mode" "LoadBalancer" -}}
{{- if $ann }}{{ $_ := set $media "loadBalancer" (dict "annotations" $ann) }}{{ end -}}
{{- $_ := set $base "media" $media -}}
{{- else if $ann -}}
{{- $_ := set $base "api" (dict "annotations" $ann) -}}
{{- end -}}
{{- /* extraEnv from configuration.environmentVariables (quoted) and rtcd.ice.hostOverride */ -}}
{{- $hostOverride := dig "ice" "hostOverride" "" ($v.rtcd | default dict) -}}
{{- $env := list -}}
{{- range $k, $val := ($cfg.environmentVariables | default dict) -}}
{{- if not (and $hostOverride (eq $k "RTCD_RTC_ICEHOSTOVERRIDE")) -}}
{{- $env = append $env (dict "name" $k "value" (include "mattermost-rtcd.str" $val)) -}}
{{- end -}}
{{- end -}}
{{- with $hostOverride }}{{ $env = append $env (dict "name" "RTCD_RTC_ICEHOSTOVERRIDE" "value" (toString .)) }}{{ end -}}
{{- /* rtcdCluster.spec wins */ -}}
{{- $user := deepCopy ($v.rtcdCluster.spec | default dict) -}}
{{- $userEnv := dig "config" "extraEnv" list $user -}}
{{- $spec := merge $user $base -}}
{{- $names := list -}}
{{- range $userEnv }}{{ $names = append $names .name }}{{ end -}}
{{- $joined := list -}}
{{- range $env }}{{ if not (has .name $names) }}{{ $joined = append $joined . }}{{ end }}{{ end -}}
{{- $joined = concat $joined $userEnv -}}
{{- if $joined -}}
{{- if not (hasKey $spec "config") }}{{ $_ := set $spec "config" dict }}{{ end -}}
{{- $_ := set $spec.config "extraEnv" $joined -}}
{{- end -}}
{{- /* clients: the plugin's (pluginClient) first, then rtcdCluster.spec.clients (whose entry
for the same Secret wins) */ -}}
{{- $pc := $v.pluginClient | default dict -}}
{{- $userClients := dig "clients" list $user -}}
{{- $clients := list -}}
{{- if $pc.enabled -}}
{{- $plugin := include "mattermost-rtcd.pluginClient" . | fromJson -}}
{{- $taken := false -}}
{{- range $userClients }}{{ if eq .secretName $plugin.secretName }}{{ $taken = true }}{{ end }}{{ end -}}
{{- if not $taken }}{{ $clients = append $clients $plugin }}{{ end -}}
{{- end -}}
{{- $clients = concat $clients $userClients -}}
{{- if $clients }}{{ $_ := set $spec "clients" $clients }}{{ end -}}
{{- if and (hasKey $spec "media") (ne (dig "mode" "HostNetwork" $spec.media) "LoadBalancer") -}}
{{- $_ := unset $spec.media "loadBalancer" -}}
{{- end -}}
{{- /* string maps: accept numbers and booleans from --set */ -}}
{{- include "mattermost-rtcd.strmap" (list $spec "nodeSelector") -}}
{{- include "mattermost-rtcd.strmap" (list $spec.api "annotations") -}}
{{- include "mattermost-rtcd.strmap" (list (dig "loadBalancer" dict ($spec.media | default dict)) "annotations") -}}
{{- include "mattermost-rtcd.strmap" (list $spec.serviceMonitor "labels") -}}
{{- include "mattermost-rtcd.strmap" (list $spec.sysctls "values") -}}
{{- include "mattermost-rtcd.strmap" (list $spec.iceHostOverride "static") -}}
{{- toJson $spec -}}
{{- end -}}

{{/* Facts derived from the spec, for the Ingress, NOTES, the hooks. */}}
{{- define "mattermost-rtcd.apiPort" -}}
{{- $spec := fromJson (include "mattermost-rtcd.spec" .) -}}
{{- dig "config" "apiPort" 8045 $spec | int64 -}}
{{- end -}}

{{- define "mattermost-rtcd.selfRegistration" -}}
{{- $spec := fromJson (include "mattermost-rtcd.spec" .) -}}
{{- $on := dig "config" "allowSelfRegistration" false $spec -}}
{{- range (dig "config" "extraEnv" list $spec) -}}
{{- if eq .name "RTCD_API_SECURITY_ALLOWSELFREGISTRATION" -}}{{- $on = eq (lower (toString .value)) "true" -}}{{- end -}}
{{- end -}}
{{- if $on }}true{{ end -}}
{{- end -}}

{{- define "mattermost-rtcd.gracePeriod" -}}
{{- $spec := fromJson (include "mattermost-rtcd.spec" .) -}}
{{- dig "drain" "terminationGracePeriodSeconds" 3600 $spec | int64 -}}
{{- end -}}

{{/* Ingress rules: ingress.host (the set-up guide) + ingress.hosts (upstream), as JSON. */}}
{{- define "mattermost-rtcd.ingressRules" -}}
{{- $ing := .Values.ingress -}}
{{- $rules := list -}}
{{- with $ing.host }}{{ $rules = append $rules (dict "host" . "paths" (list "/")) }}{{ end -}}
{{- range $ing.hosts }}{{ $rules = append $rules (dict "host" .host "paths" (default (list "/") .paths)) }}{{ end -}}
{{- toJson $rules -}}
{{- end -}}

{{/* Warnings about accepted keys that have no meaning here (printed by NOTES). */}}
{{- define "mattermost-rtcd.warnings" -}}
{{- $v := .Values -}}
{{- $w := list -}}
{{- if hasKey $v "deploymentType" -}}
{{- $w = append $w (printf "deploymentType=%v is ignored: the operator runs one rtcd pod per eligible node (much like a DaemonSet) and rolls them one node at a time." $v.deploymentType) -}}
{{- end -}}
{{- $net := $v.networking | default dict -}}
{{- if and (hasKey $net "hostNetwork") (not $net.hostNetwork) -}}
{{- $w = append $w "networking.hostNetwork=false is ignored: rtcd pods always use the host network. For media through cloud load balancers set service.type=LoadBalancer." -}}
{{- end -}}
{{- if and (hasKey $net "useHostPort") (not $net.useHostPort) -}}
{{- $w = append $w "networking.useHostPort=false is ignored: with the host network the ports are the node's." -}}
{{- end -}}
{{- $cfg := $v.configuration | default dict -}}
{{- $why := dict
  "replicas" "the operator runs one pod per eligible node (choose nodes with nodeSelector/tolerations/affinity)"
  "maxUnavailable" "the operator rolls one node at a time; evictions are bounded by rtcdCluster.spec.podDisruptionBudget"
  "updateStrategy" "the operator rolls one node at a time, only while every other instance is ready"
  "livenessProbe" "the operator sets the probes (startup/liveness GET /version, readiness GET /api/v1/health)"
  "readinessProbe" "the operator sets the probes (startup/liveness GET /version, readiness GET /api/v1/health)"
  "extraVolumes" "rtcd pods have no extra volumes"
  "extraVolumeMounts" "rtcd pods have no extra volumes" -}}
{{- range $k := list "replicas" "maxUnavailable" "updateStrategy" "livenessProbe" "readinessProbe" "extraVolumes" "extraVolumeMounts" -}}
{{- if hasKey $cfg $k -}}
{{- $w = append $w (printf "configuration.%s is ignored: %s." $k (get $why $k)) -}}
{{- end -}}
{{- end -}}
{{- $svc := $v.service | default dict -}}
{{- if hasKey $svc "clusterIP" -}}
{{- $w = append $w (printf "service.clusterIP is ignored: the operator creates a ClusterIP API Service %s and a headless Service %s-hosts." (include "mattermost-rtcd.clusterName" .) (include "mattermost-rtcd.clusterName" .)) -}}
{{- end -}}
{{- if and (hasKey $svc "externalTrafficPolicy") (ne (toString $svc.externalTrafficPolicy) "Local") -}}
{{- $w = append $w "service.externalTrafficPolicy is ignored: media LoadBalancer Services always use Local." -}}
{{- end -}}
{{- if and $svc.annotations (ne (default "ClusterIP" $svc.type) "LoadBalancer") -}}
{{- $w = append $w "service.annotations are set on the API Services (spec.api.annotations), since service.type is not LoadBalancer; load-balancer annotations only take effect with service.type=LoadBalancer." -}}
{{- end -}}
{{- range $k := list "serviceAccount" "podAnnotations" "podSecurityContext" "securityContext" "dnsConfig" -}}
{{- if and (hasKey $v $k) (ne $k "serviceAccount") (get $v $k) -}}
{{- $w = append $w (printf "%s is ignored: the operator builds the rtcd pods (nonroot, read-only root filesystem, no service-account token)." $k) -}}
{{- end -}}
{{- end -}}
{{- $sa := $v.serviceAccount | default dict -}}
{{- if or $sa.name $sa.annotations -}}
{{- $w = append $w "serviceAccount.* is ignored: rtcd pods run without a service-account token; the operator's account is operator.serviceAccount." -}}
{{- end -}}
{{- if kindIs "map" $v.tolerations -}}{{- if $v.tolerations -}}
{{- $w = append $w "tolerations is a map; it must be a list of tolerations and was ignored." -}}
{{- end -}}{{- end -}}
{{- if contains "mattermost/rtcd" (toString (dig "repository" "" ($v.image | default dict))) -}}
{{- $w = append $w "image.repository is Mattermost's rtcd image: this chart runs rtcd-rs (ghcr.io/rtcd-rs/rtcd), whose pods drain through `rtcd --wait-idle`, which Mattermost's image lacks." -}}
{{- end -}}
{{- if dig "ice" "hostOverride" "" ($v.rtcd | default dict) -}}
{{- $w = append $w "rtcd.ice.hostOverride makes EVERY instance advertise the same address (as upstream). Leave it empty to let the operator advertise each node's own address (or use rtcdCluster.spec.iceHostOverride)." -}}
{{- end -}}
{{- $op := $v.operator | default dict -}}
{{- if and $op.enabled $op.watchNamespace $v.rtcdCluster.enabled (ne $op.watchNamespace .Release.Namespace) -}}
{{- $w = append $w (printf "operator.watchNamespace=%s: this release's RtcdCluster in namespace %s will not be reconciled by it." $op.watchNamespace .Release.Namespace) -}}
{{- end -}}
{{- toJson $w -}}
{{- end -}}
