import assert from 'node:assert/strict';
import { ClusterCache } from '../../daemon/cluster-cache.js';
import { DaemonMetrics } from '../../daemon/metrics.js';
import { FlowForgetter } from '../../daemon/flow-forgetter.js';
import type { Conntrack } from '../../lib/conntrack.js';
import { silentLogger } from '../../lib/logger.js';
import { makeSettings } from '../../rules/settings.js';
import { formatProblem } from '../../rules/problems.js';
import { namespace, pod, policy } from '../support/builders.js';

/** The daemon's state keepers, fed what a hostile or broken cluster can send. */

function settings() {
  const result = makeSettings({ nodeName: 'node-a' });
  assert.ok(result.ok);
  return result.settings;
}

function cache(): { cache: ClusterCache; changes: string[] } {
  const changes: string[] = [];
  return { cache: new ClusterCache(settings(), (kind) => changes.push(kind), silentLogger), changes };
}

describe('the cluster cache', () => {
  it('keeps going when an object makes palisade throw, and reports it as an error of that object', () => {
    const { cache: c } = cache();
    const handler = c.handler('Pod');
    const poisoned = { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'bad', namespace: 'x' }, get spec(): never { throw new Error('unexpected shape'); } };
    handler.beginList();
    handler.listPage([poisoned, pod('x', 'good', { ip: '10.1.1.1' })]);
    handler.endList();
    assert.equal(c.count('Pod'), 1, 'the good pod is kept');
    assert.equal(c.handlingFailures, 1);
    assert.match(c.allProblems().map(formatProblem).join('\n'), /error: Pod x\/bad: palisade could not handle this object: unexpected shape/);
  });

  it('fails a new policy it cannot handle closed, isolating its namespace, and keeps an old one as it was', () => {
    const { cache: c } = cache();
    const handler = c.handler('NetworkPolicy');
    const poisoned = (name: string) => ({ apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name, namespace: 'x' }, get spec(): never { throw new Error('boom'); } });
    handler.event('ADDED', poisoned('new'));
    const created = c.policies().find((p) => p.name === 'new')!;
    assert.deepEqual([created.failed, created.affectsIngress, created.affectsEgress, created.podSelector.requirements.length], [true, true, true, 0]);
    handler.event('ADDED', policy('x', 'old', { podSelector: { matchLabels: { app: 'a' } }, ingress: [{}] }));
    handler.event('MODIFIED', poisoned('old'));
    const kept = c.policies().find((p) => p.name === 'old')!;
    assert.deepEqual([kept.failed, kept.ingress.length], [false, 1]);
  });

  it('reports pods whose address claim it does not honour, with the reason', () => {
    const { cache: c } = cache();
    const handler = c.handler('Pod');
    handler.event('ADDED', pod('x', 'v', { ip: '10.1.1.1' }));
    handler.event('ADDED', pod('evil', 'thief', { annotationIp: '10.1.1.1' }));
    c.handler('Namespace').event('ADDED', namespace('x'));
    assert.match(c.allProblems().map(formatProblem).join('\n'), /warning: Pod evil\/thief field metadata\.annotations\.vpc\.amazonaws\.com\/pod-ips: address 10\.1\.1\.1 is not used for this pod: x\/v \(status\.podIPs\) holds it/);
    assert.deepEqual([...c.compiler.takeOwnerChanges()], []);
  });
});

describe('the metrics', () => {
  it('removes the drop series of pods that left the node', async () => {
    const metrics = new DaemonMetrics();
    const counter = { packets: 3, bytes: 300 };
    metrics.observeDrops([{ namespace: 'x', name: 'a', ingress: counter, egress: null, ingressLog: null, egressLog: null }, { namespace: 'x', name: 'b', ingress: counter, egress: counter, ingressLog: null, egressLog: null }]);
    metrics.observeDrops([{ namespace: 'x', name: 'b', ingress: counter, egress: counter, ingressLog: null, egressLog: null }]);
    const text = await metrics.registry.metrics();
    assert.doesNotMatch(text, /pod="a"/);
    assert.match(text, /palisade_dropped_packets_total\{namespace="x",pod="b",direction="ingress"\} 3/);
  });

  it('publishes a pod\'s drop series at 0 before a policy isolates it, so its first drops are an increase', async () => {
    const metrics = new DaemonMetrics();
    metrics.observeDrops([{ namespace: 'x', name: 'a', ingress: null, egress: null, ingressLog: null, egressLog: null }]);
    assert.match(await metrics.registry.metrics(), /palisade_dropped_packets_total\{namespace="x",pod="a",direction="ingress"\} 0/);
    metrics.observeDrops([{ namespace: 'x', name: 'a', ingress: { packets: 8, bytes: 480 }, egress: null, ingressLog: null, egressLog: null }]);
    metrics.observeDrops([{ namespace: 'x', name: 'a', ingress: null, egress: null, ingressLog: null, egressLog: null }]);
    // Isolated again: the new drop rule counts from 0, and all of it is added.
    metrics.observeDrops([{ namespace: 'x', name: 'a', ingress: { packets: 20, bytes: 1200 }, egress: null, ingressLog: null, egressLog: null }]);
    const text = await metrics.registry.metrics();
    assert.match(text, /palisade_dropped_packets_total\{namespace="x",pod="a",direction="ingress"\} 28/);
    assert.match(text, /palisade_dropped_packets_total\{namespace="x",pod="a",direction="egress"\} 0/);
  });

  it('names each policy over budget, and forgets it once it is fixed', async () => {
    const metrics = new DaemonMetrics();
    const record = { namespace: 'evil', name: 'huge', overBudget: true } as Parameters<DaemonMetrics['observeOverBudget']>[0][number];
    metrics.observeOverBudget([record]);
    assert.match(await metrics.registry.metrics(), /palisade_policy_over_budget\{policy_namespace="evil",policy="huge"\} 1/);
    metrics.observeOverBudget([{ ...record, overBudget: false }]);
    assert.doesNotMatch(await metrics.registry.metrics(), /policy="huge"/);
  });
});

describe('forgetting tracked flows', () => {
  it('runs beside the sync: forget() returns at once, and an address queued twice is cleared once more, not twice', async () => {
    const cleared: string[] = [];
    let release: () => void = () => {};
    const gate = new Promise<void>((resolve) => { release = resolve; });
    const conntrack = { forget: async (address: string) => { await gate; cleared.push(address); return 1; } } as unknown as Conntrack;
    const flows = new FlowForgetter(conntrack, silentLogger);
    flows.forget(new Map([['10.1.1.1', { previous: 'x/a', next: null }]]));
    flows.forget(new Map([['10.1.1.1', { previous: 'x/a', next: 'x/b' }], ['10.1.1.2', { previous: 'x/c', next: null }]]));
    assert.deepEqual(cleared, [], 'nothing waited for conntrack');
    release();
    await flows.idle();
    // The first address was being cleared when it changed hands again, so it is cleared once more.
    assert.deepEqual(cleared.sort(), ['10.1.1.1', '10.1.1.1', '10.1.1.2']);
  });
});

describe('problem text', () => {
  it('shows control characters in names escaped, so a name cannot rewrite a terminal line', () => {
    const line = formatProblem({ severity: 'warning', object: { kind: 'Pod', namespace: 'x', name: 'a\u001b[2J\nforged' }, field: 'metadata.name', message: 'bad\rname' });
    assert.doesNotMatch(line, /[\u0000-\u001f]/);
    assert.match(line, /a\\u001b\[2J\\u000aforged/);
  });
});
