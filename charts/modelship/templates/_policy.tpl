{{/*
GENERATED from modelship.api.policy by hack/sync-chart-crds (python -m modelship.api.policy --helm):
do not edit. tests/chart/test_policy.py fails when this file and the table differ.
*/}}
{{- define "modelship.policy.variables" -}}
- name: allowedImagePrefixes
  expression: {{ .Values.policy.allowedImagePrefixes | toJson | quote }}
- name: allowedRepositoryPrefixes
  expression: {{ .Values.policy.allowedRepositoryPrefixes | toJson | quote }}
- name: allowServiceAccounts
  expression: {{ .Values.policy.allowServiceAccounts | toJson | quote }}
- name: allowCode
  expression: {{ .Values.policy.allowCode | toJson | quote }}
- name: allowTolerations
  expression: {{ .Values.policy.allowTolerations | toJson | quote }}
- name: allowNodeSelectors
  expression: {{ .Values.policy.allowNodeSelectors | toJson | quote }}
- name: allowCredentialSecrets
  expression: {{ .Values.policy.allowCredentialSecrets | toJson | quote }}
- name: allowCrossNamespaceGateways
  expression: {{ .Values.policy.allowCrossNamespaceGateways | toJson | quote }}
- name: allowedBuildEngines
  expression: {{ .Values.policy.allowedBuildEngines | toJson | quote }}
{{- end }}

{{- define "modelship.policy.validations" -}}
- expression: "!(has(object.spec.optimization) && has(object.spec.optimization.job) && has(object.spec.optimization.job.image)) || variables.allowedImagePrefixes.exists(p, object.spec.optimization.job.image.startsWith(p))"
  message: "spec.optimization.job.image: the optimization Job's image must start with one of the platform's allowed image prefixes (policy.allowedImagePrefixes)"
  reason: Forbidden
- expression: "!(has(object.spec.build) && has(object.spec.build.job) && has(object.spec.build.job.image)) || variables.allowedImagePrefixes.exists(p, object.spec.build.job.image.startsWith(p))"
  message: "spec.build.job.image: the build Job's image must start with one of the platform's allowed image prefixes (policy.allowedImagePrefixes)"
  reason: Forbidden
- expression: "!(has(object.spec.build) && has(object.spec.build.baseImage)) || variables.allowedImagePrefixes.exists(p, object.spec.build.baseImage.startsWith(p))"
  message: "spec.build.baseImage: the base image of the build must start with one of the platform's allowed image prefixes (policy.allowedImagePrefixes)"
  reason: Forbidden
- expression: "!(has(object.spec.serving) && has(object.spec.serving.image)) || variables.allowedImagePrefixes.exists(p, object.spec.serving.image.startsWith(p))"
  message: "spec.serving.image: the serving image must start with one of the platform's allowed image prefixes (policy.allowedImagePrefixes)"
  reason: Forbidden
- expression: "!(has(object.spec.build) && has(object.spec.build.repository)) || size(variables.allowedRepositoryPrefixes) == 0 || variables.allowedRepositoryPrefixes.exists(p, object.spec.build.repository.startsWith(p.replace('{namespace}', request.namespace)))"
  message: "spec.build.repository: the repository the build pushes to must start with one of the platform's allowed repository prefixes (policy.allowedRepositoryPrefixes)"
  reason: Forbidden
- expression: "!(has(object.spec.build) && has(object.spec.build.engine)) || object.spec.build.engine in variables.allowedBuildEngines"
  message: "spec.build.engine: the build engine must be one of the platform's policy.allowedBuildEngines"
  reason: Forbidden
- expression: "!(has(object.spec.model) && has(object.spec.model.allowCode)) || variables.allowCode || !object.spec.model.allowCode"
  message: "spec.model.allowCode: running the model's or a custom metric's Python code is not allowed by the platform's policy (policy.allowCode)"
  reason: Forbidden
- expression: "!(has(object.spec.model) && has(object.spec.model.credentials) && has(object.spec.model.credentials.serviceAccountName)) || variables.allowServiceAccounts || !true"
  message: "spec.model.credentials.serviceAccountName: a ServiceAccount is not allowed by the platform's policy (policy.allowServiceAccounts)"
  reason: Forbidden
- expression: "!(has(object.spec.serving) && has(object.spec.serving.serviceAccountName)) || variables.allowServiceAccounts || !true"
  message: "spec.serving.serviceAccountName: a ServiceAccount is not allowed by the platform's policy (policy.allowServiceAccounts)"
  reason: Forbidden
- expression: "!(has(object.spec.optimization) && has(object.spec.optimization.job) && has(object.spec.optimization.job.tolerations)) || variables.allowTolerations || !(size(object.spec.optimization.job.tolerations) > 0)"
  message: "spec.optimization.job.tolerations: a toleration is not allowed by the platform's policy (policy.allowTolerations)"
  reason: Forbidden
