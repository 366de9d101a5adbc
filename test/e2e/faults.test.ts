/**
 * Faults on the two-node lab cluster, with traffic watched while they happen: a daemon killed with
 * SIGKILL, the API server stopped and restarted, palisade's chains flushed by hand. Each watched pair
 * is probed every 50 ms (250 ms timeout) by the pods' probe agents, and every probe is recorded, so a
 * single denied probe that passes fails the case.
 */
import assert from 'node:assert/strict';
import { policy } from '../support/builders.js';
import { POLICY_TABLE } from '../../rules/dataplane.js';
import { assertNoUnexpected, describePair, NODE_A, NODE_B, onAllPorts, Reachability, summary, TCP_80, UDP_80, useE2eCluster } from '../support/e2e-cluster.js';
import type { E2eCluster, PairRecord, WatchedPair } from '../support/e2e-cluster.js';

type Obj = Record<string, unknown>;

/** How long each watched probe waits (watchPairs' default). */
const WATCH_TIMEOUT_MS = 250;
/** The lab's daemons run with --refresh-interval 2s. */
const REFRESH_INTERVAL_MS = 2000;

const denyAllIngress = (ns: string): Obj => policy(ns, 'deny-all-ingress', { podSelector: {}, policyTypes: ['Ingress'] });

/** Each pair on TCP 80 and UDP 80. */
function pairs(list: readonly [from: string, to: string, allowed: boolean][]): WatchedPair[] {
  return list.flatMap(([from, to, allowed]) => [TCP_80, UDP_80].map((t) => ({ ...t, from, to, allowed })));
}

/** Pairs around a deny-all ingress in x: into x on node-a and node-b, within and across nodes, and controls. */
const AROUND_DENY_X = pairs([
  ['y/a', 'x/a', false], // node-a to node-a
  ['x/c', 'x/b', false], // node-b to node-a
  ['x/a', 'x/c', false], // node-a to node-b
  ['y/c', 'x/c', false], // node-b to node-b
  ['x/a', 'y/a', true], // an isolated pod still sends (its echoes come back as replies)
  ['y/b', 'y/c', true], // across nodes, untouched
  ['x/c', 'y/c', true],
]);

