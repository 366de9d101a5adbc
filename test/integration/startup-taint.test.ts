import assert from 'node:assert/strict';
import { Lab } from '../../lib/lab/cluster.js';
import { namespace, node, pod } from '../support/builders.js';
import { podClusterUnavailableReason } from '../support/pod-cluster.js';
import { prepareNamespaces } from '../support/netns-fixture.js';
import { eventually } from '../support/eventually.js';

/**
 * Real `palisade daemon` processes on a two-node lab whose nodes registered with the startup taint.
 * Each daemon holds a token of its own, bound to palisade's service account and its node, and the lab
 * API server judges node PATCHes by the stand-in for palisade's ValidatingAdmissionPolicy. The taint
 * must stay until the daemon's first apply, go from its own node then, and never from the other.
 */

const PREFIX = 'paltest-taint';
const STARTUP = { key: 'palisade.io/agent-not-ready', value: 'true', effect: 'NoSchedule' };
const GPU = { key: 'example.com/gpu', value: 'yes', effect: 'NoSchedule' };
const REMOVED_LOG = /"msg":"startup taint removed: pods can now be scheduled on this node, and meet its rules"/;

interface TaintStatus { enabled: boolean; onNode?: boolean | null; removed?: boolean; removals?: number; error?: string | null }


const taintedNode = (name: string, address: string, taints: readonly object[]) => ({ ...node(name, address), spec: { taints } });

