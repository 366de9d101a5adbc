/**
 * The drop log on the conformance cluster (namespaces x, y, z; pods a and b on node-a, c on node-b;
 * real daemons, each reading NFLOG in its node's network namespace): what a refused connection leaves
 * at /drops, in the daemon's log and in its metrics; that allowed traffic and replies leave nothing;
 * audit policies; and a flood that the rate limits hold back without starving other pods' records.
 */
import assert from 'node:assert/strict';
import { policy } from '../support/builders.js';
import { NODE_A, NODE_B, Reachability, TCP_80, useE2eCluster } from '../support/e2e-cluster.js';
import type { E2eCluster } from '../support/e2e-cluster.js';

type Obj = Record<string, unknown>;

interface End {
  readonly ip: string;
  readonly namespace?: string;
  readonly pod?: string;
}

interface DropRecord {
  readonly time: string;
  readonly verdict: 'denied' | 'would-deny';
  readonly direction: 'ingress' | 'egress';
  readonly protocol: string;
  readonly port: number | null;
  readonly source: End;
  readonly destination: End;
  readonly policies: readonly string[];
}

interface Drops {
  readonly drops: readonly DropRecord[];
  readonly lost: number;
}

const audited = (object: Obj): Obj => ({ ...object, metadata: { ...(object['metadata'] as Obj), annotations: { 'palisade.io/audit': 'true' } } });
const denyAll = policy('x', 'deny-all', { podSelector: {}, policyTypes: ['Ingress', 'Egress'] });
const denyAllIngress = policy('x', 'deny-all-ingress', { podSelector: {}, policyTypes: ['Ingress'] });
const allowFromY = policy('x', 'allow-from-y', { podSelector: {}, policyTypes: ['Ingress'], ingress: [{ from: [{ namespaceSelector: { matchLabels: { ns: 'y' } } }] }] });

async function drops(c: E2eCluster, node: string, query = ''): Promise<Drops> {
  const { status, body } = await c.lab.status(node, `/drops${query}`);
  assert.equal(status, 200, `GET /drops${query} on ${node}: ${body.slice(0, 300)}`);
  return JSON.parse(body) as Drops;
}

