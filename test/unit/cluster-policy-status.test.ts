import assert from 'node:assert/strict';
import { ClusterCache } from '../../daemon/cluster-cache.js';
import type { ResourceKind } from '../../daemon/cluster-cache.js';
import { ACCEPTED, conditionReports, desiredCondition, saysAlready, statusPatch } from '../../daemon/cluster-policy-conditions.js';
import { ConditionWriter } from '../../daemon/cluster-policy-status-writer.js';
import type { Election } from '../../daemon/policy-reporter.js';
import { ApiRequestError } from '../../lib/kube/api-client.js';
import type { ClusterPolicyStatusSink } from '../../lib/kube/cluster-policy-status.js';
import { applyJsonPatch, jsonEqual } from '../../lib/lab/json-patch.js';
import { silentLogger } from '../../lib/logger.js';
import { makeSettings } from '../../rules/settings.js';
import { parseClusterPolicy } from '../../rules/cluster-policy.js';
import { clusterPolicy, namespace, pod } from '../support/builders.js';
import { FakeClock } from '../support/fake-clock.js';

/**
 * ClusterNetworkPolicies in the daemon: the cache keeping them (added, changed, deleted, forgotten
 * when their CRD goes), the Accepted condition each should carry, and the writer that puts it there
 * from the elected daemon only, once per change, at a bounded rate.
 */

type Obj = Record<string, unknown>;

const denyAll = (name: string, priority = 10, tier = 'Admin'): Obj => clusterPolicy(name, { tier, priority, subject: { namespaces: {} }, ingress: [{ name: 'no-one', action: 'Deny', from: [{ namespaces: {} }] }] });
const invalid = (name: string): Obj => clusterPolicy(name, { tier: 'Middle', priority: 10, subject: { namespaces: {} }, ingress: [] });
const domains = (name: string): Obj => clusterPolicy(name, { tier: 'Baseline', priority: 5, subject: { namespaces: {} }, egress: [{ action: 'Accept', to: [{ domainNames: ['example.com'] }] }] });

function newCache(changes: ResourceKind[] = []): ClusterCache {
  const settings = makeSettings({ nodeName: 'node-a' });
  assert.ok(settings.ok);
  return new ClusterCache(settings.settings, (kind) => changes.push(kind), silentLogger);
}

/** The API server's side: objects with uid, generation, resourceVersion; status patches as the real one applies them. */
class FakeStatusStore implements ClusterPolicyStatusSink {
  readonly objects = new Map<string, Obj>();
  patches = 0;
  failNext: number[] = [];
  private rv = 100;

  put(object: Obj, status?: Obj): Obj {
    const meta = object['metadata'] as Obj;
    const name = meta['name'] as string;
    const before = this.objects.get(name);
    const beforeMeta = before?.['metadata'] as Obj | undefined;
    const specChanged = before === undefined || !jsonEqual(before['spec'], object['spec']);
    const kept = status ?? before?.['status'];
    const stored = {
      ...object,
      metadata: { ...meta, uid: beforeMeta?.['uid'] ?? `uid-${name}`, generation: ((beforeMeta?.['generation'] as number | undefined) ?? 0) + (specChanged ? 1 : 0), resourceVersion: String(++this.rv) },
      ...(kept === undefined ? {} : { status: kept }),
    };
    this.objects.set(name, stored);
    return stored;
  }

  async patchStatus(name: string, patch: readonly unknown[]): Promise<void> {
    this.patches++;
    const path = `/apis/policy.networking.k8s.io/v1alpha2/clusternetworkpolicies/${name}/status`;
    const fail = this.failNext.shift();
    if (fail !== undefined) throw new ApiRequestError(path, fail, '{}', undefined, 'PATCH');
    const stored = this.objects.get(name);
    if (stored === undefined) throw new ApiRequestError(path, 404, '{"reason":"NotFound"}', undefined, 'PATCH');
    let patched: Obj;
    try {
      patched = applyJsonPatch(stored, patch);
    } catch (error) {
      throw new ApiRequestError(path, 422, JSON.stringify({ reason: 'Invalid', message: String(error) }), undefined, 'PATCH');
    }
    // The status subresource: nothing but the status may change.
    this.objects.set(name, { ...stored, status: patched['status'], metadata: { ...(stored['metadata'] as Obj), resourceVersion: String(++this.rv) } });
  }

