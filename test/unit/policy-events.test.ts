import assert from 'node:assert/strict';
import { ClusterCache } from '../../daemon/cluster-cache.js';
import { eventMessage, eventName, policyEvent, policyReports, policyVersionOf, reportKey } from '../../daemon/policy-events.js';
import type { PolicyReport } from '../../daemon/policy-events.js';
import { PolicyReporter } from '../../daemon/policy-reporter.js';
import type { Election } from '../../daemon/policy-reporter.js';
import { TokenBucket } from '../../daemon/token-bucket.js';
import { ApiRequestError } from '../../lib/kube/api-client.js';
import type { EventSink } from '../../lib/kube/events.js';
import { silentLogger } from '../../lib/logger.js';
import { makeSettings } from '../../rules/settings.js';
import { policy } from '../support/builders.js';
import { FakeClock } from '../support/fake-clock.js';

/**
 * What the policy reporter says and how often: the reports drawn from the cluster cache's problems,
 * the Event each becomes, one Event per policy version however many reporters there are, and the
 * rate limit on writes. The API server is a fake that, as the real one, refuses a name twice.
 */

type Obj = Record<string, unknown>;

function withMeta(object: Obj, meta: Obj): Obj {
  return { ...object, metadata: { ...(object['metadata'] as Obj), ...meta } };
}

const invalid = withMeta(policy('team-a', 'broken', { podSelector: {}, ingress: {} }), { uid: 'uid-broken', generation: 1 });
const ipv6 = withMeta(policy('team-a', 'v6', { podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: 'fd00::/8' } }, { ipBlock: { cidr: '10.0.0.0/8' } }] }] }), { uid: 'uid-v6', generation: 4 });
/** Twelve rules, each its own port and peer: over the budget of 10 rules these tests use. */
const manyRules = Array.from({ length: 12 }, (_, i) => ({ ports: [{ port: 1000 + i, protocol: 'UDP' }], from: [{ podSelector: { matchLabels: { app: `a${i}` } } }] }));
const overBudget = withMeta(policy('team-b', 'huge', { podSelector: {}, ingress: manyRules }), { uid: 'uid-huge', generation: 2 });
const fine = withMeta(policy('team-a', 'fine', { podSelector: {}, ingress: [{}] }), { uid: 'uid-fine', generation: 1 });

function cacheWith(objects: readonly Obj[]): ClusterCache {
  const settings = makeSettings({ nodeName: 'node-a', policyBudget: { rules: 10 } });
  assert.ok(settings.ok);
  const cache = new ClusterCache(settings.settings, () => undefined, silentLogger);
  for (const object of objects) cache.handler('NetworkPolicy').event('ADDED', object);
  return cache;
}

function report(name: string, tweaks: Partial<PolicyReport> = {}): PolicyReport {
  return { namespace: 'team-a', name, uid: `uid-${name}`, version: 'generation 1', reason: 'PolicyNotFullyEnforced', problems: ['spec.ingress: ingress must be a list of rules'], ...tweaks };
}

