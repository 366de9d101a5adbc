import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
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
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1/NetworkPolicy';
import { PodMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor';
import { PrometheusRule } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule';
import { commandAvailable } from '../../lib/exec.js';
import { DaemonMetrics } from '../../daemon/metrics.js';
import { POLICY_REPORTER_LEASE } from '../../daemon/config.js';
import { loadManifests } from '../../lib/manifests.js';

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
  'networking.k8s.io/v1/NetworkPolicy': NetworkPolicy as never,
  'monitoring.coreos.com/v1/PodMonitor': PodMonitor as never,
  'monitoring.coreos.com/v1/PrometheusRule': PrometheusRule as never,
};

function validate(object: Obj, where: string): void {
  const key = `${String(object['apiVersion'])}/${String(object['kind'])}`;
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
    const objects = loaded.filter(({ object }) => object['kind'] !== 'Kustomization');
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

  it('run the DaemonSet as a node agent: host network, critical priority, every taint tolerated, Linux and never Fargate', async () => {
    const ds = await daemonSet();
    const pod = at(ds, 'spec', 'template', 'spec') as Obj;
    assert.equal(pod['hostNetwork'], true);
    assert.equal(pod['dnsPolicy'], 'ClusterFirstWithHostNet');
    assert.equal(pod['priorityClassName'], 'system-node-critical');
    assert.deepEqual(pod['tolerations'], [{ operator: 'Exists' }]);
    const terms = at(pod, 'affinity', 'nodeAffinity', 'requiredDuringSchedulingIgnoredDuringExecution', 'nodeSelectorTerms', 0, 'matchExpressions');
    assert.deepEqual(terms, [
      { key: 'kubernetes.io/os', operator: 'In', values: ['linux'] },
      { key: 'eks.amazonaws.com/compute-type', operator: 'NotIn', values: ['fargate'] },
    ]);
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
    assert.deepEqual(at(container, 'readinessProbe', 'httpGet'), { host: '127.0.0.1', path: '/readyz', port: 9710 });
    const env = Object.fromEntries((container['env'] as Obj[]).map((e) => [e['name'], e['value']]));
    assert.equal(env['PALISADE_STATUS_ADDR'], '127.0.0.1:9710');
    // The policy reporter's identity and Lease namespace.
    assert.ok((container['env'] as Obj[]).some((e) => e['name'] === 'POD_NAME' && at(e, 'valueFrom', 'fieldRef', 'fieldPath') === 'metadata.name'));
    assert.ok((container['env'] as Obj[]).some((e) => e['name'] === 'POD_NAMESPACE' && at(e, 'valueFrom', 'fieldRef', 'fieldPath') === 'metadata.namespace'));
  });

  it('let the policy reporter create Events and nothing more, and touch only its own Lease, in palisade\'s namespace', async () => {
    const loaded = await loadManifests([path.join(root, 'manifests/policy-reporter-rbac.yaml')]);
    const byKind = new Map(loaded.map(({ object }) => [String(object['kind']), object as Obj]));
    assert.deepEqual(at(byKind.get('ClusterRole'), 'rules'), [{ apiGroups: [''], resources: ['events'], verbs: ['create'] }]);
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

  it('grant only get, list and watch on pods, namespaces, nodes and networkpolicies', async () => {
    const [role] = await loadManifests([path.join(root, 'manifests/clusterrole.yaml')]);
    const rules = at(role!.object, 'rules') as Obj[];
    assert.deepEqual(new Set(rules.flatMap((r) => r['verbs'] as string[])), new Set(['get', 'list', 'watch']));
    assert.deepEqual(new Set(rules.flatMap((r) => r['resources'] as string[])), new Set(['pods', 'namespaces', 'nodes', 'networkpolicies']));
  });

  it('alert and chart only on metrics palisade exports', async () => {
    const exported = new Set((await new DaemonMetrics().registry.getMetricsAsJSON()).map((m) => m.name));
    const histogramSeries = (name: string) => name.replace(/_(bucket|sum|count)$/, '');
    const used = new Set<string>();
    const dashboard = JSON.parse(await readFile(path.join(root, 'manifests/monitoring/grafana-dashboard.json'), 'utf8')) as { panels: { targets: { expr: string }[] }[] };
    const rule = await readFile(path.join(root, 'manifests/monitoring/prometheusrule.yaml'), 'utf8');
    const exprs = [...dashboard.panels.flatMap((p) => p.targets.map((t) => t.expr)), ...[...rule.matchAll(/expr: (.*)/g)].map((m) => m[1]!)];
    for (const expr of exprs) for (const m of expr.matchAll(/\b(palisade_[a-z_]+)/g)) used.add(histogramSeries(m[1]!));
    assert.ok(used.size >= 8, [...used].join(', '));
    for (const name of used) assert.ok(exported.has(name), `${name} is used but not exported`);
  });

  it('keep the seed tutorial\'s four example policies', async () => {
    const loaded = await loadManifests([path.join(root, 'manifests/examples')]);
    assert.deepEqual(loaded.map(({ object }) => at(object, 'metadata', 'name')).sort(), ['allow-all', 'allow-out-to-in', 'deny-all', 'isolate-namespace']);
  });
});

describe('the Dockerfile', () => {
  const dockerfile = () => readFile(path.join(root, 'Dockerfile'), 'utf8');

  it('builds on Node.js 24 LTS slim images pinned by major version, never latest', async () => {
    const froms = [...(await dockerfile()).matchAll(/^FROM\s+(\S+)/gm)].map((m) => m[1]!);
    assert.equal(froms.length, 2, 'a build stage and a runtime stage');
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
