import assert from 'node:assert/strict';
import { Lab } from '../../lib/lab/cluster.js';
import type { StoredObject } from '../../lib/lab/api-server.js';
import { clusterPolicy, namespace, node, pod } from '../support/builders.js';
import { eventually } from '../support/eventually.js';
import { prepareNamespaces } from '../support/netns-fixture.js';

/**
 * ClusterNetworkPolicies across a real `palisade daemon` process in a node's network namespace and the
 * lab API server, whose CRD is installed and removed while the daemon runs: without it the daemon runs
 * as ever and says so; installed, the daemon finds it within its discovery interval, watches the
 * policies, lists those selecting its pod, walks them in /explain, and (as the one policy reporter)
 * writes each one's Accepted condition; removed, they are gone from the daemon too.
 */

type Obj = Record<string, unknown>;
const PREFIX = 'paltest-cnpwatch';
const NODE = 'node-a';
const DISCOVERY_SECONDS = 1;

interface EndpointState { name: string; clusterNetworkPolicies: { ingress: string[]; egress: string[] } }
interface CnpState { served: boolean | null; count: number; byTier: { Admin: number; Baseline: number }; failed: string[]; discovery: { lastCheck: string | null; intervalSeconds: number; error: string | null } }
interface Status { ready: boolean; clusterNetworkPolicies: CnpState; endpoints: EndpointState[]; watches: { resource: string; synced: boolean }[] }

const guard = (priority: number): Obj => clusterPolicy('guard', {
  tier: 'Admin', priority, subject: { namespaces: { matchLabels: { 'kubernetes.io/metadata.name': 'team-a' } } },
  ingress: [{ name: 'no-team-b', action: 'Deny', from: [{ namespaces: { matchLabels: { 'kubernetes.io/metadata.name': 'team-b' } } }] }],
});
const baseline = clusterPolicy('isolate', { tier: 'Baseline', priority: 10, subject: { namespaces: {} }, ingress: [{ name: 'others', action: 'Deny', from: [{ namespaces: {} }] }] });
/** Invalid ("Middle" is no tier): it fails closed, denying its subject's egress. */
const broken = clusterPolicy('broken', { tier: 'Middle', priority: 50, subject: { pods: { namespaceSelector: {}, podSelector: { matchLabels: { app: 'nothing-has-this' } } } }, egress: [] });