async function waitUntil(what: string, timeoutMs: number, check: () => Promise<boolean>): Promise<number> {
  const started = Date.now();
  for (;;) {
    if (await check()) return Date.now() - started;
    if (Date.now() - started > timeoutMs) assert.fail(`${what}: not within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function backendOf(c: E2eCluster, nodeName: string): Promise<string> {
  const backend = (await c.status(nodeName))['backend'] as { name?: string } | null;
  assert.ok(backend?.name === 'nft' || backend?.name === 'legacy', `status of ${nodeName} names an iptables backend: ${JSON.stringify(backend)}`);
  return backend.name;
}

/** palisade's lines of the node's table palisade keeps its rules in, packet counters left out. */
async function palisadeRules(c: E2eCluster, nodeName: string, backend: string): Promise<string[]> {
  const saved = await c.lab.node(nodeName).netns.run([`iptables-${backend}-save`, '-t', POLICY_TABLE]);
  return saved.split('\n').filter((l) => /(^|[\s:])pal-/.test(l)).map((l) => l.replace(/\[\d+:\d+\]/g, '[]'));
}

async function driftRepairs(c: E2eCluster, nodeName: string): Promise<Record<string, number>> {
  return ((await c.status(nodeName))['driftRepairs'] ?? {}) as Record<string, number>;
}

describe('Faults: enforcement outlives daemon crashes, API server outages and tampering', function () {
  this.timeout(300_000);
  const cluster = useE2eCluster({ prefix: 'paltest-e2e-fault' });
  const fresh = async (): Promise<E2eCluster> => {
    await cluster().reset();
    return cluster();
  };

  it('Daemons killed with SIGKILL leave their rules enforcing: no denied probe passes, and no allowed one fails, until they are restarted and ready.', async () => {
    const c = await fresh();
    await c.applyPolicies(denyAllIngress('x'));
    const expected = new Reachability(true).expectAllIngress('x/*', false);
    await c.expectMatrices(onAllPorts(expected));
    const backend = await backendOf(c, NODE_A);
    const rulesBefore = { a: await palisadeRules(c, NODE_A, backend), b: await palisadeRules(c, NODE_B, backend) };

    const watch = c.watchPairs(AROUND_DENY_X);
    let killedAt = 0;
    let restartedAt = 0;
    let readyAt = 0;
    try {
      await new Promise((resolve) => setTimeout(resolve, 300));
      await Promise.all([c.lab.stopDaemon(NODE_A, 'SIGKILL'), c.lab.stopDaemon(NODE_B, 'SIGKILL')]);
      killedAt = watch.elapsed();
      // Dead for a while with traffic flowing: the rules are what the daemons left, untouched.
      await new Promise((resolve) => setTimeout(resolve, 1500));
      assert.deepEqual(await palisadeRules(c, NODE_A, backend), rulesBefore.a, 'node-a rules while its daemon is dead');
      assert.deepEqual(await palisadeRules(c, NODE_B, backend), rulesBefore.b, 'node-b rules while its daemon is dead');
      restartedAt = watch.elapsed();
      await Promise.all([c.lab.startDaemon(NODE_A), c.lab.startDaemon(NODE_B)]);
      await Promise.all([c.lab.waitReady(NODE_A), c.lab.waitReady(NODE_B)]);
      readyAt = watch.elapsed();
      await new Promise((resolve) => setTimeout(resolve, 700));
    } finally {
      const records = await watch.stop();
      console.log(`        killed at ${killedAt} ms, restarted at ${restartedAt} ms, both ready at ${readyAt} ms, watch ended at ${watch.elapsed()} ms`);
      assertNoUnexpected(records, `killed at ${killedAt} ms, restarted at ${restartedAt} ms, ready at ${readyAt} ms`);
    }
    assert.deepEqual(await palisadeRules(c, NODE_A, backend), rulesBefore.a, 'the restarted daemon on node-a adopted the same rules');
    assert.deepEqual(await palisadeRules(c, NODE_B, backend), rulesBefore.b, 'the restarted daemon on node-b adopted the same rules');
    await c.expectMatrices(onAllPorts(expected));
  });

  it('A policy change made while a daemon is dead is enforced once it is back, without opening what stayed denied.', async () => {
    const c = await fresh();
    await c.applyPolicies(denyAllIngress('x'));
    await c.expectMatrices(onAllPorts(new Reachability(true).expectAllIngress('x/*', false)));
    const watch = c.watchPairs(pairs([['y/a', 'x/a', false], ['y/c', 'x/c', false], ['x/a', 'z/a', true]]));
    try {
      await c.lab.stopDaemon(NODE_A, 'SIGKILL');
      // While node-a's daemon is dead: x stays denied, and y gets a deny-all as well.
      await c.applyPolicies(denyAllIngress('y'));
      await c.lab.startDaemon(NODE_A);
      await c.lab.waitReady(NODE_A);
    } finally {
      assertNoUnexpected(await watch.stop(), 'node-a daemon killed, y policy applied, daemon restarted');
    }
    await c.expectMatrices(onAllPorts(new Reachability(true).expectAllIngress(['x/*', 'y/*'], false)));
  });

  it('While the API server is down the rules stay in force, and a policy change made once it is back converges on both nodes.', async () => {
    const c = await fresh();
    await c.applyPolicies(denyAllIngress('x'));
    await c.expectMatrices(onAllPorts(new Reachability(true).expectAllIngress('x/*', false)));
    const watchesBefore = (await c.apiStats()).openWatches;
    assert.ok(watchesBefore >= 8, `both daemons watch 4 resources: ${watchesBefore} open watches`);

    const watch = c.watchPairs(AROUND_DENY_X);
    let backAt = 0;
    let rewatchedAt = 0;
    try {
      await new Promise((resolve) => setTimeout(resolve, 300));
      const downAt = watch.elapsed();
      await c.lab.restartApiServer(3000);
      backAt = watch.elapsed();
      // The API server comes back with its objects and resourceVersions, as a real one does: both daemons
      // watch it again from where they were.
      await waitUntil('both daemons watching the restarted API server', 30_000, async () => (await c.apiStats()).openWatches >= watchesBefore);
      rewatchedAt = watch.elapsed();
      console.log(`        API server down at ${downAt} ms, back at ${backAt} ms, watched again at ${rewatchedAt} ms`);
    } finally {
      assertNoUnexpected(await watch.stop(), `API server back at ${backAt} ms, watched again at ${rewatchedAt} ms`);
    }
    for (const nodeName of [NODE_A, NODE_B]) {
      const watches = (await c.status(nodeName))['watches'] as { resource: string; failures: number }[];
      assert.ok(watches.some((w) => w.failures > 0), `the daemon on ${nodeName} saw its watches fail: ${JSON.stringify(watches)}`);
    }

    await c.deletePolicy('x', 'deny-all-ingress');
    await c.applyPolicies(denyAllIngress('y'));
    await c.expectMatrices(onAllPorts(new Reachability(true).expectAllIngress('y/*', false)));
  });

  /** A policy admitting only x/b into x/a: node-a gets an endpoint chain for x/a and one policy chain. */
  const admitOnlyXb = policy('x', 'admit-b', { podSelector: { matchLabels: { pod: 'a' } }, policyTypes: ['Ingress'], ingress: [{ from: [{ podSelector: { matchLabels: { pod: 'b' } } }] }] });
  const AROUND_ADMIT_XB = pairs([
    ['y/a', 'x/a', false],
    ['x/c', 'x/a', false],
    ['z/b', 'x/a', false],
    ['x/a', 'y/c', true],
    ['y/a', 'x/b', true],
  ]);
  const XB_TO_XA = pairs([['x/b', 'x/a', true]]);

  async function flushAndWatch(c: E2eCluster, chainOf: (backend: string) => Promise<string>): Promise<{ records: PairRecord[]; flushedAt: number; restoredAt: number; repaired: Record<string, number>; chain: string }> {
    const backend = await backendOf(c, NODE_A);
    const chain = await chainOf(backend);
    const before = await driftRepairs(c, NODE_A);
    const hasRules = async (): Promise<boolean> => (await palisadeRules(c, NODE_A, backend)).some((l) => l.startsWith(`-A ${chain} `));
    assert.ok(await hasRules(), `${chain} has rules before the flush`);
    const watch = c.watchPairs([...AROUND_ADMIT_XB, ...XB_TO_XA], { timeoutMs: WATCH_TIMEOUT_MS });
    let flushedAt = 0;
    let restoredAt = 0;
    let records: PairRecord[];
    try {
      await new Promise((resolve) => setTimeout(resolve, 300));
      // From the moment the flush starts: the command itself takes a few ms.
      flushedAt = watch.elapsed();
      await c.lab.node(NODE_A).netns.run([`iptables-${backend}`, '-w', '-t', POLICY_TABLE, '-F', chain]);
      await waitUntil(`${chain} restored`, REFRESH_INTERVAL_MS + 3000, hasRules);
      restoredAt = watch.elapsed();
      await new Promise((resolve) => setTimeout(resolve, 700));
    } finally {
      records = await watch.stop();
      console.log(`        flushed ${chain} at ${flushedAt} ms, restored by ${restoredAt} ms (${restoredAt - flushedAt} ms later)\n${summary(records).replace(/^/gm, '          ')}`);
    }
    const after = await driftRepairs(c, NODE_A);
    const repaired = Object.fromEntries(Object.entries(after).map(([kind, n]) => [kind, n - (before[kind] ?? 0)]).filter(([, n]) => (n as number) > 0));
    return { records, flushedAt, restoredAt, repaired, chain };
  }

  it('A policy chain flushed by hand is restored within the refresh interval and counted as drift, and no denied probe passes meanwhile.', async () => {
    const c = await fresh();
    await c.applyPolicies(admitOnlyXb);
    await c.expectMatrices(onAllPorts(new Reachability(true).expectAllIngress('x/a', false).expect('x/b', 'x/a', true)));
    const result = await flushAndWatch(c, async (backend) => {
      const chains = (await palisadeRules(c, NODE_A, backend)).filter((l) => l.startsWith(':pal-pi-')).map((l) => l.slice(1).split(' ')[0]!);
      assert.equal(chains.length, 1, `one ingress policy chain on node-a: ${chains.join(', ')}`);
      return chains[0]!;
    });
    assert.ok(result.restoredAt - result.flushedAt <= REFRESH_INTERVAL_MS + 1500, `restored ${result.restoredAt - result.flushedAt} ms after the flush`);
    assert.ok((result.repaired['chain-modified'] ?? 0) >= 1, `the repair is counted in driftRepairs: ${JSON.stringify(result.repaired)}`);
    // Flushing an allow list only takes away: the denied pairs stay denied throughout.
    assertNoUnexpected(result.records.filter((r) => !XB_TO_XA.includes(r.pair)), `flushed at ${result.flushedAt} ms, restored by ${result.restoredAt} ms`);
    // x/b -> x/a loses its allow until the repair, and has it back from then on.
    for (const r of result.records.filter((x) => XB_TO_XA.includes(x.pair))) {
      const late = r.unexpected.filter((u) => u.atMs > result.restoredAt);
      assert.deepEqual(late, [], `${describePair(r.pair)} passes again once the chain is restored`);
    }
    await c.expectMatrices(onAllPorts(new Reachability(true).expectAllIngress('x/a', false).expect('x/b', 'x/a', true)));
  });

  it('An endpoint chain flushed by hand is restored within the refresh interval and counted as drift; from then on its pod is closed again.', async () => {
    const c = await fresh();
    await c.applyPolicies(admitOnlyXb);
    await c.expectMatrices(onAllPorts(new Reachability(true).expectAllIngress('x/a', false).expect('x/b', 'x/a', true)));
    const result = await flushAndWatch(c, async () => {
      const endpoints = (await c.status(NODE_A))['endpoints'] as { namespace: string; name: string; chains: { ingress: string | null } }[];
      const chain = endpoints.find((e) => e.namespace === 'x' && e.name === 'a')?.chains.ingress;
      assert.ok(typeof chain === 'string' && chain.startsWith('pal-'), `x/a has an ingress chain on node-a: ${JSON.stringify(endpoints)}`);
      return chain;
    });
    assert.ok(result.restoredAt - result.flushedAt <= REFRESH_INTERVAL_MS + 1500, `restored ${result.restoredAt - result.flushedAt} ms after the flush`);
    assert.ok((result.repaired['chain-modified'] ?? 0) >= 1, `the repair is counted in driftRepairs: ${JSON.stringify(result.repaired)}`);
    // The flush removed x/a's drop: denied probes pass until the repair (inherent), never after it. A
    // probe is in flight for its whole timeout (UDP resends meanwhile), so one started shortly before
    // the flush may pass too.
    for (const r of result.records) {
      const late = r.unexpected.filter((u) => u.atMs > result.restoredAt || u.atMs + WATCH_TIMEOUT_MS < result.flushedAt);
      assert.deepEqual(late, [], `${describePair(r.pair)}: nothing unexpected before the flush or after the repair (flushed at ${result.flushedAt} ms, restored by ${result.restoredAt} ms)`);
    }
    await c.expectMatrices(onAllPorts(new Reachability(true).expectAllIngress('x/a', false).expect('x/b', 'x/a', true)));
  });
});