describe('palisade daemon and the startup taint', function () {
  this.timeout(180_000);
  let lab: Lab | null = null;

  before(async function () {
    await prepareNamespaces(this, PREFIX, podClusterUnavailableReason);
  });

  afterEach(async () => {
    const current = lab;
    lab = null;
    await current?.destroy();
  });

  async function taintedLab(): Promise<Lab> {
    lab = await Lab.create({
      prefix: PREFIX,
      nodes: [{ name: 'node-a', address: '172.31.0.1', podCidr: '10.1.1.0/24' }, { name: 'node-b', address: '172.31.0.2', podCidr: '10.1.2.0/24' }],
      nodeTokens: true,
    });
    await lab.api.apply([
      namespace('default'),
      taintedNode('node-a', '172.31.0.1', [GPU, STARTUP]),
      taintedNode('node-b', '172.31.0.2', [STARTUP]),
      pod('default', 'web', { ip: '10.1.1.5', labels: { app: 'web' }, node: 'node-a' }),
    ]);
    return lab;
  }

  async function taints(l: Lab, name: string): Promise<unknown[]> {
    const { status, body } = await l.api.kube('GET', `/api/v1/nodes/${name}`, l.nodeToken(name));
    assert.equal(status, 200, body);
    return (JSON.parse(body) as { spec?: { taints?: unknown[] } }).spec?.taints ?? [];
  }

  async function taintStatus(l: Lab, name: string): Promise<TaintStatus> {
    const { status, body } = await l.status(name, '/status');
    assert.equal(status, 200, body);
    return (JSON.parse(body) as { startupTaint: TaintStatus }).startupTaint;
  }

  function metric(text: string, series: string): number {
    const match = new RegExp(`^${series.replace(/[{}"=]/g, '\\$&')} (\\d+)$`, 'm').exec(text);
    assert.ok(match !== null, `${series} is exported`);
    return Number(match[1]);
  }

  it('keeps the taint until the first apply, then takes it off its own node only, once, and logs it once', async () => {
    const l = await taintedLab();
    // No first apply while the NetworkPolicy watch cannot list.
    await l.api.setFailure({ status: 503, path: 'networkpolicies' });
    await l.startDaemon('node-a');
    await eventually('the daemon to have seen its tainted node', async () => assert.deepEqual(await taintStatus(l, 'node-a'), { enabled: true, taint: 'palisade.io/agent-not-ready=true:NoSchedule', key: STARTUP.key, onNode: true, removed: false, removals: 0, lastRemovedAt: null, error: null, consecutiveFailures: 0, retryAt: null }));
    await new Promise((resolve) => setTimeout(resolve, 3000));
    assert.equal((await l.status('node-a', '/readyz')).status, 503);
    assert.deepEqual(await taints(l, 'node-a'), [GPU, STARTUP], 'not before the first apply');
    assert.deepEqual((await l.api.stats()).patches, {});
    assert.equal(metric(await l.metrics('node-a'), 'palisade_startup_taint_present'), 1);

    await l.api.setFailure(null);
    await l.waitReady('node-a', 60_000);
    await eventually('the taint off node-a', async () => assert.deepEqual(await taints(l, 'node-a'), [GPU]));
    assert.deepEqual(await taints(l, 'node-b'), [STARTUP], 'never from another node');
    assert.deepEqual((await l.api.stats()).patches, { 'nodes/node-a': 1 });
    await eventually('the status to say so', async () => assert.deepEqual((({ onNode, removed, removals, error }) => ({ onNode, removed, removals, error }))(await taintStatus(l, 'node-a')), { onNode: false, removed: true, removals: 1, error: null }));
    const metrics = await l.metrics('node-a');
    assert.equal(metric(metrics, 'palisade_startup_taint_present'), 0);
    assert.equal(metric(metrics, 'palisade_startup_taint_removals_total{outcome="removed"}'), 1);
    assert.equal(metric(metrics, 'palisade_startup_taint_removals_total{outcome="error"}'), 0);
    assert.equal(l.node('node-a').daemon!.lines.filter((line) => REMOVED_LOG.test(line)).length, 1);
  });

  it('has a daemon\'s token refused (403) by the admission policy when it patches another node\'s taint', async () => {
    const l = await taintedLab();
    const patch = JSON.stringify([{ op: 'test', path: '/spec/taints', value: [STARTUP] }, { op: 'remove', path: '/spec/taints/0' }]);
    const refused = await l.api.kube('PATCH', '/api/v1/nodes/node-b', l.nodeToken('node-a'), { text: patch, contentType: 'application/json-patch+json' });
    assert.equal(refused.status, 403, refused.body);
    assert.match(refused.body, /palisade may change only the node its own pod runs on/);
    assert.deepEqual(await taints(l, 'node-b'), [STARTUP]);
    const own = await l.api.kube('PATCH', '/api/v1/nodes/node-b', l.nodeToken('node-b'), { text: patch, contentType: 'application/json-patch+json' });
    assert.equal(own.status, 200, own.body);
    assert.deepEqual(await taints(l, 'node-b'), []);
  });

  it('leaves the taint with --startup-taint none, and takes it off again when it comes back while ready', async () => {
    const l = await taintedLab();
    await l.startDaemon('node-b', ['--startup-taint', 'none']);
    await l.startDaemon('node-a');
    await l.waitReady('node-b', 60_000);
    await l.waitReady('node-a', 60_000);
    await eventually('the taint off node-a', async () => assert.deepEqual(await taints(l, 'node-a'), [GPU]));
    // node-b's daemon has been ready for as long as node-a's took to remove its taint, and a refresh more.
    await new Promise((resolve) => setTimeout(resolve, 2500));
    assert.deepEqual(await taints(l, 'node-b'), [STARTUP]);
    assert.deepEqual(await taintStatus(l, 'node-b'), { enabled: false });
    assert.equal((await l.api.stats()).patches['nodes/node-b'], undefined);

    // Someone taints node-a again: palisade is ready there, so the taint goes again.
    await l.api.apply(taintedNode('node-a', '172.31.0.1', [STARTUP, GPU]));
    await eventually('the taint off node-a again', async () => assert.deepEqual(await taints(l, 'node-a'), [GPU]));
    assert.equal((await taintStatus(l, 'node-a')).removals, 2);
    assert.deepEqual(await taints(l, 'node-b'), [STARTUP]);
  });
});