describe('ClusterNetworkPolicies appearing and disappearing under a real daemon', function () {
  this.timeout(180_000);
  let lab: Lab | null = null;

  before(async function () {
    await prepareNamespaces(this, PREFIX);
    lab = await Lab.create({ prefix: PREFIX, nodes: [{ name: NODE, address: '172.31.0.1', podCidr: '10.1.1.0/24' }], daemonArgs: ['--cluster-policy-discovery-interval', `${DISCOVERY_SECONDS}s`] });
    await lab.api.apply([
      namespace('team-a', { 'kubernetes.io/metadata.name': 'team-a' }), namespace('team-b', { 'kubernetes.io/metadata.name': 'team-b' }), node(NODE, '172.31.0.1'),
      pod('team-a', 'web', { ip: '10.1.1.5', labels: { app: 'web' } }), pod('team-b', 'client', { ip: '10.1.1.6', labels: { app: 'client' } }),
    ]);
  });

  after(async () => {
    await lab?.destroy();
  });

  const the = (): Lab => {
    assert.ok(lab !== null);
    return lab;
  };
  const status = async (): Promise<Status> => {
    const { status: code, body } = await the().status(NODE, '/status');
    assert.equal(code, 200, body);
    return JSON.parse(body) as Status;
  };
  const web = async (): Promise<EndpointState> => {
    const found = (await status()).endpoints.find((e) => e.name === 'web');
    assert.ok(found !== undefined, 'the pod web has an endpoint');
    return found;
  };
  const metric = async (series: string): Promise<number> => {
    const match = new RegExp(`^${series.replace(/[{}]/g, '\\$&')} (\\d+)$`, 'm').exec(await the().metrics(NODE));
    assert.ok(match !== null, `${series} is exported`);
    return Number(match[1]);
  };
  const accepted = async (name: string): Promise<Obj | undefined> => {
    const object = (await the().api.objects('ClusterNetworkPolicy')).find((o: StoredObject) => o.metadata.name === name);
    return ((object?.['status'] as { conditions?: Obj[] } | undefined)?.conditions ?? []).find((c) => c['type'] === 'Accepted');
  };
  const cnpLines = (): string[] => the().node(NODE).daemon!.lines.filter((line) => /ClusterNetworkPolic/.test(line));

  it('without the CRD: ready as ever, /status says not served, one log line and no more', async () => {
    const l = the();
    await l.startDaemon(NODE);
    await l.waitReady(NODE);
    const s = await status();
    assert.deepEqual([s.ready, s.clusterNetworkPolicies.served, s.clusterNetworkPolicies.count, s.clusterNetworkPolicies.byTier], [true, false, 0, { Admin: 0, Baseline: 0 }]);
    assert.equal(s.clusterNetworkPolicies.discovery.intervalSeconds, DISCOVERY_SECONDS);
    assert.deepEqual((await web()).clusterNetworkPolicies, { ingress: [], egress: [] });
    assert.ok(!s.watches.some((w) => w.resource === 'ClusterNetworkPolicy'), 'no watch of what is not served');
    assert.equal(await metric('palisade_cluster_network_policies_served'), 0);
    // Several discovery rounds later: still the one line saying so, nothing at warn or error.
    await new Promise((resolve) => setTimeout(resolve, 4 * DISCOVERY_SECONDS * 1000));
    const lines = cnpLines();
    assert.equal(lines.length, 1, lines.join('\n'));
    assert.match(lines[0]!, /does not serve ClusterNetworkPolicies/);
    assert.equal((await l.api.stats()).watches['clusternetworkpolicies'] ?? 0, 0);
  });

  it('CRD installed while running: found within the discovery interval, listed per pod, walked by /explain, metrics by tier', async () => {
    const l = the();
    await l.api.setCrdInstalled('ClusterNetworkPolicy', true);
    await l.api.apply([guard(5), baseline, broken]);
    const found = Date.now();
    await eventually('the daemon watching ClusterNetworkPolicies', async () => {
      const s = await status();
      assert.deepEqual([s.clusterNetworkPolicies.served, s.clusterNetworkPolicies.count], [true, 3], JSON.stringify(s.clusterNetworkPolicies));
    }, 20_000);
    assert.ok(Date.now() - found < 10 * DISCOVERY_SECONDS * 1000, `found in ${Date.now() - found} ms`);
    const s = await status();
    assert.deepEqual(s.clusterNetworkPolicies.byTier, { Admin: 2, Baseline: 1 }, 'an invalid policy is taken as Admin: it fails closed');
    assert.deepEqual(s.clusterNetworkPolicies.failed, ['broken']);
    assert.ok(s.watches.some((w) => w.resource === 'ClusterNetworkPolicy' && w.synced));
    await eventually('the pod lists the policies selecting it', async () => assert.deepEqual((await web()).clusterNetworkPolicies, { ingress: ['guard', 'isolate'], egress: [] }), 20_000);
    const explained = await l.status(NODE, '/explain?from=team-b/client&to=team-a/web&protocol=TCP&port=80');
    const verdict = JSON.parse(explained.body) as { allowed: boolean; ingress: { tier: string; decidedBy: { policy: string; name: string } | null; clusterPolicies: string[] } };
    assert.deepEqual([verdict.allowed, verdict.ingress.tier, verdict.ingress.decidedBy?.policy, verdict.ingress.decidedBy?.name, verdict.ingress.clusterPolicies], [false, 'Admin', 'guard', 'no-team-b', ['guard', 'isolate']]);
    assert.equal(await metric('palisade_cluster_network_policies_served'), 1);
    assert.equal(await metric('palisade_cluster_network_policies{tier="Admin"}'), 2);
    assert.equal(await metric('palisade_cluster_network_policies{tier="Baseline"}'), 1);
  });

  it('writes the Accepted condition with the observed generation, once per change, and Invalid with the reason for a broken one', async () => {
    const l = the();
    await eventually('the conditions written', async () => {
      assert.deepEqual(await accepted('guard'), { type: 'Accepted', status: 'True', reason: 'Accepted', message: 'palisade accepts this ClusterNetworkPolicy as written (generation 1)', observedGeneration: 1, lastTransitionTime: (await accepted('guard'))?.['lastTransitionTime'] });
      assert.equal((await accepted('isolate'))?.['status'], 'True');
      const bad = await accepted('broken');
      assert.deepEqual([bad?.['status'], bad?.['reason'], bad?.['observedGeneration']], ['False', 'Invalid', 1]);
      assert.match(String(bad?.['message']), /spec\.tier: "Middle" is not "Admin" or "Baseline"/);
    }, 30_000);
    const since = (await accepted('guard'))?.['lastTransitionTime'];
    await l.api.apply(guard(7));
    await eventually('the new generation observed', async () => assert.equal((await accepted('guard'))?.['observedGeneration'], 2), 30_000);
    assert.equal((await accepted('guard'))?.['lastTransitionTime'], since, 'still True: the transition time stays');
    // Refreshes and discovery rounds later, nothing more was written.
    const writes = (await l.api.stats()).writes['PATCH clusternetworkpolicies/status'];
    assert.equal(writes, 4);
    await new Promise((resolve) => setTimeout(resolve, 4000));
    assert.equal((await l.api.stats()).writes['PATCH clusternetworkpolicies/status'], 4);
  });

  it('CRD removed: every ClusterNetworkPolicy gone from /status and the pod, still ready', async () => {
    const l = the();
    await l.api.setCrdInstalled('ClusterNetworkPolicy', false);
    await eventually('the daemon without ClusterNetworkPolicies', async () => {
      const s = await status();
      assert.deepEqual([s.clusterNetworkPolicies.served, s.clusterNetworkPolicies.count, s.clusterNetworkPolicies.failed], [false, 0, []]);
      assert.ok(!s.watches.some((w) => w.resource === 'ClusterNetworkPolicy'));
    }, 20_000);
    assert.deepEqual((await web()).clusterNetworkPolicies, { ingress: [], egress: [] });
    assert.equal((await l.status(NODE, '/readyz')).status, 200);
    assert.equal(await metric('palisade_cluster_network_policies{tier="Admin"}'), 0);
    const explained = JSON.parse((await l.status(NODE, '/explain?from=team-b/client&to=team-a/web&protocol=TCP&port=80')).body) as { allowed: boolean };
    assert.equal(explained.allowed, true);
    // The watch answered 404, backing off, while discovery confirmed the CRD gone (5 s); then nothing loops.
    const failed = (): string[] => l.node(NODE).daemon!.lines.filter((line) => line.includes('clusternetworkpolicies') && /"level":(40|50)/.test(line));
    const before = failed();
    assert.ok(before.length <= 8, before.join('\n'));
    assert.ok(l.node(NODE).daemon!.lines.some((line) => line.includes('they stay enforced until it says so again')));
    await new Promise((resolve) => setTimeout(resolve, 4 * DISCOVERY_SECONDS * 1000));
    assert.deepEqual(failed(), before);
    assert.match(cnpLines().at(-1) ?? '', /no longer serves ClusterNetworkPolicies/);
  });
});
