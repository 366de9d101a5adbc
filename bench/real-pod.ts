import { createHash } from 'node:crypto';

/**
 * A Pod object as the API server serves it on EKS, field for field: what a Deployment's pod carries
 * once scheduled and running (about 6.5 KB of JSON), so that benchmarks pay what palisade pays on a
 * real cluster to receive, parse and forget the parts it does not use:
 *
 * - metadata: generateName, uid, resourceVersion, creationTimestamp, labels, annotations (the VPC CNI's
 *   pod-ips among them), the ReplicaSet owner reference, and managedFields from three managers
 *   (kube-controller-manager creating it, kubelet's status, the VPC CNI's annotation);
 * - spec: two containers with env, resources, probes, mounts and security context, the projected
 *   service-account token volume, the two default tolerations, scheduling fields;
 * - status: five conditions, host and pod addresses, start time, container statuses, QoS class.
 *
 * Deterministic: everything derives from the arguments.
 */

type Obj = Record<string, unknown>;

export interface RealPodSpec {
  readonly namespace: string;
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly nodeName: string;
  readonly nodeAddress: string;
  readonly ports: readonly { readonly name: string; readonly port: number; readonly protocol: 'TCP' | 'UDP' }[];
  /** null while pending. */
  readonly ip: string | null;
  readonly phase: 'Running' | 'Pending' | 'Succeeded';
  readonly hostNetwork: boolean;
  /** Seconds since an epoch, for timestamps. */
  readonly createdAt: number;
}

function hex(seed: string, length: number): string {
  return createHash('sha256').update(seed).digest('hex').slice(0, length);
}