  condition(name: string): Obj | undefined {
    const status = this.objects.get(name)?.['status'] as { conditions?: Obj[] } | undefined;
    return status?.conditions?.find((c) => c['type'] === ACCEPTED);
  }
}

/** One daemon: its cache, fed what the watch would bring, and its writer. */
function daemonOn(clock: FakeClock, store: FakeStatusStore, election: { leader: boolean }, rate?: { perSecond: number; burst: number }) {
  const cache = newCache();
  const e: Election = { get leader() { return election.leader; }, status: () => ({ identity: 'a', lease: 'kube-system/palisade-policy-reporter', leader: election.leader, holder: null, lastError: null }) };
  const written: string[] = [];
  const writer = new ConditionWriter({ election: e, sink: store, clock, logger: silentLogger, onWritten: (reason) => written.push(reason), ...(rate === undefined ? {} : { rate }) });
  const handler = cache.handler('ClusterNetworkPolicy');
  /** The watch catches up with the store, and the daemon reports. */
  const sync = () => {
    handler.beginList();
    handler.listPage([...store.objects.values()]);
    handler.endList();
    writer.observe(conditionReports(cache.clusterPolicyObjects(), cache.clusterPolicies(), cache.allProblems()));
  };
  return { cache, writer, written, sync };
}

describe('ClusterNetworkPolicies in the cluster cache', () => {
  it('keeps them by name as they are added, changed and deleted, feeds the compiler, and reports each change', () => {
    const changes: ResourceKind[] = [];
    const cache = newCache(changes);
    const handler = cache.handler('ClusterNetworkPolicy');
    handler.beginList();
    handler.listPage([denyAll('guard'), domains('loose')]);
    handler.endList();
    assert.deepEqual(cache.clusterPolicies().map((p) => `${p.name} ${p.tier} ${p.priority}`), ['guard Admin 10', 'loose Baseline 5']);
    assert.equal(cache.compiler.clusterPolicy('guard')?.ingress[0]?.name, 'no-one');
    assert.deepEqual(cache.snapshot().clusterPolicies.map((p) => p.name), ['guard', 'loose']);
    assert.deepEqual(cache.allProblems().map((p) => `${p.severity} ${p.object.kind} ${p.object.name}`), ['warning ClusterNetworkPolicy loose']);
    handler.event('MODIFIED', denyAll('guard', 20));
    assert.equal(cache.compiler.clusterPolicy('guard')?.priority, 20);
    handler.event('MODIFIED', denyAll('guard', 20));
    handler.event('DELETED', domains('loose'));
    assert.equal(cache.compiler.clusterPolicy('loose'), undefined);
    assert.deepEqual(cache.allProblems(), []);
    assert.deepEqual(changes, ['ClusterNetworkPolicy', 'ClusterNetworkPolicy', 'ClusterNetworkPolicy'], 'the same policy again changed nothing');
    assert.equal(cache.count('ClusterNetworkPolicy'), 1);
  });

  it('drops one missing from a relist, and forgets every one (problems too) when they stop being served', () => {
    const changes: ResourceKind[] = [];
    const cache = newCache(changes);
    const handler = cache.handler('ClusterNetworkPolicy');
    handler.beginList();
    handler.listPage([denyAll('a'), denyAll('b'), invalid('bad')]);
    handler.endList();
    handler.beginList();
    handler.listPage([denyAll('a'), invalid('bad')]);
    handler.endList();
    assert.deepEqual(cache.clusterPolicies().map((p) => p.name), ['a', 'bad']);
    assert.equal(cache.clusterPolicies().find((p) => p.name === 'bad')?.failed, true);
    assert.ok(cache.allProblems().some((p) => p.object.name === 'bad' && p.severity === 'error'));
    changes.length = 0;
    assert.equal(cache.forgetAll('ClusterNetworkPolicy'), true);
    assert.deepEqual([cache.clusterPolicies(), cache.allProblems(), [...cache.clusterPolicyObjects().keys()], changes], [[], [], [], ['ClusterNetworkPolicy']]);
    assert.equal(cache.compiler.clusterPolicy('a'), undefined);
    assert.equal(cache.forgetAll('ClusterNetworkPolicy'), false, 'nothing left: no change');
  });

  it('names the ones selecting each local pod on its endpoint, Admin before Baseline', () => {
    const cache = newCache();
    cache.handler('Namespace').event('ADDED', namespace('default'));
    cache.handler('Pod').event('ADDED', pod('default', 'web', { ip: '10.1.1.5' }));
    for (const p of [denyAll('z-admin', 1), denyAll('a-admin', 5), clusterPolicy('base', { tier: 'Baseline', priority: 0, subject: { namespaces: {} }, ingress: [{ action: 'Deny', from: [{ namespaces: {} }] }] })]) cache.handler('ClusterNetworkPolicy').event('ADDED', p);
    const endpoint = cache.compiler.build().endpoints.find((e) => e.name === 'web');
    assert.deepEqual([endpoint?.ingressClusterPolicies, endpoint?.egressClusterPolicies], [['z-admin', 'a-admin', 'base'], []]);
  });
});

