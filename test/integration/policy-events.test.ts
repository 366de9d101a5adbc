import assert from 'node:assert/strict';
import { Lab } from '../../lib/lab/cluster.js';
import type { StoredObject } from '../../lib/lab/api-server.js';
import { namespace, node, policy } from '../support/builders.js';
import { prepareNamespaces } from '../support/netns-fixture.js';

/**
 * The policy reporter across real daemons: two `palisade daemon` processes, each in its own node's
 * network namespace, against the lab API server. Both report (the one elected on the Lease writes);
 * at the end one is restarted with --policy-events off and the other stopped. Events are read back
 * from the API server's store.
 */

type Obj = Record<string, unknown>;
const PREFIX = 'paltest-pevents';
const REPORTERS = ['node-a', 'node-b'] as const;
/** Low enough for a small policy to go over, the same on every daemon, as in a DaemonSet. */
const DAEMON_ARGS = ['--policy-max-rules', '10'];

const invalid = (extra: Obj = {}) => policy('team-a', 'broken', { podSelector: {}, ingress: {}, ...extra });
const overBudget = policy('team-b', 'huge', {
  podSelector: {},
  ingress: Array.from({ length: 12 }, (_, i) => ({ ports: [{ port: 1000 + i, protocol: 'UDP' }], from: [{ podSelector: { matchLabels: { app: `a${i}` } } }] })),
});
const partlyIpv6 = policy('team-a', 'dual', { podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: 'fd00::/8' } }, { ipBlock: { cidr: '10.0.0.0/8' } }] }] });
const valid = policy('team-a', 'fine', { podSelector: {}, ingress: [{}] });