- expression: "!(has(object.spec.build) && has(object.spec.build.job) && has(object.spec.build.job.tolerations)) || variables.allowTolerations || !(size(object.spec.build.job.tolerations) > 0)"
  message: "spec.build.job.tolerations: a toleration is not allowed by the platform's policy (policy.allowTolerations)"
  reason: Forbidden
- expression: "!(has(object.spec.serving) && has(object.spec.serving.hardware) && has(object.spec.serving.hardware.tolerations)) || variables.allowTolerations || !(size(object.spec.serving.hardware.tolerations) > 0)"
  message: "spec.serving.hardware.tolerations: a toleration is not allowed by the platform's policy (policy.allowTolerations)"
  reason: Forbidden
- expression: "!(has(object.spec.optimization) && has(object.spec.optimization.job) && has(object.spec.optimization.job.nodeSelector)) || variables.allowNodeSelectors || !(size(object.spec.optimization.job.nodeSelector) > 0)"
  message: "spec.optimization.job.nodeSelector: a node selector is not allowed by the platform's policy (policy.allowNodeSelectors)"
  reason: Forbidden
- expression: "!(has(object.spec.build) && has(object.spec.build.job) && has(object.spec.build.job.nodeSelector)) || variables.allowNodeSelectors || !(size(object.spec.build.job.nodeSelector) > 0)"
  message: "spec.build.job.nodeSelector: a node selector is not allowed by the platform's policy (policy.allowNodeSelectors)"
  reason: Forbidden
- expression: "!(has(object.spec.serving) && has(object.spec.serving.hardware) && has(object.spec.serving.hardware.nodeSelector)) || variables.allowNodeSelectors || !(size(object.spec.serving.hardware.nodeSelector) > 0)"
  message: "spec.serving.hardware.nodeSelector: a node selector is not allowed by the platform's policy (policy.allowNodeSelectors)"
  reason: Forbidden
- expression: "!(has(object.spec.model) && has(object.spec.model.credentials) && has(object.spec.model.credentials.secretRef)) || variables.allowCredentialSecrets || !true"
  message: "spec.model.credentials.secretRef: a credentials Secret is not allowed by the platform's policy (policy.allowCredentialSecrets)"
  reason: Forbidden
- expression: "!(has(object.spec.optimization) && has(object.spec.optimization.data) && has(object.spec.optimization.data.calibration) && has(object.spec.optimization.data.calibration.credentials) && has(object.spec.optimization.data.calibration.credentials.secretRef)) || variables.allowCredentialSecrets || !true"
  message: "spec.optimization.data.calibration.credentials.secretRef: a credentials Secret is not allowed by the platform's policy (policy.allowCredentialSecrets)"
  reason: Forbidden
- expression: "!(has(object.spec.optimization) && has(object.spec.optimization.data) && has(object.spec.optimization.data.evaluation) && has(object.spec.optimization.data.evaluation.credentials) && has(object.spec.optimization.data.evaluation.credentials.secretRef)) || variables.allowCredentialSecrets || !true"
  message: "spec.optimization.data.evaluation.credentials.secretRef: a credentials Secret is not allowed by the platform's policy (policy.allowCredentialSecrets)"
  reason: Forbidden
- expression: "!(has(object.spec.optimization) && has(object.spec.optimization.data) && has(object.spec.optimization.data.fineTune) && has(object.spec.optimization.data.fineTune.credentials) && has(object.spec.optimization.data.fineTune.credentials.secretRef)) || variables.allowCredentialSecrets || !true"
  message: "spec.optimization.data.fineTune.credentials.secretRef: a credentials Secret is not allowed by the platform's policy (policy.allowCredentialSecrets)"
  reason: Forbidden
- expression: "!(has(object.spec.build) && has(object.spec.build.pushSecretRef)) || variables.allowCredentialSecrets || !true"
  message: "spec.build.pushSecretRef: a credentials Secret is not allowed by the platform's policy (policy.allowCredentialSecrets)"
  reason: Forbidden
- expression: "!(has(object.spec.serving) && has(object.spec.serving.rollout) && has(object.spec.serving.rollout.canary) && has(object.spec.serving.rollout.canary.trafficRouting) && has(object.spec.serving.rollout.canary.trafficRouting.gatewayAPI) && has(object.spec.serving.rollout.canary.trafficRouting.gatewayAPI.parentRefs)) || variables.allowCrossNamespaceGateways || object.spec.serving.rollout.canary.trafficRouting.gatewayAPI.parentRefs.all(r, !has(r.namespace) || r.namespace == request.namespace)"
  message: "spec.serving.rollout.canary.trafficRouting.gatewayAPI.parentRefs: a Gateway in another namespace is not allowed by the platform's policy (policy.allowCrossNamespaceGateways); leave namespace unset or name the ModelDeployment's"
  reason: Forbidden
{{- end }}