describe('the Accepted condition', () => {
  const object = (status: Obj | null = null) => ({ name: 'guard', uid: 'u', resourceVersion: '7', generation: 3, status });

  it('is True for a policy palisade understands, False with Invalid or PartiallySupported and the problems otherwise', () => {
    const cache = newCache();
    for (const p of [denyAll('fine'), invalid('bad'), domains('loose')]) cache.handler('ClusterNetworkPolicy').event('ADDED', { ...p, metadata: { ...(p['metadata'] as Obj), uid: `uid-${String((p['metadata'] as Obj)['name'])}`, generation: 2, resourceVersion: '9' } });
    const reports = conditionReports(cache.clusterPolicyObjects(), cache.clusterPolicies(), cache.allProblems());
    assert.deepEqual(reports.map((r) => [r.object.name, r.desired.status, r.desired.reason, r.desired.observedGeneration]), [
      ['bad', 'False', 'Invalid', 2],
      ['fine', 'True', 'Accepted', 2],
      ['loose', 'False', 'PartiallySupported', 2],
    ]);
    assert.match(reports[0]!.desired.message, /cannot use this ClusterNetworkPolicy \(generation 2\).*spec\.tier: "Middle" is not "Admin" or "Baseline"/);
    assert.match(reports[2]!.desired.message, /domainNames peers \(example\.com\) are not supported/);
  });

  it('is patched in with a resourceVersion test, keeping other implementations\' conditions and, while its status holds, its transition time', () => {
    const desired = desiredCondition(parseClusterPolicy(denyAll('guard')).record!, [], 3);
    const other = { type: 'example.com/Programmed', status: 'True', reason: 'Done', message: '', lastTransitionTime: '2020-01-01T00:00:00Z' };
    const old = { ...desired, message: 'older words', observedGeneration: 2, lastTransitionTime: '2021-01-01T00:00:00Z' };
    const patch = statusPatch({ object: object({ conditions: [other, old] }), desired }, Date.parse('2025-06-01T12:00:00.500Z'));
    assert.deepEqual(patch, [
      { op: 'test', path: '/metadata/resourceVersion', value: '7' },
      { op: 'add', path: '/status', value: { conditions: [other, { ...desired, lastTransitionTime: '2021-01-01T00:00:00Z' }] } },
    ]);
    const flipped = statusPatch({ object: object({ conditions: [{ ...old, status: 'False' }] }), desired }, Date.parse('2025-06-01T12:00:00.500Z'));
    assert.equal(((flipped[1]!['value'] as Obj)['conditions'] as Obj[])[0]!['lastTransitionTime'], '2025-06-01T12:00:00Z');
    assert.equal(saysAlready(object({ conditions: [other, { ...desired, lastTransitionTime: 'x' }] }), desired), true);
    assert.equal(saysAlready(object({ conditions: [old] }), desired), false);
  });
});