async function eventually<T>(what: string, timeoutMs: number, check: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await check();
    } catch (error) {
      if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}: ${error instanceof Error ? error.message : String(error)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

interface ReporterState { enabled: boolean; reporter?: boolean; identity?: string; leaseHolder?: string | null; reported?: number; pending?: number }

describe('policy Events from two real daemons and one with them off, against the lab API server', function () {
  this.timeout(300_000);
  let lab: Lab | null = null;

  before(async function () {
    await prepareNamespaces(this, PREFIX);
    lab = await Lab.create({
      prefix: PREFIX,
      nodes: [
        { name: 'node-a', address: '172.31.0.1', podCidr: '10.1.1.0/24' },
        { name: 'node-b', address: '172.31.0.2', podCidr: '10.1.2.0/24' },
      ],
      daemonArgs: DAEMON_ARGS,
    });
    await lab.api.apply([namespace('team-a'), namespace('team-b'), node('node-a', '172.31.0.1'), node('node-b', '172.31.0.2')]);
  });

  after(async () => {
    await lab?.destroy();
  });

  const the = (): Lab => {
    assert.ok(lab !== null);
    return lab;
  };
  const reporterState = async (name: string): Promise<ReporterState> => {
    const { status, body } = await the().status(name, '/status');
    assert.equal(status, 200);
    return (JSON.parse(body) as { policyReporter: ReporterState }).policyReporter;
  };
  const events = async (): Promise<StoredObject[]> => the().api.objects('Event');
  const eventsOf = async (ns: string, name: string): Promise<StoredObject[]> => (await events()).filter((e) => {
    const ref = e['involvedObject'] as Obj;
    return ref['namespace'] === ns && ref['name'] === name;
  });
  const leader = async (candidates: readonly string[]): Promise<string> => {
    const states = await Promise.all(candidates.map(async (n) => [n, await reporterState(n)] as const));
    const leading = states.filter(([, s]) => s.reporter === true).map(([n]) => n);
    assert.equal(leading.length, 1, `exactly one reporter: ${JSON.stringify(states)}`);
    return leading[0]!;
  };
  /** The leader has sent (or found sent) everything due; a follower holds it all as pending, ready to lead. */
  const caughtUp = async (names: readonly string[], reports: number): Promise<void> => {
    for (const name of names) {
      const s = await reporterState(name);
      if (s.reporter === true) assert.deepEqual([s.reported, s.pending], [reports, 0], name);
      else assert.equal((s.reported ?? 0) + (s.pending ?? 0), reports, name);
    }
  };

  it('reports an invalid, an over-budget and a partly-IPv6 policy with exactly one Event each, from one daemon, and nothing about a valid policy', async () => {
    const l = the();
    await Promise.all(REPORTERS.map((n) => l.startDaemon(n)));
    await Promise.all(REPORTERS.map((n) => l.waitReady(n)));
    await l.api.apply([invalid(), overBudget, partlyIpv6, valid]);
    await eventually('an Event for each of the three policies', 20_000, async () => {
      for (const [ns, name] of [['team-a', 'broken'], ['team-b', 'huge'], ['team-a', 'dual']] as const) assert.equal((await eventsOf(ns, name)).length, 1, `${ns}/${name}`);
    });
    await eventually('both reporters caught up', 20_000, () => caughtUp(REPORTERS, 3));
    const all = await events();
    assert.equal(all.length, 3, JSON.stringify(all.map((e) => e.metadata.name)));
    const stored = new Map((await l.api.objects('NetworkPolicy')).map((p) => [`${p.metadata.namespace}/${p.metadata.name}`, p]));
    const byPolicy = new Map(all.map((e) => [`${(e['involvedObject'] as Obj)['namespace'] as string}/${(e['involvedObject'] as Obj)['name'] as string}`, e]));
    const broken = byPolicy.get('team-a/broken')!;
    assert.equal(broken.metadata.namespace, 'team-a');
    assert.deepEqual(broken['involvedObject'], { apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', namespace: 'team-a', name: 'broken', uid: stored.get('team-a/broken')!.metadata.uid });
    assert.deepEqual([broken['type'], broken['reason'], broken['reportingComponent']], ['Warning', 'PolicyNotFullyEnforced', 'palisade.io/policy-reporter']);
    assert.match(String(broken['message']), /generation 1\), so it isolates what it selects and grants nothing: spec\.ingress: ingress must be a list of rules/);
    assert.equal(byPolicy.get('team-b/huge')!['reason'], 'PolicyNotFullyEnforced');
    assert.match(String(byPolicy.get('team-b/huge')!['message']), /over palisade's per-policy budget \(12 iptables rules, the limit is 10\)/);
    assert.equal(byPolicy.get('team-a/dual')!['reason'], 'PolicyPartlyIgnored');
    // One daemon wrote them all: the Lease holder, named in every daemon's status.
    const writer = await leader(REPORTERS);
    const holder = (await reporterState(writer)).identity;
    assert.ok(all.every((e) => e['reportingInstance'] === holder), JSON.stringify(all.map((e) => e['reportingInstance'])));
    const follower = REPORTERS.find((n) => n !== writer)!;
    // The follower reads the Lease every retry period (2 s, with jitter), so it learns the holder soon after.
    await eventually('the follower names the holder', 10_000, async () => assert.equal((await reporterState(follower)).leaseHolder, holder));
    const lease = (await l.api.objects('Lease', 'kube-system'))[0]!;
    assert.equal((lease['spec'] as Obj)['holderIdentity'], holder);
    assert.match(await l.metrics(writer), /^palisade_policy_reporter_leader 1$/m);
    assert.match(await l.metrics(writer), /^palisade_policy_events_total\{reason="PolicyNotFullyEnforced"\} 2$/m);
    assert.match(await l.metrics(follower), /^palisade_policy_reporter_leader 0$/m);
    assert.match(await l.metrics(follower), /^palisade_policy_events_total\{reason="PolicyNotFullyEnforced"\} 0$/m);
  });

  it('reports a new generation of a policy with a new Event, and no other', async () => {
    const l = the();
    await l.api.apply(invalid({ policyTypes: ['Ingress'] }));
    await eventually('a second Event for the broken policy', 20_000, async () => assert.equal((await eventsOf('team-a', 'broken')).length, 2));
    await eventually('both reporters caught up', 20_000, () => caughtUp(REPORTERS, 3));
    const messages = (await eventsOf('team-a', 'broken')).map((e) => String(e['message'])).sort();
    assert.match(messages[0]!, /\(generation 1\)/);
    assert.match(messages[1]!, /\(generation 2\)/);
    assert.equal((await events()).length, 4);
  });

  it('hands reporting to the other daemon within about 20 s when the leader is killed, without repeating an Event', async () => {
    const l = the();
    const killed = await leader(REPORTERS);
    const survivor = REPORTERS.find((n) => n !== killed)!;
    const before = (await events()).length;
    await l.stopDaemon(killed, 'SIGKILL');
    const killedAt = Date.now();
    await eventually('the survivor reporting', 25_000, async () => assert.equal((await reporterState(survivor)).reporter, true));
    const tookMs = Date.now() - killedAt;
    // At most: the last renewal seen up to a retry period (2 s + jitter) before the kill, the lease
    // duration (15 s), a retry period; the status read adds a little.
    assert.ok(tookMs <= 21_000, `took over after ${tookMs} ms`);
    console.log(`      the survivor took over ${tookMs} ms after the leader was killed`);
    // The survivor goes through every report due; each Event it finds already there counts as sent.
    await eventually('the survivor caught up', 20_000, () => caughtUp([survivor], 3));
    assert.equal((await events()).length, before, 'no Event repeated');
    // And what is new from now on, it reports.
    await l.api.apply(invalid({ policyTypes: ['Ingress', 'Egress'] }));
    await eventually('a third Event for the broken policy, from the survivor', 20_000, async () => {
      const list = await eventsOf('team-a', 'broken');
      assert.equal(list.length, 3);
      assert.ok(list.some((e) => e['reportingInstance'] === survivor && /generation 3/.test(String(e['message']))));
    });
    await l.startDaemon(killed);
    await l.waitReady(killed);
    await eventually('the restarted daemon caught up, following', 20_000, () => caughtUp([killed], 3));
    assert.equal((await reporterState(killed)).pending, 3, 'a follower sends nothing');
    assert.equal(await leader(REPORTERS), survivor);
    assert.equal((await events()).length, before + 1);
  });

  it('with --policy-events off, a daemon writes no Event and never takes the Lease; a stopped leader releases it', async () => {
    const l = the();
    const writer = await leader(REPORTERS);
    const other = REPORTERS.find((n) => n !== writer)!;
    await l.stopDaemon(other);
    await l.startDaemon(other, ['--policy-events', 'off']);
    await l.waitReady(other);
    assert.deepEqual(await reporterState(other), { enabled: false });
    // The leader stops cleanly: it releases the Lease, and nobody is left to report.
    await l.stopDaemon(writer);
    const lease = async () => ((await l.api.objects('Lease', 'kube-system'))[0]!['spec'] as Obj)['holderIdentity'];
    assert.equal(await lease(), '');
    const before = (await events()).length;
    await l.api.apply(invalid({ policyTypes: ['Egress'] }));
    // Longer than a Lease lasts and a candidate waits: the daemon left would have taken over by now.
    await new Promise((resolve) => setTimeout(resolve, 20_000));
    assert.equal((await events()).length, before);
    assert.equal(await lease(), '');
    assert.match(await l.metrics(other), /^palisade_policy_reporter_leader 0$/m);
    assert.ok(l.node(other).daemon!.lines.every((line) => !/Lease|policy Event/.test(line)));
    const stats = await l.api.stats();
    assert.ok((stats.writes['PUT leases'] ?? 0) > 0 && (stats.writes['POST events'] ?? 0) === before, JSON.stringify(stats.writes));
  });
});
