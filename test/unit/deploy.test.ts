import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { parseAllDocuments } from 'yaml';
import { ServiceAccount } from 'kubernetes-models/v1/ServiceAccount';
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap';
import { ClusterRole } from 'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRole';
import { ClusterRoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRoleBinding';
import { Role } from 'kubernetes-models/rbac.authorization.k8s.io/v1/Role';
import { RoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1/RoleBinding';
import { DaemonSet } from 'kubernetes-models/apps/v1/DaemonSet';
import { ValidatingAdmissionPolicy } from 'kubernetes-models/admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy';
import { ValidatingAdmissionPolicyBinding } from 'kubernetes-models/admissionregistration.k8s.io/v1/ValidatingAdmissionPolicyBinding';
import { evaluate } from '@marcbachmann/cel-js';
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1/NetworkPolicy';
import { PodMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor';
import { PrometheusRule } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule';
import { commandAvailable } from '../../lib/exec.js';
import { DaemonMetrics } from '../../daemon/metrics.js';
import { POLICY_REPORTER_LEASE } from '../../daemon/config.js';
import { loadManifests } from '../../lib/manifests.js';
import { parseObjects } from '../../rules/snapshot.js';
import { CLUSTER_POLICY_API_VERSION } from '../../rules/cluster-policy.js';
import { formatProblem } from '../../rules/problems.js';
import { DEFAULT_STARTUP_TAINT, parseStartupTaint } from '../../daemon/startup-taint.js';
import { NODE_TAINT_POLICY_MESSAGES, PALISADE_NODE_TAINT_POLICY } from '../../lib/lab/node-admission.js';
import { NODE_NAME_EXTRA, NODE_UPDATE_CASES, PALISADE_USER } from '../support/node-taint-cases.js';
import { ruleGroups } from '../support/prometheus.js';

/**
 * What ships: every manifest valid against the Kubernetes (and Prometheus Operator) schemas, offline;
 * kustomize renders each kustomization; the DaemonSet holds what a node-level enforcer needs and no
 * more; alerts and the dashboard only name metrics palisade exports; the Dockerfile checked statically
 * (no Docker engine runs here).
 */

const root = path.resolve(fileURLToPath(import.meta.url), '../../../..');
type Obj = Record<string, unknown>;

interface Validating { validate(): void }
const MODELS: Readonly<Record<string, new (data: never) => Validating>> = {
  'v1/ServiceAccount': ServiceAccount as never,
  'v1/ConfigMap': ConfigMap as never,
  'rbac.authorization.k8s.io/v1/ClusterRole': ClusterRole as never,
  'rbac.authorization.k8s.io/v1/ClusterRoleBinding': ClusterRoleBinding as never,
  'rbac.authorization.k8s.io/v1/Role': Role as never,
  'rbac.authorization.k8s.io/v1/RoleBinding': RoleBinding as never,
  'apps/v1/DaemonSet': DaemonSet as never,
  'admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy': ValidatingAdmissionPolicy as never,
  'admissionregistration.k8s.io/v1/ValidatingAdmissionPolicyBinding': ValidatingAdmissionPolicyBinding as never,
  'networking.k8s.io/v1/NetworkPolicy': NetworkPolicy as never,
  'monitoring.coreos.com/v1/PodMonitor': PodMonitor as never,
  'monitoring.coreos.com/v1/PrometheusRule': PrometheusRule as never,
};

function validate(object: Obj, where: string): void {
  const key = `${String(object['apiVersion'])}/${String(object['kind'])}`;
  if (key === `${CLUSTER_POLICY_API_VERSION}/ClusterNetworkPolicy`) {
    // No model of the network-policy-api CRD is published as a package; palisade's parser checks what its schema and CEL rules check.
    const { problems } = parseObjects([{ object }]);
    assert.deepEqual(problems.map(formatProblem), [], `${where}: ${key} is not valid`);
    return;
  }
  const Model = MODELS[key];
  assert.ok(Model !== undefined, `${where}: no schema for ${key}`);
  try {
    new Model(object as never).validate();
  } catch (error) {
    assert.fail(`${where}: ${key} ${String((object['metadata'] as Obj | undefined)?.['name'])} is not valid: ${error instanceof Error ? error.message : String(error)}`);
  }
}

const KUSTOMIZATIONS = ['manifests', 'manifests/monitoring', 'manifests/cleanup'];

async function kustomize(dir: string): Promise<Obj[]> {
  const { stdout } = await promisify(execFile)('kubectl', ['kustomize', path.join(root, dir)]);
  return parseAllDocuments(stdout).map((d) => d.toJS() as Obj).filter((o) => o !== null);
}

async function daemonSet(): Promise<Obj> {
  const loaded = await loadManifests([path.join(root, 'manifests/daemonset.yaml')]);
  return loaded[0]!.object as Obj;
}

function at(object: unknown, ...keys: (string | number)[]): unknown {
  return keys.reduce<unknown>((o, k) => (o as Record<string | number, unknown> | undefined)?.[k], object);
}

describe('the shipped manifests', function () {
  this.timeout(60_000);

  it('are all valid against the Kubernetes and Prometheus Operator schemas', async () => {
    const files = (await readdir(path.join(root, 'manifests'), { recursive: true })).filter((f) => f.endsWith('.yaml')).map((f) => path.join(root, 'manifests', f));
    const loaded = await loadManifests(files);
    const objects = loaded.filter(({ object }) => object['kind'] !== 'Kustomization' && object['kind'] !== 'Component');
    assert.ok(objects.length >= 11, `found ${objects.length} objects`);
    for (const { object, source } of objects) validate(object as Obj, `${source.file}:${source.line}`);
  });

  it('are checked by schemas that do reject a broken object', () => {
    const broken = { apiVersion: 'apps/v1', kind: 'DaemonSet', metadata: { name: 'x' }, spec: { selector: {}, template: { spec: { containers: [{ name: 'c', ports: [{ containerPort: 'metrics' }] }] } } } };
    assert.throws(() => validate(broken, 'broken'), /not valid/);
  });

  for (const dir of KUSTOMIZATIONS) {
    it(`render with kubectl kustomize ${dir}, and what it renders is valid`, async function () {
      if (!(await commandAvailable('kubectl'))) this.skip();
      const objects = await kustomize(dir);
      assert.ok(objects.length > 0);
      for (const object of objects) validate(object, `kubectl kustomize ${dir}`);
    });
  }

  it('label the PodMonitor and the PrometheusRule release: kube-prometheus-stack, and no selector, through the kube-prometheus-stack component', async function () {
    if (!(await commandAvailable('kubectl'))) this.skip();
    // An overlay as an operator writes one: the monitoring kustomization plus the component.
    const overlay = await mkdtemp(path.join(tmpdir(), 'paltest-overlay-'));
    try {
      const monitoring = path.relative(overlay, path.join(root, 'manifests/monitoring'));
      await writeFile(path.join(overlay, 'kustomization.yaml'), [
        'apiVersion: kustomize.config.k8s.io/v1beta1',
        'kind: Kustomization',
        'resources:',
        `- ${monitoring}`,
        'components:',
        `- ${monitoring}/components/kube-prometheus-stack`,
        '',
      ].join('\n'));
      const { stdout } = await promisify(execFile)('kubectl', ['kustomize', overlay]);
      const objects = parseAllDocuments(stdout).map((d) => d.toJS() as Obj);
      for (const kind of ['PodMonitor', 'PrometheusRule']) {
        const object = objects.find((o) => o['kind'] === kind);
        assert.equal(at(object, 'metadata', 'labels', 'release'), 'kube-prometheus-stack', kind);
        validate(object!, `the overlay's ${kind}`);
      }
      const monitor = objects.find((o) => o['kind'] === 'PodMonitor');
      assert.deepEqual(at(monitor, 'spec', 'selector'), { matchLabels: { 'app.kubernetes.io/name': 'palisade' } });
    } finally {
      await rm(overlay, { recursive: true, force: true });
    }
  });

  it('run the DaemonSet as a node agent: host network, critical priority, every taint tolerated, Linux, never Fargate, Auto Mode or hybrid nodes, RuntimeDefault seccomp', async () => {
    const ds = await daemonSet();
    const pod = at(ds, 'spec', 'template', 'spec') as Obj;
    assert.equal(pod['hostNetwork'], true);
    assert.equal(pod['dnsPolicy'], 'ClusterFirstWithHostNet');
    assert.equal(pod['priorityClassName'], 'system-node-critical');
    assert.deepEqual(pod['tolerations'], [{ operator: 'Exists' }]);
    const terms = at(pod, 'affinity', 'nodeAffinity', 'requiredDuringSchedulingIgnoredDuringExecution', 'nodeSelectorTerms', 0, 'matchExpressions');
    assert.deepEqual(terms, [
      { key: 'kubernetes.io/os', operator: 'In', values: ['linux'] },
      { key: 'eks.amazonaws.com/compute-type', operator: 'NotIn', values: ['fargate', 'auto', 'hybrid'] },
    ]);
    assert.deepEqual(at(pod, 'securityContext', 'seccompProfile'), { type: 'RuntimeDefault' });
    assert.deepEqual(at(ds, 'spec', 'updateStrategy'), { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 1 } });
  });

  it('give the container NET_ADMIN and NET_RAW only, unprivileged, on a read-only root, with the host\'s xtables lock', async () => {
    const container = at(await daemonSet(), 'spec', 'template', 'spec', 'containers', 0) as Obj;
    assert.deepEqual(container['securityContext'], {
      privileged: false,
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ['ALL'], add: ['NET_ADMIN', 'NET_RAW'] },
    });
    assert.ok((container['volumeMounts'] as Obj[]).some((m) => m['mountPath'] === '/run/xtables.lock'));
    const volumes = at(await daemonSet(), 'spec', 'template', 'spec', 'volumes') as Obj[];
    assert.ok(volumes.some((v) => at(v, 'hostPath', 'path') === '/run/xtables.lock' && at(v, 'hostPath', 'type') === 'FileOrCreate'));
    assert.equal(at(container, 'lifecycle', 'preStop'), undefined, 'no preStop: a rolling update must not open a gap');
  });

  it('set the node name from the downward API, size resources, and probe the loopback status endpoint', async () => {
    const container = at(await daemonSet(), 'spec', 'template', 'spec', 'containers', 0) as Obj;
    assert.ok((container['env'] as Obj[]).some((e) => e['name'] === 'NODE_NAME' && at(e, 'valueFrom', 'fieldRef', 'fieldPath') === 'spec.nodeName'));
    assert.ok(at(container, 'resources', 'requests', 'memory') !== undefined && at(container, 'resources', 'limits', 'memory') !== undefined);
    assert.deepEqual(at(container, 'livenessProbe', 'httpGet'), { host: '127.0.0.1', path: '/healthz', port: 9710 });
    // A startup probe on liveness's endpoint, never on readiness: a node whose API server is away keeps its rules.
    assert.deepEqual(at(container, 'startupProbe', 'httpGet'), { host: '127.0.0.1', path: '/healthz', port: 9710 });
    assert.equal(at(container, 'livenessProbe', 'initialDelaySeconds'), undefined, 'the startup probe covers the start');
    assert.deepEqual(at(container, 'readinessProbe', 'httpGet'), { host: '127.0.0.1', path: '/readyz', port: 9710 });
    const env = Object.fromEntries((container['env'] as Obj[]).map((e) => [e['name'], e['value']]));
    assert.equal(env['PALISADE_STATUS_ADDR'], '127.0.0.1:9710');
    // The policy reporter's identity and Lease namespace.
    assert.ok((container['env'] as Obj[]).some((e) => e['name'] === 'POD_NAME' && at(e, 'valueFrom', 'fieldRef', 'fieldPath') === 'metadata.name'));
    assert.ok((container['env'] as Obj[]).some((e) => e['name'] === 'POD_NAMESPACE' && at(e, 'valueFrom', 'fieldRef', 'fieldPath') === 'metadata.namespace'));
  });

  it('let the policy reporter create Events, patch ClusterNetworkPolicies\' status and nothing more, and touch only its own Lease, in palisade\'s namespace', async () => {
    const loaded = await loadManifests([path.join(root, 'manifests/policy-reporter-rbac.yaml')]);
    const byKind = new Map(loaded.map(({ object }) => [String(object['kind']), object as Obj]));
    assert.deepEqual(at(byKind.get('ClusterRole'), 'rules'), [
      { apiGroups: [''], resources: ['events'], verbs: ['create'] },
      { apiGroups: ['policy.networking.k8s.io'], resources: ['clusternetworkpolicies/status'], verbs: ['patch'] },
    ]);
    const role = byKind.get('Role')!;
    assert.equal(at(role, 'metadata', 'namespace'), at(await daemonSet(), 'metadata', 'namespace'));
    assert.deepEqual(at(role, 'rules'), [
      { apiGroups: ['coordination.k8s.io'], resources: ['leases'], verbs: ['create'] },
      { apiGroups: ['coordination.k8s.io'], resources: ['leases'], resourceNames: [POLICY_REPORTER_LEASE], verbs: ['get', 'update'] },
    ]);
    for (const kind of ['ClusterRoleBinding', 'RoleBinding']) {
      assert.deepEqual(at(byKind.get(kind), 'subjects'), [{ kind: 'ServiceAccount', name: 'palisade', namespace: 'kube-system' }], kind);
      assert.equal(at(byKind.get(kind), 'roleRef', 'name'), 'palisade-policy-reporter', kind);
    }
    const kustomization = await readFile(path.join(root, 'manifests/kustomization.yaml'), 'utf8');
    assert.match(kustomization, /^- policy-reporter-rbac\.yaml$/m);
  });

  it('run the cleanup DaemonSet on the same nodes, with no service-account token, RuntimeDefault seccomp and the same capabilities', async () => {
    const [cleanup] = await loadManifests([path.join(root, 'manifests/cleanup/daemonset.yaml')]);
    const pod = at(cleanup!.object, 'spec', 'template', 'spec') as Obj;
    const agent = at(await daemonSet(), 'spec', 'template', 'spec') as Obj;
    assert.equal(pod['automountServiceAccountToken'], false);
    assert.deepEqual(at(pod, 'securityContext', 'seccompProfile'), { type: 'RuntimeDefault' });
    assert.deepEqual(pod['affinity'], agent['affinity']);
    assert.deepEqual(at(pod, 'initContainers', 0, 'securityContext', 'capabilities'), { drop: ['ALL'], add: ['NET_ADMIN', 'NET_RAW'] });
  });

  it('grant get, list and watch on pods, namespaces, nodes, networkpolicies and clusternetworkpolicies, and patch on nodes alone (for the startup taint)', async () => {
    const [role] = await loadManifests([path.join(root, 'manifests/clusterrole.yaml')]);
    const rules = at(role!.object, 'rules') as Obj[];
    const grants = new Set(rules.flatMap((r) => (r['resources'] as string[]).flatMap((res) => (r['verbs'] as string[]).map((v) => `${String((r['apiGroups'] as string[])[0])}/${res}:${v}`))));
    const expected = new Set([...['pods', 'namespaces', 'nodes'].flatMap((r) => ['get', 'list', 'watch'].map((v) => `/${r}:${v}`)), ...['get', 'list', 'watch'].map((v) => `networking.k8s.io/networkpolicies:${v}`),
      ...['get', 'list', 'watch'].map((v) => `policy.networking.k8s.io/clusternetworkpolicies:${v}`), '/nodes:patch']);
    assert.deepEqual(grants, expected);
    assert.ok(rules.every((r) => r['resourceNames'] === undefined && !(r['resources'] as string[]).some((res) => res.includes('/'))), 'no subresources (nodes/status) and nothing by name');
  });

  it('tolerate the startup taint in the DaemonSet, and set it as the daemon\'s default', async () => {
    const ds = await daemonSet();
    const tolerations = at(ds, 'spec', 'template', 'spec', 'tolerations') as Obj[];
    const parsed = parseStartupTaint(DEFAULT_STARTUP_TAINT);
    assert.ok(parsed.ok && parsed.taint !== null);
    const taint = parsed.taint;
    // A toleration matches as the scheduler matches it: Exists with no key matches every taint.
    const tolerates = (t: Obj) => (t['effect'] === undefined || t['effect'] === taint.effect)
      && ((t['operator'] === 'Exists' && (t['key'] === undefined || t['key'] === taint.key)) || (t['key'] === taint.key && (t['value'] ?? '') === (taint.value ?? '')));
    assert.ok(tolerations.some(tolerates), JSON.stringify(tolerations));
    const env = Object.fromEntries((at(ds, 'spec', 'template', 'spec', 'containers', 0, 'env') as Obj[]).map((e) => [e['name'], e['value']]));
    assert.equal(env['PALISADE_STARTUP_TAINT'], DEFAULT_STARTUP_TAINT);
  });

  it('ship a ValidatingAdmissionPolicy, bound with Deny, that judges palisade\'s updates of nodes and names the startup taint\'s key', async () => {
    const loaded = await loadManifests([path.join(root, 'manifests/node-taint-policy.yaml')]);
    const [policy, binding] = loaded.map(({ object }) => object as Obj);
    assert.deepEqual([policy?.['kind'], binding?.['kind']], ['ValidatingAdmissionPolicy', 'ValidatingAdmissionPolicyBinding']);
    assert.equal(policy!['apiVersion'], 'admissionregistration.k8s.io/v1');
    assert.equal(at(binding, 'spec', 'policyName'), at(policy, 'metadata', 'name'));
    assert.equal(at(policy, 'metadata', 'name'), PALISADE_NODE_TAINT_POLICY.name);
    assert.deepEqual(at(binding, 'spec', 'validationActions'), ['Deny']);
    assert.equal(at(policy, 'spec', 'failurePolicy'), 'Fail');
    assert.deepEqual(at(policy, 'spec', 'matchConstraints', 'resourceRules'), [{ apiGroups: [''], apiVersions: ['v1'], operations: ['UPDATE'], resources: ['nodes'] }]);
    assert.deepEqual(at(policy, 'spec', 'matchConditions'), [{ name: 'palisade-service-account', expression: `request.userInfo.username == '${PALISADE_USER}'` }]);
    const key = (at(policy, 'spec', 'variables') as Obj[]).find((v) => v['name'] === 'startupTaintKey')?.['expression'];
    const parsed = parseStartupTaint(DEFAULT_STARTUP_TAINT);
    assert.equal(key, `'${parsed.ok ? parsed.taint?.key : ''}'`);
    assert.equal(PALISADE_NODE_TAINT_POLICY.username, PALISADE_USER);
    assert.deepEqual((at(policy, 'spec', 'validations') as Obj[]).map((v) => v['message']), Object.values(NODE_TAINT_POLICY_MESSAGES), 'the lab\'s stand-in gives the same messages');
    const kustomization = await readFile(path.join(root, 'manifests/kustomization.yaml'), 'utf8');
    assert.match(kustomization, /^- node-taint-policy\.yaml$/m);
  });

  describe('the ValidatingAdmissionPolicy\'s CEL, evaluated', () => {
    for (const c of NODE_UPDATE_CASES) {
      it(`${c.denied === null ? 'admits' : `denies (${c.denied})`}: ${c.name}`, async () => {
        const [policy] = await loadManifests([path.join(root, 'manifests/node-taint-policy.yaml')]);
        const spec = at(policy!.object, 'spec') as { matchConditions: Obj[]; variables: Obj[]; validations: Obj[] };
        const extra = c.user.nodeName === null ? {} : { [NODE_NAME_EXTRA]: [c.user.nodeName] };
        const context: Obj = { request: { operation: 'UPDATE', userInfo: { username: c.user.username, extra } }, oldObject: c.oldObject, object: c.object };
        const matched = spec.matchConditions.every((m) => evaluate(String(m['expression']), context) === true);
        let denied: string | null = null;
        if (matched) {
          const variables: Obj = {};
          for (const v of spec.variables) variables[String(v['name'])] = evaluate(String(v['expression']), { ...context, variables });
          denied = (spec.validations.find((v) => evaluate(String(v['expression']), { ...context, variables }) !== true)?.['message'] as string | undefined) ?? null;
        }
        assert.equal(denied, c.denied === null ? null : NODE_TAINT_POLICY_MESSAGES[c.denied]);
      });
    }
  });

  it('alert and chart only on metrics palisade exports', async () => {
    const exported = new Set((await new DaemonMetrics().registry.getMetricsAsJSON()).map((m) => m.name));
    const histogramSeries = (name: string) => name.replace(/_(bucket|sum|count)$/, '');
    const used = new Set<string>();
    const dashboard = JSON.parse(await readFile(path.join(root, 'manifests/monitoring/grafana-dashboard.json'), 'utf8')) as { panels: { targets: { expr: string }[] }[] };
    const rules = (await ruleGroups()).flatMap((g) => g.rules.map((r) => r.expr));
    const exprs = [...dashboard.panels.flatMap((p) => p.targets.map((t) => t.expr)), ...rules];
    for (const expr of exprs) for (const m of expr.matchAll(/\b(palisade_[a-z_]+)/g)) used.add(histogramSeries(m[1]!));
    assert.ok(used.size >= 8, [...used].join(', '));
    for (const name of used) assert.ok(exported.has(name), `${name} is used but not exported`);
  });

  it('keep the seed tutorial\'s four example policies, beside the demo\'s ClusterNetworkPolicy steps\' three', async () => {
    const loaded = await loadManifests([path.join(root, 'manifests/examples')]);
    const named = (kind: string) => loaded.filter(({ object }) => object['kind'] === kind).map(({ object }) => at(object, 'metadata', 'name')).sort();
    assert.deepEqual(named('NetworkPolicy'), ['allow-all', 'allow-in-from-out', 'allow-out-to-in', 'deny-all', 'isolate-namespace']);
    assert.deepEqual(named('ClusterNetworkPolicy'), ['admin-deny-busybox2', 'baseline-isolate-namespace']);
  });
});

describe('the Dockerfile', () => {
  const dockerfile = () => readFile(path.join(root, 'Dockerfile'), 'utf8');

  it('builds on Node.js 24 LTS slim images pinned by major version, never latest', async () => {
    const stages = [...(await dockerfile()).matchAll(/^FROM\s+(?:--platform=(\S+)\s+)?(\S+)/gm)];
    const froms = stages.map((m) => m[2]!);
    assert.equal(froms.length, 2, 'a build stage and a runtime stage');
    // Multi-arch: the JavaScript is built once on the builder's platform, the runtime per target.
    assert.deepEqual(stages.map((m) => m[1]), ['$BUILDPLATFORM', undefined]);
    for (const image of froms) {
      assert.match(image, /^node:24-[a-z]+-slim$/);
      assert.doesNotMatch(image, /latest/);
    }
  });

  it('ships iptables (both backends), ipset, conntrack and ulogd with its JSON plugin from the distribution', async () => {
    const install = /apt-get install[^\n]*/.exec(await dockerfile())?.[0] ?? '';
    for (const pkg of ['iptables', 'ipset', 'conntrack', 'ulogd2', 'ulogd2-json']) assert.match(install, new RegExp(`\\b${pkg}\\b`));
  });

  it('starts palisade daemon without a shell, with no HEALTHCHECK, and copies only compiled output and production dependencies into the image', async () => {
    const text = await dockerfile();
    const entrypoint = /^ENTRYPOINT (\[.*\])$/m.exec(text)?.[1];
    assert.deepEqual(JSON.parse(entrypoint ?? 'null'), ['node', '/app/dist/daemon/main.js'], 'no flags: the daemon sets up its own runtime');
    assert.match(text, /^CMD \["daemon"\]$/m);
    assert.doesNotMatch(text, /^HEALTHCHECK/m);
    const runtime = text.slice(text.lastIndexOf('\nFROM '));
    assert.doesNotMatch(runtime, /COPY (--from=build )?\S*(test|bench|\.ts)\b/);
    assert.match(text, /npm prune --omit=dev/);
    const main = await readFile(path.join(root, 'package.json'), 'utf8');
    assert.equal((JSON.parse(main) as { bin: Record<string, string> }).bin['palisade'], 'dist/daemon/main.js');
  });
});