describe('the ClusterNetworkPolicy status writer', () => {
  it('writes once per change, however often it is told, and again for a new generation with its observedGeneration', async () => {
    const clock = new FakeClock();
    const store = new FakeStatusStore();
    store.put(denyAll('guard'));
    const d = daemonOn(clock, store, { leader: true });
    for (let i = 0; i < 20; i++) {
      d.sync();
      await clock.advance(100);
    }
    assert.equal(store.patches, 1);
    assert.deepEqual([store.condition('guard')?.['status'], store.condition('guard')?.['observedGeneration']], ['True', 1]);
    store.put(denyAll('guard'));
    d.sync();
    await clock.advance(100);
    assert.equal(store.patches, 1, 'the same spec again: the same generation, nothing to write');
    store.put(invalid('guard'));
    for (let i = 0; i < 5; i++) {
      d.sync();
      await clock.advance(100);
    }
    assert.equal(store.patches, 2);
    assert.deepEqual([store.condition('guard')?.['status'], store.condition('guard')?.['reason'], store.condition('guard')?.['observedGeneration']], ['False', 'Invalid', 2]);
    assert.deepEqual(d.written, ['Accepted', 'Invalid']);
    assert.deepEqual(d.writer.status(), { current: 1, pending: 0, lastWriteError: null });
  });

  it('writes only as the leader; a new leader writes nothing its predecessor wrote', async () => {
    const clock = new FakeClock();
    const store = new FakeStatusStore();
    for (const name of ['a', 'b', 'c']) store.put(denyAll(name));
    const first = { leader: false };
    const second = { leader: false };
    const a = daemonOn(clock, store, first);
    const b = daemonOn(clock, store, second);
    a.sync();
    b.sync();
    await clock.advance(5000);
    assert.equal(store.patches, 0);
    assert.equal(a.writer.status().pending, 3);
    first.leader = true;
    a.writer.leadershipChanged();
    await clock.advance(0);
    assert.equal(store.patches, 3);
    first.leader = false;
    second.leader = true;
    a.sync();
    b.sync();
    b.writer.leadershipChanged();
    await clock.advance(5000);
    assert.equal(store.patches, 3);
    assert.deepEqual(b.written, []);
  });

  it('writes at most its burst at once and its rate after that', async () => {
    const clock = new FakeClock();
    const store = new FakeStatusStore();
    for (let i = 0; i < 100; i++) store.put(denyAll(`p${i}`));
    const d = daemonOn(clock, store, { leader: true }, { perSecond: 2, burst: 20 });
    d.sync();
    await clock.advance(0);
    assert.equal(store.patches, 20);
    await clock.advance(10_000);
    assert.equal(store.patches, 40);
    await clock.advance(60_000);
    assert.equal(store.patches, 100);
  });

  it('never overwrites a status written since the watch showed it: the refused write waits for the newer object', async () => {
    const clock = new FakeClock();
    const store = new FakeStatusStore();
    store.put(denyAll('guard'));
    const d = daemonOn(clock, store, { leader: true });
    d.sync();
    const other = { type: 'example.com/Programmed', status: 'True', reason: 'Done', message: '', lastTransitionTime: '2020-01-01T00:00:00Z' };
    // Another controller writes a condition before palisade's write goes out.
    store.put(denyAll('guard'), { conditions: [other] });
    await clock.advance(0);
    assert.equal(store.patches, 1);
    assert.equal(store.condition('guard'), undefined);
    await clock.advance(10_000);
    assert.equal(store.patches, 1, 'stale: not retried until the watch brings the newer object');
    d.sync();
    await clock.advance(0);
    assert.equal(store.patches, 2);
    assert.deepEqual(((store.objects.get('guard')?.['status'] as { conditions: Obj[] }).conditions).map((c) => c['type']), ['example.com/Programmed', 'Accepted']);
  });

  it('retries other failures with backoff, and drops a policy that is gone', async () => {
    const clock = new FakeClock();
    const store = new FakeStatusStore();
    store.put(denyAll('guard'));
    store.failNext = [503, 503];
    const d = daemonOn(clock, store, { leader: true });
    d.sync();
    await clock.advance(0);
    assert.match(d.writer.status().lastWriteError ?? '', /HTTP 503/);
    await clock.advance(999);
    assert.equal(store.patches, 1);
    await clock.advance(1);
    assert.equal(store.patches, 2);
    await clock.advance(2000);
    assert.equal(store.patches, 3);
    assert.equal(store.condition('guard')?.['status'], 'True');
    store.put(denyAll('gone'));
    d.sync();
    store.objects.delete('gone');
    await clock.advance(0);
    await clock.advance(60_000);
    assert.equal(store.patches, 4, 'a 404 is not retried');
  });
});
