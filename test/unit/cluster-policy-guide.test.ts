import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadManifests } from '../../lib/manifests.js';
import { Evaluator } from '../../rules/evaluator.js';
import type { PacketProtocol, Verdict } from '../../rules/evaluator.js';
import { formatProblem } from '../../rules/problems.js';
import type { Snapshot } from '../../rules/snapshot.js';
import { parseObjects } from '../../rules/snapshot.js';
import { namespace, node, pod, policy, snapshotOf } from '../support/builders.js';

/**
 * The operator's guide's ClusterNetworkPolicy examples: each YAML block of the chapter is a file in
 * test/fixtures/manifests/cluster-policies/ (and the other way round), each file parses with no
 * problem at all, and the evaluator gives the verdicts the guide promises for them.
 */

type Obj = Record<string, unknown>;

const root = path.resolve(fileURLToPath(import.meta.url), '../../../..');
const FIXTURES = path.join(root, 'test/fixtures/manifests/cluster-policies');
const GUIDE = path.join(root, 'docs/operators-guide.md');
const CHAPTER = '## ClusterNetworkPolicy: cluster-wide guardrails';

const IMDS = '169.254.169.254';
const EXTERNAL = '198.51.100.7';
const NODE_A = '10.0.0.1';
const NODE_B = '10.0.0.2';

async function fixture(name: string): Promise<Obj[]> {
  return (await loadManifests([path.join(FIXTURES, name)])).map((loaded) => loaded.object as Obj);
}

async function chapterYamlBlocks(): Promise<string[]> {
  const guide = await readFile(GUIDE, 'utf8');
  const start = guide.indexOf(`\n${CHAPTER}\n`);
  assert.ok(start >= 0, `the guide has no "${CHAPTER}" chapter`);
  const end = guide.indexOf('\n## ', start + CHAPTER.length);
  const chapter = guide.slice(start, end < 0 ? undefined : end);
  return [...chapter.matchAll(/^```yaml\n([\s\S]*?)^```$/gm)].map((m) => m[1]!);
}

/** A cluster for the examples: tenants, the namespace the metadata exception names, kube-system with DNS, two nodes. */
function cluster(): Obj[] {
  return [
    node('node-a', NODE_A),
    node('node-b', NODE_B),
    ...['app', 'legacy-batch', 'shop', 'storefront', 'kube-system'].map((name) => namespace(name)),
    pod('app', 'client', { ip: '10.1.1.1', labels: { app: 'client' } }),
    pod('legacy-batch', 'job', { ip: '10.1.2.1', labels: { app: 'job' } }),
    pod('shop', 'web', { ip: '10.1.3.1', labels: { app: 'web' }, ports: [{ name: 'http', port: 8080 }] }),
    pod('shop', 'db', { ip: '10.1.3.2', labels: { app: 'db' }, node: 'node-b' }),
    pod('shop', 'api', { ip: '10.1.3.3', labels: { app: 'api' } }),
    pod('storefront', 'frontend', { ip: '10.1.4.1', labels: { app: 'frontend' }, node: 'node-b' }),
    pod('kube-system', 'coredns', { ip: '10.1.9.1', labels: { 'k8s-app': 'kube-dns' }, node: 'node-b', ports: [{ name: 'dns', port: 53, protocol: 'UDP' }, { name: 'dns-tcp', port: 53 }, { name: 'metrics', port: 9153 }] }),
    pod('kube-system', 'metrics-server', { ip: '10.1.9.2', labels: { 'k8s-app': 'metrics-server' }, ports: [{ name: 'https', port: 4443 }] }),
  ];
}

const allowAllEgress = (ns: string): Obj => policy(ns, 'allow-all-egress', { podSelector: {}, policyTypes: ['Egress'], egress: [{}] });
const denyAllEgress = (ns: string): Obj => policy(ns, 'deny-all-egress', { podSelector: {}, policyTypes: ['Egress'] });
const denyAllIngress = (ns: string): Obj => policy(ns, 'deny-all-ingress', { podSelector: {}, policyTypes: ['Ingress'] });

function addressOf(snapshot: Snapshot, ref: string): string {
  if (!ref.includes('/')) return ref;
  const [ns, name] = ref.split('/');
  const found = snapshot.pods.find((p) => p.namespace === ns && p.name === name);
  if (found?.ip == null) throw new Error(`no pod ${ref} with an address`);
  return found.ip;
}

/** The verdict, with `tiers` as "<egress tier>/<ingress tier>". */
function judge(objects: readonly Obj[], from: string, to: string, protocol: PacketProtocol, port: number | null): Verdict & { tiers: string; why: string } {
  const snapshot = snapshotOf(objects);
  const verdict = new Evaluator(snapshot).evaluate({ src: addressOf(snapshot, from), dst: addressOf(snapshot, to), protocol, port });
  return { ...verdict, tiers: `${verdict.egress.tier}/${verdict.ingress.tier}`, why: `\n  egress: ${verdict.egress.reason}\n  ingress: ${verdict.ingress.reason}` };
}