describe('policy reports and their Events', () => {
  it('report an invalid or over-budget policy as not fully enforced, and one with IPv6 peers as partly ignored; valid ones not at all', () => {
    const cache = cacheWith([invalid, ipv6, overBudget, fine]);
    const reports = policyReports(cache.allProblems(), cache.policyVersions());
    assert.deepEqual(reports.map((r) => [`${r.namespace}/${r.name}`, r.reason, r.version, r.uid]), [
      ['team-a/broken', 'PolicyNotFullyEnforced', 'generation 1', 'uid-broken'],
      ['team-a/v6', 'PolicyPartlyIgnored', 'generation 4', 'uid-v6'],
      ['team-b/huge', 'PolicyNotFullyEnforced', 'generation 2', 'uid-huge'],
    ]);
    assert.match(reports[0]!.problems.join(), /^spec\.ingress: ingress must be a list of rules/);
    assert.match(reports[1]!.problems.join(), /IPv6 CIDR fd00::\/8 ignored/);
    assert.match(reports[2]!.problems.join(), /over palisade's per-policy budget/);
  });

  it('follow the policy: a new generation is a new report, a fixed or deleted policy none', () => {
    const cache = cacheWith([invalid]);
    const before = policyReports(cache.allProblems(), cache.policyVersions());
    cache.handler('NetworkPolicy').event('MODIFIED', withMeta(invalid, { generation: 2, resourceVersion: '77' }));
    const after = policyReports(cache.allProblems(), cache.policyVersions());
    assert.deepEqual([before[0]!.version, after[0]!.version], ['generation 1', 'generation 2']);
    assert.notEqual(reportKey(before[0]!), reportKey(after[0]!));
    cache.handler('NetworkPolicy').event('MODIFIED', withMeta(fine, { name: 'broken', uid: 'uid-broken', generation: 3 }));
    assert.deepEqual(policyReports(cache.allProblems(), cache.policyVersions()), []);
    cache.handler('NetworkPolicy').event('DELETED', invalid);
    assert.equal(cache.policyVersions().size, 0);
  });

  it('take the version from metadata.generation, else from the resourceVersion, and need a uid', () => {
    assert.deepEqual(policyVersionOf({ uid: 'u', generation: 3, resourceVersion: '9' }), { uid: 'u', version: 'generation 3' });
    assert.deepEqual(policyVersionOf({ uid: 'u', resourceVersion: '9' }), { uid: 'u', version: 'resourceVersion 9' });
    assert.equal(policyVersionOf({ generation: 3 }), null);
    assert.equal(policyVersionOf(undefined), null);
  });

  it('become a core/v1 Warning Event about the policy, as kubectl describe finds it (involvedObject name, namespace, kind, uid)', () => {
    const event = policyEvent(report('broken'), { instance: 'palisade-x7k2p_node-a', node: 'node-a' }, Date.UTC(2025, 0, 2, 3, 4, 5, 678));
    assert.deepEqual(event, {
      apiVersion: 'v1',
      kind: 'Event',
      metadata: { name: eventName(report('broken')), namespace: 'team-a', annotations: { 'palisade.io/policy-version': 'generation 1' } },
      involvedObject: { apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', namespace: 'team-a', name: 'broken', uid: 'uid-broken' },
      type: 'Warning',
      reason: 'PolicyNotFullyEnforced',
      message: 'palisade cannot enforce this policy (generation 1), so it isolates what it selects and grants nothing: spec.ingress: ingress must be a list of rules',
      action: 'Enforce',
      source: { component: 'palisade', host: 'node-a' },
      reportingComponent: 'palisade.io/policy-reporter',
      reportingInstance: 'palisade-x7k2p_node-a',
      eventTime: '2025-01-02T03:04:05.678000Z',
      firstTimestamp: '2025-01-02T03:04:05Z',
      lastTimestamp: '2025-01-02T03:04:05Z',
      count: 1,
    });
    assert.match(eventMessage(report('v6', { reason: 'PolicyPartlyIgnored', problems: ['a', 'b'] })), /^palisade enforces this policy \(generation 1\) without the parts it cannot use: a; b$/);
  });

  it('keep messages and reporting instances within the API server\'s limits', () => {
    const long = report('broken', { problems: Array.from({ length: 100 }, (_, i) => `spec.ingress[${i}]: something long enough to matter`) });
    assert.equal(eventMessage(long).length, 1024);
    const event = policyEvent(long, { instance: 'x'.repeat(300), node: 'n' }, 0);
    assert.equal(String(event['reportingInstance']).length, 128);
  });

  it('are named by policy, uid, version and reason: the same report always gets the same valid name, any change a new one', () => {
    const base = report('broken');
    assert.equal(eventName(base), eventName({ ...base, problems: ['other words'] }));
    const names = new Set([base, { ...base, version: 'generation 2' }, { ...base, reason: 'PolicyPartlyIgnored' as const }, { ...base, uid: 'recreated' }].map(eventName));
    assert.equal(names.size, 4);
    const subdomain = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
    for (const name of ['a'.repeat(253), `${'a'.repeat(236)}-b`, `${'a'.repeat(235)}.-b`, 'x']) {
      const made = eventName(report(name));
      assert.ok(made.length <= 253 && subdomain.test(made), made);
    }
  });
});

/** An API server's Events: a name is taken once (409 AlreadyExists after); failures can be injected. */
class FakeEvents implements EventSink {
  readonly stored = new Map<string, Obj>();
  attempts = 0;
  failNext: number[] = [];

  async create(namespace: string, event: Obj): Promise<'created' | 'exists'> {
    this.attempts++;
    const status = this.failNext.shift();
    if (status !== undefined) throw new ApiRequestError(`/api/v1/namespaces/${namespace}/events`, status, '{}', undefined, 'POST');
    const key = `${namespace}/${(event['metadata'] as Obj)['name'] as string}`;
    if (this.stored.has(key)) return 'exists';
    this.stored.set(key, event);
    return 'created';
  }

  byPolicy(): Map<string, number> {
    const counts = new Map<string, number>();
    for (const e of this.stored.values()) {
      const ref = e['involvedObject'] as Obj;
      const key = `${ref['namespace'] as string}/${ref['name'] as string}`;
      counts.set(key, (counts.get(key) ?? 0) + 1);
    }
    return counts;
  }
}

function reporterOn(clock: FakeClock, sink: EventSink, instance: string, election: { leader: boolean }, counted: string[] = []) {
  const status = () => ({ identity: instance, lease: 'kube-system/palisade-policy-reporter', leader: election.leader, holder: null, lastError: null });
  const e: Election = { get leader() { return election.leader; }, status };
  return new PolicyReporter({ election: e, sink, reporter: { instance, node: instance }, clock, logger: silentLogger, metrics: { eventCreated: (reason) => counted.push(reason) } });
}

describe('the policy reporter', () => {
  it('writes nothing while it does not lead, and everything due once it does', async () => {
    const clock = new FakeClock();
    const sink = new FakeEvents();
    const election = { leader: false };
    const r = reporterOn(clock, sink, 'a', election);
    r.observe([report('one'), report('two')]);
    await clock.advance(10_000);
    assert.equal(sink.attempts, 0);
    assert.deepEqual([r.status().pending, r.status().reported], [2, 0]);
    election.leader = true;
    r.leadershipChanged();
    await clock.advance(0);
    assert.equal(sink.stored.size, 2);
    assert.deepEqual([r.status().pending, r.status().reported], [0, 2]);
  });

  it('writes one Event per policy version however often the same reports are observed, and a new one for a new generation', async () => {
    const clock = new FakeClock();
    const sink = new FakeEvents();
    const counted: string[] = [];
    const r = reporterOn(clock, sink, 'a', { leader: true }, counted);
    for (let i = 0; i < 50; i++) {
      r.observe([report('one'), report('two', { namespace: 'team-b' })]);
      await clock.advance(100);
    }
    assert.deepEqual([...sink.byPolicy()], [['team-a/one', 1], ['team-b/two', 1]]);
    assert.equal(sink.attempts, 2);
    r.observe([report('one', { version: 'generation 2' }), report('two', { namespace: 'team-b' })]);
    await clock.advance(100);
    assert.deepEqual([...sink.byPolicy()], [['team-a/one', 2], ['team-b/two', 1]]);
    assert.deepEqual(counted, ['PolicyNotFullyEnforced', 'PolicyNotFullyEnforced', 'PolicyNotFullyEnforced']);
  });

  it('does not duplicate what an earlier leader wrote: the API server refuses the same name, and that counts as reported', async () => {
    const clock = new FakeClock();
    const sink = new FakeEvents();
    const first = { leader: true };
    const second = { leader: false };
    const countedA: string[] = [];
    const countedB: string[] = [];
    const a = reporterOn(clock, sink, 'a', first, countedA);
    const b = reporterOn(clock, sink, 'b', second, countedB);
    const reports = [report('one'), report('two'), report('three', { reason: 'PolicyPartlyIgnored' })];
    a.observe(reports);
    b.observe(reports);
    await clock.advance(1000);
    first.leader = false;
    second.leader = true;
    b.leadershipChanged();
    await clock.advance(1000);
    assert.deepEqual([...sink.byPolicy().values()], [1, 1, 1]);
    assert.deepEqual([countedA.length, countedB.length], [3, 0]);
    assert.deepEqual(b.status().reported, 3);
    assert.ok([...sink.stored.values()].every((e) => e['reportingInstance'] === 'a'));
  });

  it('writes at most its burst at once and its rate after that, so a thousand bad policies cannot flood the API server', async () => {
    const clock = new FakeClock();
    const sink = new FakeEvents();
    const r = reporterOn(clock, sink, 'a', { leader: true });
    r.observe(Array.from({ length: 1000 }, (_, i) => report(`p${i}`)));
    await clock.advance(0);
    assert.equal(sink.attempts, 20);
    await clock.advance(10_000);
    assert.equal(sink.attempts, 40);
    await clock.advance(500_000);
    assert.equal(sink.stored.size, 1000);
  });

  it('serves namespaces in turn, so one tenant\'s many bad policies do not hold back another\'s', async () => {
    const clock = new FakeClock();
    const sink = new FakeEvents();
    const r = reporterOn(clock, sink, 'a', { leader: true });
    r.observe([...Array.from({ length: 200 }, (_, i) => report(`p${i}`, { namespace: 'noisy' })), report('mine', { namespace: 'quiet' })]);
    await clock.advance(0);
    assert.ok(sink.stored.has(`quiet/${eventName(report('mine', { namespace: 'quiet' }))}`));
  });

  it('retries a failed write with growing backoff, and gives up on one the API server will never take', async () => {
    const clock = new FakeClock();
    const sink = new FakeEvents();
    sink.failNext = [503, 503, 503];
    const r = reporterOn(clock, sink, 'a', { leader: true });
    r.observe([report('one')]);
    await clock.advance(0);
    assert.match(r.status().lastWriteError ?? '', /HTTP 503/);
    await clock.advance(999);
    assert.equal(sink.attempts, 1);
    await clock.advance(1);
    assert.equal(sink.attempts, 2);
    await clock.advance(2000);
    assert.equal(sink.attempts, 3);
    await clock.advance(4000);
    assert.deepEqual([sink.attempts, sink.stored.size, r.status().lastWriteError], [4, 1, null]);
    sink.failNext = [404];
    r.observe([report('one'), report('gone', { namespace: 'deleted' })]);
    await clock.advance(60_000);
    assert.deepEqual([sink.attempts, r.status().pending], [5, 0]);
  });

  it('writes nothing after stop', async () => {
    const clock = new FakeClock();
    const sink = new FakeEvents();
    const r = reporterOn(clock, sink, 'a', { leader: true });
    await r.stop();
    r.observe([report('one')]);
    await clock.advance(10_000);
    assert.equal(sink.attempts, 0);
  });
});

describe('the token bucket', () => {
  it('gives its burst at once, then one token per 1/rate seconds, never more than the burst', () => {
    let now = 0;
    const bucket = new TokenBucket(2, 3, () => now);
    assert.deepEqual([bucket.take(), bucket.take(), bucket.take(), bucket.take()], [true, true, true, false]);
    assert.equal(bucket.waitMs(), 500);
    now += 499;
    assert.equal(bucket.take(), false);
    now += 1;
    assert.equal(bucket.take(), true);
    now += 3_600_000;
    assert.deepEqual([bucket.take(), bucket.take(), bucket.take(), bucket.take()], [true, true, true, false]);
    assert.throws(() => new TokenBucket(0, 1, () => 0), RangeError);
  });
});