function uid(seed: string): string {
  const h = hex(seed, 32);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

function time(seconds: number): string {
  return new Date(Date.UTC(2026, 10, 1) + seconds * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** managedFields' fieldsV1 for an object's keys, as the API server records them (maps as f:, lists by key). */
function fieldsOf(value: unknown, depth: number, listKey?: (item: Obj) => string): Obj {
  if (depth === 0) return {};
  if (Array.isArray(value)) {
    const out: Obj = {};
    value.forEach((item, i) => {
      if (item !== null && typeof item === 'object') out[listKey === undefined ? `i:${i}` : `k:${listKey(item as Obj)}`] = { '.': {}, ...fieldsOf(item, depth - 1) };
      else out[`v:${JSON.stringify(item)}`] = {};
    });
    return out;
  }
  if (value === null || typeof value !== 'object') return {};
  const out: Obj = {};
  for (const [key, child] of Object.entries(value as Obj)) {
    const byName = key === 'containers' || key === 'env' || key === 'volumes' || key === 'conditions' || key === 'ports';
    out[`f:${key}`] = fieldsOf(child, depth - 1, byName ? (item) => JSON.stringify(item['name'] !== undefined ? { name: item['name'] } : item['type'] !== undefined ? { type: item['type'] } : { containerPort: item['containerPort'] }) : undefined);
  }
  return out;
}

function container(name: string, image: string, ports: RealPodSpec['ports'], tokenVolume: string, spec: RealPodSpec): Obj {
  const http = ports.find((p) => p.protocol === 'TCP');
  const sidecar = ports.length === 0;
  return {
    name,
    image,
    imagePullPolicy: 'IfNotPresent',
    ...(ports.length === 0 ? {} : { ports: ports.map((p) => ({ name: p.name, containerPort: p.port, protocol: p.protocol })) }),
    env: [
      { name: 'POD_NAME', valueFrom: { fieldRef: { apiVersion: 'v1', fieldPath: 'metadata.name' } } },
      { name: 'POD_NAMESPACE', valueFrom: { fieldRef: { apiVersion: 'v1', fieldPath: 'metadata.namespace' } } },
      ...(sidecar ? [] : [
        { name: 'LOG_LEVEL', value: 'info' },
        { name: 'OTEL_EXPORTER_OTLP_ENDPOINT', value: `http://otel-collector.monitoring.svc.cluster.local:4317` },
      ]),
    ],
    resources: sidecar ? { requests: { cpu: '10m', memory: '32Mi' } } : { requests: { cpu: '100m', memory: '128Mi' }, limits: { memory: '512Mi' } },
    ...(http === undefined ? {} : {
      livenessProbe: { httpGet: { path: '/healthz', port: http.port, scheme: 'HTTP' }, initialDelaySeconds: 10, timeoutSeconds: 1, periodSeconds: 10, successThreshold: 1, failureThreshold: 3 },
      readinessProbe: { httpGet: { path: '/ready', port: http.port, scheme: 'HTTP' }, timeoutSeconds: 1, periodSeconds: 5, successThreshold: 1, failureThreshold: 3 },
    }),
    volumeMounts: [{ name: tokenVolume, readOnly: true, mountPath: '/var/run/secrets/kubernetes.io/serviceaccount' }],
    terminationMessagePath: '/dev/termination-log',
    terminationMessagePolicy: 'File',
    ...(sidecar ? {} : { securityContext: { allowPrivilegeEscalation: false, runAsNonRoot: true } }),
  };
}

export function realPodObject(spec: RealPodSpec): Obj {
  const hash = spec.labels['pod-template-hash'] ?? hex(spec.name, 10);
  const replicaSet = `${spec.labels['app'] ?? 'app'}-${hash}`;
  const tokenVolume = `kube-api-access-${hex(`${spec.namespace}/${spec.name}/token`, 5)}`;
  const image = `123456789012.dkr.ecr.us-east-1.amazonaws.com/${spec.labels['app'] ?? 'system'}:${spec.labels['version'] ?? 'v1'}`;
  const podSpec: Obj = {
    volumes: [{
      name: tokenVolume,
      projected: {
        sources: [
          { serviceAccountToken: { expirationSeconds: 3607, path: 'token' } },
          { configMap: { name: 'kube-root-ca.crt', items: [{ key: 'ca.crt', path: 'ca.crt' }] } },
          { downwardAPI: { items: [{ path: 'namespace', fieldRef: { apiVersion: 'v1', fieldPath: 'metadata.namespace' } }] } },
        ],
        defaultMode: 420,
      },
    }],
    containers: [
      container('main', image, spec.ports, tokenVolume, spec),
      container('envoy', 'public.ecr.aws/appmesh/aws-appmesh-envoy:v1.29.6.0-prod', [], tokenVolume, spec),
    ],
    restartPolicy: 'Always',
    terminationGracePeriodSeconds: 30,
    dnsPolicy: spec.hostNetwork ? 'ClusterFirstWithHostNet' : 'ClusterFirst',
    serviceAccountName: spec.labels['app'] ?? 'default',
    serviceAccount: spec.labels['app'] ?? 'default',
    nodeName: spec.nodeName,
    hostNetwork: spec.hostNetwork,
    securityContext: { fsGroup: 65534 },
    schedulerName: 'default-scheduler',
    tolerations: [
      { key: 'node.kubernetes.io/not-ready', operator: 'Exists', effect: 'NoExecute', tolerationSeconds: 300 },
      { key: 'node.kubernetes.io/unreachable', operator: 'Exists', effect: 'NoExecute', tolerationSeconds: 300 },
    ],
    priority: 0,
    enableServiceLinks: true,
    preemptionPolicy: 'PreemptLowerPriority',
  };
  const created = time(spec.createdAt);
  const started = time(spec.createdAt + 3);
  const running = spec.phase === 'Running';
  const conditions = [
    { type: 'PodReadyToStartContainers', status: running ? 'True' : 'False', lastProbeTime: null, lastTransitionTime: started },
    { type: 'Initialized', status: 'True', lastProbeTime: null, lastTransitionTime: created },
    { type: 'Ready', status: running ? 'True' : 'False', lastProbeTime: null, lastTransitionTime: time(spec.createdAt + 12) },
    { type: 'ContainersReady', status: running ? 'True' : 'False', lastProbeTime: null, lastTransitionTime: time(spec.createdAt + 12) },
    { type: 'PodScheduled', status: 'True', lastProbeTime: null, lastTransitionTime: created },
  ];
  const status: Obj = {
    phase: spec.phase,
    conditions,
    hostIP: spec.nodeAddress,
    hostIPs: [{ ip: spec.nodeAddress }],
    ...(spec.ip === null ? {} : { podIP: spec.ip, podIPs: [{ ip: spec.ip }] }),
    startTime: created,
    containerStatuses: ['envoy', 'main'].map((name) => ({
      name,
      state: running ? { running: { startedAt: started } } : spec.phase === 'Succeeded' ? { terminated: { exitCode: 0, reason: 'Completed', startedAt: started, finishedAt: time(spec.createdAt + 60), containerID: `containerd://${hex(`${spec.name}/${name}/c`, 64)}` } } : { waiting: { reason: 'ContainerCreating' } },
      lastState: {},
      ready: running,
      restartCount: 0,
      image: name === 'main' ? image : 'public.ecr.aws/appmesh/aws-appmesh-envoy:v1.29.6.0-prod',
      imageID: `${name === 'main' ? image.split(':')[0] : 'public.ecr.aws/appmesh/aws-appmesh-envoy'}@sha256:${hex(`${image}/${name}`, 64)}`,
      containerID: `containerd://${hex(`${spec.name}/${name}`, 64)}`,
      started: running,
    })),
    qosClass: 'Burstable',
  };
  const annotations: Record<string, string> = {
    'kubectl.kubernetes.io/default-container': 'main',
    'kubectl.kubernetes.io/restartedAt': time(spec.createdAt - 86_400),
    'prometheus.io/scrape': 'true',
    'prometheus.io/port': '9100',
    ...(spec.ip === null || spec.hostNetwork ? {} : { 'vpc.amazonaws.com/pod-ips': spec.ip }),
  };
  const ownerReferences = [{ apiVersion: 'apps/v1', kind: 'ReplicaSet', name: replicaSet, uid: uid(`${spec.namespace}/${replicaSet}`), controller: true, blockOwnerDeletion: true }];
  const { nodeName: _node, ...scheduled } = podSpec;
  const managedFields = [
    { manager: 'kube-controller-manager', operation: 'Update', apiVersion: 'v1', time: created, fieldsType: 'FieldsV1', fieldsV1: { 'f:metadata': fieldsOf({ generateName: '', labels: spec.labels, ownerReferences }, 3, (item) => JSON.stringify({ uid: item['uid'] })), 'f:spec': fieldsOf(scheduled, 3) } },
    { manager: 'aws-k8s-agent', operation: 'Update', apiVersion: 'v1', time: started, fieldsType: 'FieldsV1', fieldsV1: { 'f:metadata': { 'f:annotations': { 'f:vpc.amazonaws.com/pod-ips': {} } } } },
    { manager: 'kubelet', operation: 'Update', apiVersion: 'v1', time: time(spec.createdAt + 12), fieldsType: 'FieldsV1', subresource: 'status', fieldsV1: { 'f:status': fieldsOf({ conditions, containerStatuses: {}, hostIP: {}, hostIPs: {}, phase: {}, podIP: {}, podIPs: {}, startTime: {} }, 3) } },
  ];
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name: spec.name,
      generateName: `${replicaSet}-`,
      namespace: spec.namespace,
      uid: uid(`${spec.namespace}/${spec.name}`),
      creationTimestamp: created,
      labels: { ...spec.labels },
      annotations,
      ownerReferences,
      managedFields,
    },
    spec: podSpec,
    status,
  };
}