function expect(objects: readonly Obj[], from: string, to: string, protocol: PacketProtocol, port: number | null, allowed: boolean, tiers?: string): Verdict {
  const verdict = judge(objects, from, to, protocol, port);
  const what = `${from} -> ${to} ${protocol}${port === null ? '' : `/${port}`}`;
  assert.equal(verdict.allowed, allowed, `${what}: expected ${allowed ? 'allowed' : 'denied'}${verdict.why}`);
  if (tiers !== undefined) assert.equal(verdict.tiers, tiers, `${what}: deciding tiers${verdict.why}`);
  return verdict;
}

describe('the operator\'s guide ClusterNetworkPolicy examples', () => {
  it('are in the guide word for word, each YAML block of the chapter a fixture file and each file a block', async () => {
    const blocks = await chapterYamlBlocks();
    const files = (await readdir(FIXTURES)).filter((f) => f.endsWith('.yaml')).sort();
    assert.ok(files.length >= 5, `only ${files.length} fixture files`);
    for (const file of files) {
      const text = await readFile(path.join(FIXTURES, file), 'utf8');
      assert.ok(blocks.includes(text), `${file} is not a YAML block of the guide's chapter as it is (edit both together)`);
    }
    const texts = await Promise.all(files.map((f) => readFile(path.join(FIXTURES, f), 'utf8')));
    for (const block of blocks.filter((b) => /^apiVersion:/m.test(b))) {
      assert.ok(texts.includes(block), `a manifest in the guide's chapter has no fixture file:\n${block}`);
    }
  });

  it('parse with the real parser without a single problem', async () => {
    const files = (await readdir(FIXTURES)).filter((f) => f.endsWith('.yaml'));
    const loaded = await loadManifests(files.map((f) => path.join(FIXTURES, f)));
    const { snapshot, problems } = parseObjects(loaded.map((l) => ({ object: l.object, origin: `${l.source.file}:${l.source.line}` })));
    assert.deepEqual(problems.map(formatProblem), []);
    assert.deepEqual(snapshot.clusterPolicies.map((p) => [p.name, p.tier, p.priority, p.failed]), [
      ['block-instance-metadata', 'Admin', 10, false],
      ['instance-metadata-for-legacy-batch', 'Admin', 5, false],
      ['isolate-namespace-shop', 'Baseline', 100, false],
      ['kube-system-dns-only', 'Admin', 20, false],
    ]);
    assert.ok(snapshot.clusterPolicies.every((p) => [...p.ingress, ...p.egress].every((r) => r.failClosed === null)));
    assert.deepEqual(snapshot.policies.map((p) => `${p.namespace}/${p.name}`), ['shop/web-from-storefront']);
  });

  describe('the metadata service guardrail', () => {
    let objects: Obj[];
    before(async () => {
      objects = [...cluster(), ...(await fixture('metadata-service-guardrail.yaml')), ...(await fixture('metadata-service-exception.yaml'))];
    });

    it('denies a pod in app 169.254.169.254:80, in the Admin tier, by its rule', () => {
      const verdict = expect(objects, 'app/client', IMDS, 'TCP', 80, false, 'Admin/null');
      assert.equal(verdict.egress.decidedBy?.policy, 'block-instance-metadata');
      assert.equal(verdict.egress.decidedBy?.name, 'deny-instance-metadata');
    });

    it('denies it on any port and protocol, and whatever the namespace\'s NetworkPolicies allow', () => {
      for (const [protocol, port] of [['TCP', 443], ['UDP', 53], ['ICMP', null]] as const) expect(objects, 'app/client', IMDS, protocol, port, false, 'Admin/null');
      expect([...objects, allowAllEgress('app')], 'app/client', IMDS, 'TCP', 80, false, 'Admin/null');
    });

    it('leaves every other destination alone', () => {
      expect(objects, 'app/client', EXTERNAL, 'TCP', 443, true, 'Default/null');
      expect(objects, 'app/client', 'shop/web', 'TCP', 8080, true, 'Default/Default');
    });

    it('lets legacy-batch reach port 80 by the exception at the lower priority number, and nothing else of it', () => {
      const verdict = expect(objects, 'legacy-batch/job', IMDS, 'TCP', 80, true, 'Admin/null');
      assert.equal(verdict.egress.decidedBy?.policy, 'instance-metadata-for-legacy-batch');
      expect([...objects, denyAllEgress('legacy-batch')], 'legacy-batch/job', IMDS, 'TCP', 80, true, 'Admin/null');
      expect(objects, 'legacy-batch/job', IMDS, 'TCP', 443, false, 'Admin/null');
    });

    it('made Pass, the exception leaves the decision to legacy-batch\'s own NetworkPolicies', () => {
      const passing = objects.map((o) => {
        if ((o['metadata'] as Obj)['name'] !== 'instance-metadata-for-legacy-batch') return o;
        const copy = structuredClone(o);
        (((copy['spec'] as Obj)['egress'] as Obj[])[0]!)['action'] = 'Pass';
        return copy;
      });
      expect(passing, 'legacy-batch/job', IMDS, 'TCP', 80, true, 'Default/null');
      expect([...passing, denyAllEgress('legacy-batch')], 'legacy-batch/job', IMDS, 'TCP', 80, false, 'NetworkPolicy/null');
    });
  });

  describe('the namespace isolation baseline', () => {
    let baseline: Obj[];
    let refined: Obj[];
    before(async () => {
      baseline = [...cluster(), ...(await fixture('namespace-isolation-baseline.yaml'))];
      refined = [...baseline, ...(await fixture('namespace-isolation-networkpolicy.yaml'))];
    });

    it('denies shop ingress from other namespaces, by its other-namespaces rule', () => {
      const verdict = expect(baseline, 'storefront/frontend', 'shop/web', 'TCP', 8080, false, 'Default/Baseline');
      assert.equal(verdict.ingress.decidedBy?.name, 'other-namespaces');
      expect(baseline, 'app/client', 'shop/db', 'TCP', 5432, false, 'Default/Baseline');
    });

    it('accepts shop\'s own pods, and leaves traffic from outside the cluster and from the node alone', () => {
      expect(baseline, 'shop/api', 'shop/db', 'TCP', 5432, true, 'Default/Baseline');
      expect(baseline, EXTERNAL, 'shop/db', 'TCP', 5432, true, 'null/Default');
      expect(baseline, NODE_B, 'shop/db', 'TCP', 5432, true, 'null/null');
    });

    it('is refined by shop\'s NetworkPolicy: storefront reaches web on 8080, still not on other ports nor db', () => {
      expect(refined, 'storefront/frontend', 'shop/web', 'TCP', 8080, true, 'Default/NetworkPolicy');
      expect(refined, 'storefront/frontend', 'shop/web', 'TCP', 9090, false, 'Default/NetworkPolicy');
      expect(refined, 'storefront/frontend', 'shop/db', 'TCP', 5432, false, 'Default/Baseline');
    });

    it('is replaced whole for the pods the NetworkPolicy selects: shop\'s other pods no longer reach web', () => {
      expect(baseline, 'shop/api', 'shop/web', 'TCP', 8080, true, 'Default/Baseline');
      expect(refined, 'shop/api', 'shop/web', 'TCP', 8080, false, 'Default/NetworkPolicy');
      expect(refined, 'shop/api', 'shop/db', 'TCP', 5432, true, 'Default/Baseline');
    });
  });

  describe('the kube-system guardrail', () => {
    let objects: Obj[];
    before(async () => {
      objects = [...cluster(), ...(await fixture('kube-system-guardrail.yaml'))];
    });

    it('lets every namespace reach DNS on 53, UDP and TCP, whatever kube-system\'s NetworkPolicies say', () => {
      for (const from of ['app/client', 'shop/api', 'storefront/frontend']) {
        expect(objects, from, 'kube-system/coredns', 'UDP', 53, true, 'Default/Admin');
        expect(objects, from, 'kube-system/coredns', 'TCP', 53, true, 'Default/Admin');
      }
      expect([...objects, denyAllIngress('kube-system')], 'app/client', 'kube-system/coredns', 'UDP', 53, true, 'Default/Admin');
    });

    it('denies every other port of kube-system to other namespaces, by its everything-else rule', () => {
      const verdict = expect(objects, 'app/client', 'kube-system/coredns', 'TCP', 9153, false, 'Default/Admin');
      assert.equal(verdict.ingress.decidedBy?.name, 'everything-else');
      expect(objects, 'app/client', 'kube-system/metrics-server', 'TCP', 4443, false, 'Default/Admin');
      expect(objects, 'shop/api', 'kube-system/coredns', 'UDP', 5353, false, 'Default/Admin');
      expect(objects, 'app/client', 'kube-system/coredns', 'ICMP', null, false, 'Default/Admin');
    });

    it('passes kube-system\'s own traffic to its NetworkPolicies', () => {
      expect(objects, 'kube-system/metrics-server', 'kube-system/coredns', 'TCP', 9153, true, 'Default/Default');
      expect([...objects, denyAllIngress('kube-system')], 'kube-system/metrics-server', 'kube-system/coredns', 'TCP', 9153, false, 'Default/NetworkPolicy');
    });

    it('does not name the node, nor anything outside the cluster', () => {
      expect(objects, NODE_B, 'kube-system/coredns', 'TCP', 8080, true, 'null/null');
      expect(objects, EXTERNAL, 'kube-system/metrics-server', 'TCP', 4443, true, 'null/Default');
    });

    it('leaves a namespace\'s own egress NetworkPolicy in force: under an egress deny-all, DNS needs its allowance', () => {
      expect([...objects, denyAllEgress('app')], 'app/client', 'kube-system/coredns', 'UDP', 53, false, 'NetworkPolicy/Admin');
    });
  });
});