/** Polls /drops until `find` picks records out; records reach the daemon a moment after the drop. */
async function waitForRecords(c: E2eCluster, node: string, query: string, find: (d: Drops) => readonly DropRecord[], what: string, deadlineMs = 10_000): Promise<DropRecord[]> {
  const deadline = Date.now() + deadlineMs;
  let last: Drops = { drops: [], lost: 0 };
  for (;;) {
    last = await drops(c, node, query);
    const found = find(last);
    if (found.length > 0) return [...found];
    if (Date.now() > deadline) {
      const reader = c.daemonLogs(node, 3000).filter((l) => /ulogd|NFLOG|drop log/i.test(l)).slice(-10);
      assert.fail(`${what}: not at /drops${query} on ${node} within ${deadlineMs} ms; it holds ${JSON.stringify(last.drops.slice(0, 5))}; the reader said: ${reader.join('\n')}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

const between = (from: string, to: string) => (r: DropRecord): boolean =>
  `${r.source.namespace}/${r.source.pod}` === from && `${r.destination.namespace}/${r.destination.pod}` === to;

/** Probes until the pair's outcome is the expected one: policies reach the daemons asynchronously. */
async function converge(c: E2eCluster, from: string, to: string, target: { proto: 'tcp' | 'udp'; port: number }, allowed: boolean): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (((await c.probe(from, to, target)) === 'ok') !== allowed) {
    if (Date.now() > deadline) assert.fail(`${from} -> ${to} ${target.proto}/${target.port} never became ${allowed ? 'allowed' : 'denied'}`);
  }
}

describe('Drop log: refused connections recorded with the pods and policies, audit policies, floods (two nodes, real daemons)', function () {
  this.timeout(300_000);
  const cluster = useE2eCluster({ prefix: 'paltest-droplog' });
  const fresh = async (): Promise<E2eCluster> => {
    await cluster().reset();
    return cluster();
  };

  it('A refused connection gets one record at /drops on the refusing pod\'s node, naming both pods, the protocol and port, the side that refused and its policies; also a log line and the counters.', async () => {
    const c = await fresh();
    await c.applyPolicies(denyAll, allowFromY);
    await converge(c, 'z/a', 'x/a', TCP_80, false);
    await converge(c, 'y/a', 'x/a', TCP_80, true);

    const [intoA] = await waitForRecords(c, NODE_A, '?pod=x/a', (d) => d.drops.filter(between('z/a', 'x/a')), 'z/a -> x/a');
    assert.deepEqual({ ...intoA!, time: undefined }, {
      time: undefined, verdict: 'denied', direction: 'ingress', protocol: 'TCP', port: 80,
      source: { ip: c.ip('z/a'), namespace: 'z', pod: 'a' }, destination: { ip: c.ip('x/a'), namespace: 'x', pod: 'a' },
      policies: ['x/allow-from-y', 'x/deny-all'],
    });
    assert.ok(Math.abs(Date.parse(intoA!.time) - Date.now()) < 60_000, `a recent time: ${intoA!.time}`);

    // x/b's own egress isolation refuses it, on node-a, before y/c's node sees anything.
    assert.notEqual(await c.probe('x/b', 'y/c', { proto: 'udp', port: 81 }), 'ok');
    const [outOfB] = await waitForRecords(c, NODE_A, '?pod=x/b', (d) => d.drops.filter(between('x/b', 'y/c')), 'x/b -> y/c');
    assert.deepEqual([outOfB!.verdict, outOfB!.direction, outOfB!.protocol, outOfB!.port, outOfB!.policies], ['denied', 'egress', 'UDP', 81, ['x/deny-all']]);

    // Into x/c, on node-b: node-b's daemon records it.
    assert.notEqual(await c.probe('z/b', 'x/c', { proto: 'tcp', port: 81 }), 'ok');
    const [intoC] = await waitForRecords(c, NODE_B, '?pod=x/c', (d) => d.drops.filter(between('z/b', 'x/c')), 'z/b -> x/c');
    assert.deepEqual([intoC!.direction, intoC!.port, intoC!.source.ip], ['ingress', 81, c.ip('z/b')]);
    const onA = await drops(c, NODE_A, '?pod=x/c');
    assert.deepEqual(onA.drops.filter(between('z/b', 'x/c')), [], 'node-a did not refuse it, and has no record of it');

    const lines = c.daemonLogs(NODE_A, 2000).filter((l) => l.includes('"msg":"connection denied"')).map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.ok(lines.some((l) => JSON.stringify(l['source']) === JSON.stringify(intoA!.source) && l['direction'] === 'ingress' && l['port'] === 80),
      `a "connection denied" log line for z/a -> x/a among ${lines.length}`);
    const metrics = await c.lab.metrics(NODE_A);
    assert.match(metrics, /palisade_denied_connections_total\{direction="ingress",verdict="denied"\} [1-9]/);
    assert.match(metrics, /palisade_policy_denied_connections_total\{policy_namespace="x",policy="deny-all",verdict="denied"\} [1-9]/);
    assert.match(metrics, /palisade_drop_log_reader_up 1/);
  });

  it('Allowed connections, and the replies of allowed connections from an egress-isolated pod, leave no record.', async () => {
    const c = await fresh();
    await c.applyPolicies(denyAll, allowFromY);
    await converge(c, 'z/c', 'x/a', TCP_80, false);
    await converge(c, 'y/a', 'x/a', TCP_80, true);
    const since = new Date().toISOString();
    for (let i = 0; i < 5; i++) {
      assert.equal(await c.probe('y/a', 'x/a', TCP_80), 'ok');
      assert.equal(await c.probe('y/b', 'x/b', { proto: 'udp', port: 80 }), 'ok');
      assert.equal(await c.probe('y/c', 'x/a', { proto: 'tcp', port: 81 }), 'ok');
    }
    // A refused connection afterwards proves the log is live and caught up.
    assert.notEqual(await c.probe('z/c', 'x/a', TCP_80), 'ok');
    await waitForRecords(c, NODE_A, '?pod=x/a', (d) => d.drops.filter(between('z/c', 'x/a')), 'z/c -> x/a');
    const all = [...(await drops(c, NODE_A)).drops, ...(await drops(c, NODE_B)).drops].filter((r) => r.time >= since);
    const touching = all.filter((r) => ['y/a', 'y/b', 'y/c'].some((y) => between(y, 'x/a')(r) || between(y, 'x/b')(r) || between('x/a', y)(r) || between('x/b', y)(r)));
    assert.deepEqual(touching, [], 'no record of the allowed pairs, either way');
  });

  it('An audit deny-all never blocks and leaves would-deny records naming it; /status shows it as audit; without the annotation it enforces, and the records say denied.', async () => {
    const c = await fresh();
    await c.applyPolicies(audited(denyAllIngress));
    const xa = async (): Promise<Record<string, unknown> | undefined> => ((await c.status(NODE_A))['endpoints'] as Record<string, unknown>[]).find((e) => e['namespace'] === 'x' && e['name'] === 'a');
    const deadline = Date.now() + 10_000;
    while (JSON.stringify((await xa())?.['wouldDeny']) !== JSON.stringify({ ingress: true, egress: false })) {
      if (Date.now() > deadline) assert.fail(`x/a never showed the audit policy in /status: ${JSON.stringify(await xa())}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    await c.expectMatrix(new Reachability(true), TCP_80);
    const [wouldDeny] = await waitForRecords(c, NODE_A, '?pod=x/a', (d) => d.drops.filter((r) => between('y/b', 'x/a')(r)), 'y/b -> x/a would-deny');
    assert.deepEqual([wouldDeny!.verdict, wouldDeny!.direction, wouldDeny!.policies], ['would-deny', 'ingress', ['x/deny-all-ingress']]);
    assert.deepEqual((await drops(c, NODE_A)).drops.filter((r) => r.verdict === 'denied' && r.time >= wouldDeny!.time), [], 'nothing denied');
    assert.deepEqual((await c.status(NODE_A))['auditPolicies'], ['x/deny-all-ingress']);
    const endpoint = (await xa())!;
    assert.deepEqual([endpoint['isolated'], endpoint['auditPolicies'], endpoint['wouldDeny']], [{ ingress: false, egress: false }, { ingress: ['x/deny-all-ingress'], egress: [] }, { ingress: true, egress: false }]);

    // The trial is over: the same policy, enforced.
    await c.applyPolicies(denyAllIngress);
    await c.expectMatrix(new Reachability(true).expectAllIngress('x/*', false), TCP_80);
    const [denied] = await waitForRecords(c, NODE_A, '?pod=x/b', (d) => d.drops.filter((r) => r.verdict === 'denied' && between('z/a', 'x/b')(r)), 'z/a -> x/b denied');
    assert.deepEqual(denied!.policies, ['x/deny-all-ingress']);
  });

  it('A flood of refused connections from one pod is held to its share by the kernel and counted as lost, and another pod\'s refused connection is still recorded.', async () => {
    const c = await fresh();
    await c.applyPolicies(denyAllIngress);
    await converge(c, 'z/a', 'x/a', { proto: 'udp', port: 80 }, false);
    const before = await drops(c, NODE_A);
    const started = Date.now();
    // 1,500 new UDP flows from z/a into x/a, each refused.
    const ports = Array.from({ length: 1500 }, (_, i) => 20_000 + i);
    assert.deepEqual(await c.udpFromSourcePorts('z/a', 'x/a', 80, ports, 200), []);
    const floodSeconds = (Date.now() - started) / 1000;
    assert.notEqual(await c.probe('y/c', 'x/b', TCP_80), 'ok');
    await waitForRecords(c, NODE_A, '?pod=x/b', (d) => d.drops.filter(between('y/c', 'x/b')), 'y/c -> x/b during the flood\'s aftermath');
    // Lost records are counted from the kernel's counters on the daemon's next refresh (every 2 s here).
    const deadline = Date.now() + 10_000;
    let after = await drops(c, NODE_A);
    while (after.lost - before.lost < 1000 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 200));
      after = await drops(c, NODE_A);
    }
    const flooded = (await drops(c, NODE_A, '?pod=x/a&limit=1000')).drops.filter((r) => between('z/a', 'x/a')(r) && r.time >= new Date(started).toISOString());
    console.log(`      (1,500 refused flows in ${floodSeconds.toFixed(1)} s: ${flooded.length} records, ${after.lost - before.lost} counted lost)`);
    // x/a's ingress share: 10 a second with a burst of 20.
    assert.ok(flooded.length >= 10 && flooded.length <= 20 + Math.ceil(floodSeconds + 1) * 10, `${flooded.length} records of the flood`);
    assert.ok(after.lost - before.lost >= 1500 - flooded.length - 50, `lost grew by ${after.lost - before.lost}`);
    assert.match(await c.lab.metrics(NODE_A), /palisade_drop_log_lost_total\{reason="rate-limit"\} [1-9]/);
  });
});
