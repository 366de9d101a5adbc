import assert from 'node:assert/strict';
import { POLICY_TABLE } from '../../rules/dataplane.js';
import type { DataplaneCompiler } from '../../rules/compiler.js';
import type { Dataplane } from '../../rules/dataplane.js';
import { Evaluator } from '../../rules/evaluator.js';
import type { PodRecord, PolicyRecord } from '../../rules/model.js';
import { hostInterfaceName, Names, vethSuffix } from '../../rules/names.js';
import { parsePod } from '../../rules/pod.js';
import { parsePolicy } from '../../rules/policy.js';
import { formatProblem } from '../../rules/problems.js';
import { renderIpsets, renderIptables } from '../../rules/render.js';
import { MAX_COMMENT_BYTES } from '../../rules/rule-hash.js';
import { makeSettings } from '../../rules/settings.js';
import type { SettingsInput } from '../../rules/settings.js';
import { loadedCompiler, parseObjects } from '../../rules/snapshot.js';
import { splitRuleLine } from '../../lib/iptables/tokens.js';
import { namespace, node, pod, policy, snapshotOf } from '../support/builders.js';
import { IpsetModel, IptablesModel } from '../support/tracer.js';
import type { Packet } from '../support/tracer.js';

/**
 * The attacks a tenant (who can create Pods and NetworkPolicies in their own namespace, nothing else)
 * can try on a node, one by one, each asserted on the rules a node would load: the victim's
 * enforcement stays as it was, and what the attacker wrote is a reported problem.
 */

type Obj = Record<string, unknown>;

const NODE_A = '10.0.0.1';
const VICTIM_IP = '10.1.1.10';
const FRIEND_IP = '10.1.1.20';
const ATTACKER_IP = '10.1.1.30';

/** The victim x/v is isolated by deny-all except from x/friend; the attacker lives in namespace "evil". */
const base: readonly Obj[] = [
  node('node-a', NODE_A),
  node('node-b', '10.0.0.2'),
  namespace('x'),
  namespace('evil'),
  pod('x', 'v', { ip: VICTIM_IP, labels: { app: 'v' } }),
  pod('x', 'friend', { ip: FRIEND_IP, labels: { app: 'friend' } }),
  pod('evil', 'runner', { ip: ATTACKER_IP, labels: { app: 'friend' } }),
  policy('x', 'deny-all', { podSelector: {}, policyTypes: ['Ingress'] }),
  policy('x', 'from-friend', { podSelector: { matchLabels: { app: 'v' } }, ingress: [{ from: [{ podSelector: { matchLabels: { app: 'friend' } } }] }] }),
];

function settings(overrides: Partial<SettingsInput> = {}) {
  const result = makeSettings({ nodeName: 'node-a', ...overrides });
  assert.ok(result.ok);
  return result.settings;
}

/** Suffixes as the VPC CNI makes them, except that evil/* pods named "twin-of-<pod>" get x/<pod>'s. */
function colliding(ns: string, name: string): string {
  return ns === 'evil' && name.startsWith('twin-of-') ? vethSuffix('x', name.slice('twin-of-'.length)) : vethSuffix(ns, name);
}

function compiler(objects: readonly Obj[], overrides: Partial<SettingsInput> = {}): DataplaneCompiler {
  const chosen = settings(overrides);
  const { snapshot, problems } = parseObjects(objects.map((object) => ({ object })), chosen.policyBudget);
  assert.deepEqual(problems.filter((p) => p.severity === 'error').map(formatProblem), [], 'test objects must be valid');
  return loadedCompiler(snapshot, chosen, { vethSuffix: colliding });
}

interface Loaded {
  readonly dataplane: Dataplane;
  /** A new TCP connection to port 80, through FORWARD on node-a. */
  send(from: { iface?: string; ip: string }, to: { iface?: string; ip: string }): 'ACCEPT' | 'DROP';
}

function load(dataplane: Dataplane): Loaded {
  const iptables = IptablesModel.parse(renderIptables(dataplane));
  const ipsets = IpsetModel.parse(renderIpsets(dataplane.ipsets.values()));
  assert.deepEqual(iptables.check(ipsets).filter((p) => p !== 'unreachable: pal-allow (table mangle)'), []);
  return {
    dataplane,
    send: (from, to) => {
      const packet: Packet = { src: from.ip, dst: to.ip, protocol: 'tcp', sport: 40000, dport: 80, inIface: from.iface ?? 'eth0', outIface: to.iface ?? 'eth0', localAddresses: [NODE_A] };
      return iptables.trace('FORWARD', packet, ipsets, POLICY_TABLE).verdict;
    },
  };
}

const victimIface = hostInterfaceName('eni', 'x', 'v');
const toVictim = { iface: victimIface, ip: VICTIM_IP };
const outsider = { ip: '10.9.9.9' };

function problemsOf(c: DataplaneCompiler): string[] {
  return c.problems().map(formatProblem);
}

function parsedPod(object: Obj): PodRecord {
  const { record } = parsePod(object);
  assert.ok(record !== null);
  return record;
}

describe('a tenant attacking through pod addresses', () => {
  it('cannot put 0.0.0.0, loopback, multicast, broadcast or link-local addresses in a set', () => {
    for (const address of ['0.0.0.0', '127.0.0.1', '224.0.0.5', '255.255.255.255', '169.254.20.10', '240.0.0.1']) {
      const { snapshot, problems } = parseObjects([...base, pod('evil', 'pending', { annotationIp: address, labels: { app: 'friend' } })].map((object) => ({ object })));
      const dataplane = loadedCompiler(snapshot, settings()).build();
      for (const set of dataplane.ipsets.values()) assert.ok(!set.members.has(address), `${address} in ${set.description}`);
      assert.match(problems.map(formatProblem).join('\n'), new RegExp(`evil/pending field metadata.annotations.vpc.amazonaws.com/pod-ips: no address a pod can have \\(${address.replace(/\./g, '\\.')} is`));
    }
  });

  it('ignores such addresses in status too, and reads leading zeros there as the API server does', () => {
    const zero = parsePod(pod('x', 'z', { ip: '0.0.0.0' }));
    assert.equal(zero.record!.ip, null);
    assert.match(zero.problems.map(formatProblem).join('\n'), /"this network"/);
    assert.equal(parsePod(pod('x', 'z', { ip: '010.001.001.010' })).record!.ip, '10.1.1.10');
  });

  it('cannot take a running pod\'s address with the annotation, whichever comes first', () => {
    const thief = pod('evil', 'thief', { annotationIp: VICTIM_IP, labels: { app: 'friend' } });
    const orders = [[...base, thief], [thief, ...base]];
    const texts = orders.map((objects) => {
      const c = compiler(objects);
      const loaded = load(c.build());
      // The victim is still itself: allowed from its friend, denied from the attacker's running pod.
      assert.equal(loaded.send({ ip: FRIEND_IP }, toVictim), 'ACCEPT');
      assert.equal(loaded.send({ ip: ATTACKER_IP }, toVictim), 'DROP');
      // The friend-selector set (which the thief's labels match) does not get the victim's address from it.
      assert.deepEqual([...c.takeOwnerChanges()], [], 'the victim still owns its address');
      assert.match(problemsOf(c).join('\n'), /Pod evil\/thief field metadata\.annotations\.vpc\.amazonaws\.com\/pod-ips: address 10\.1\.1\.10 is not used for this pod: x\/v \(status\.podIPs\) holds it with a stronger claim/);
      return renderIpsets(loaded.dataplane.ipsets.values()) + renderIptables(loaded.dataplane);
    });
    assert.equal(texts[0], texts[1], 'the same rules whatever the order');
    const evaluator = new Evaluator(snapshotOf(orders[0]!));
    assert.equal(evaluator.podAt(VICTIM_IP)?.name, 'v');
    assert.equal(evaluator.evaluate({ src: ATTACKER_IP, dst: VICTIM_IP, protocol: 'TCP', port: 80 }).allowed, false);
  });

  it('makes an address two pods claim with equal standing nobody\'s, and reports both', () => {
    const objects = [...base, pod('evil', 'a', { annotationIp: '10.1.1.77', labels: { app: 'friend' } }), pod('evil', 'b', { annotationIp: '10.1.1.77' })];
    const c = compiler(objects);
    const dataplane = c.build();
    for (const set of dataplane.ipsets.values()) assert.ok(!set.members.has('10.1.1.77'));
    const problems = problemsOf(c).join('\n');
    assert.match(problems, /evil\/a .*evil\/b \(annotation\) claims it too, and equal claims cancel out/);
    assert.match(problems, /evil\/b .*evil\/a \(annotation\) claims it too/);
    const evaluator = new Evaluator(snapshotOf(objects));
    assert.match(evaluator.evaluate({ src: '10.1.1.77', dst: FRIEND_IP, protocol: 'TCP', port: 80 }).egress.reason, /claimed by evil\/a and evil\/b with equal standing/);
  });

  it('cannot stand for a node with a node\'s address', () => {
    const c = compiler([...base, pod('evil', 'node-ish', { annotationIp: NODE_A, labels: { app: 'friend' } })]);
    for (const set of c.build().ipsets.values()) assert.ok(!set.members.has(NODE_A));
    assert.match(problemsOf(c).join('\n'), /it is the address of node node-a/);
  });

  it('uses the annotation only for a pod bound to a node that kubelet has not published yet', () => {
    const unbound = pod('evil', 'u', { annotationIp: '10.1.1.78' });
    delete ((unbound['spec'] as Obj)['nodeName']);
    assert.equal(parsePod(unbound).record!.ip, null);
    const failed = pod('evil', 'f', { annotationIp: '10.1.1.79', phase: 'Failed' });
    assert.equal(parsePod(failed).record!.ip, null);
    assert.equal(parsePod(pod('evil', 'p', { annotationIp: '10.1.1.80' })).record!.ipSource, 'annotation');
  });

  it('cannot make palisade forget another pod\'s tracked flows: only kubelet-published owners count', () => {
    const c = compiler(base);
    c.build();
    c.setPod(parsedPod(pod('evil', 'thief', { annotationIp: VICTIM_IP })));
    c.setPod(parsedPod(pod('evil', 'squatter', { annotationIp: '10.1.1.99' })));
    c.build();
    assert.deepEqual([...c.takeOwnerChanges()], []);
    c.deletePod('evil', 'squatter');
    c.setPod(parsedPod(pod('evil', 'squatter-2', { annotationIp: '10.1.1.99' })));
    assert.deepEqual([...c.takeOwnerChanges()], []);
    // Whereas a running pod whose address goes to another running pod is a change to act on.
    c.deletePod('x', 'friend');
    c.setPod(parsedPod(pod('y', 'newcomer', { ip: FRIEND_IP })));
    assert.deepEqual([...c.takeOwnerChanges()], [[FRIEND_IP, { previous: 'x/friend', next: 'y/newcomer' }]]);
  });
});

describe('a tenant attacking through interface names', () => {
  const twin = (options: Parameters<typeof pod>[2] = {}) => pod('evil', 'twin-of-v', { annotationIp: '10.1.1.88', labels: { app: 'friend' }, ...options });

  it('cannot take over a running pod\'s interface with a pending pod of the same interface name', () => {
    for (const objects of [[...base, twin()], [twin(), ...base]]) {
      const c = compiler(objects);
      const loaded = load(c.build());
      assert.equal(loaded.send(outsider, toVictim), 'DROP', 'deny-all still holds for the victim');
      assert.equal(loaded.send({ ip: FRIEND_IP }, toVictim), 'ACCEPT');
      assert.deepEqual(loaded.dataplane.endpoints.map((e) => `${e.namespace}/${e.name}`), ['evil/runner', 'x/friend', 'x/v']);
      assert.match(problemsOf(c).join('\n'), /Pod evil\/twin-of-v field metadata\.name: its host interface name \(eni[0-9a-f]{11}, vlan[0-9a-f]{11}, derived from namespace and name\) is also that of x\/v: x\/v keeps it/);
    }
  });

  it('leaves the survivor enforced when either pod of a colliding pair goes, in any order', () => {
    const c = compiler([...base, twin()]);
    c.build();
    c.deletePod('evil', 'twin-of-v');
    let loaded = load(c.build());
    assert.equal(loaded.send(outsider, toVictim), 'DROP');
    assert.deepEqual(problemsOf(c), []);

    const d = compiler([...base, twin()]);
    d.build();
    d.deletePod('x', 'v');
    loaded = load(d.build());
    // The interface is the twin's now: its own (unisolated) chains, its own address.
    const twinEndpoint = loaded.dataplane.endpoints.find((e) => e.name === 'twin-of-v');
    assert.ok(twinEndpoint !== undefined);
    assert.deepEqual(twinEndpoint.interfaces, [victimIface, hostInterfaceName('vlan', 'x', 'v')]);
    assert.equal(loaded.send(outsider, { iface: victimIface, ip: '10.1.1.88' }), 'ACCEPT');
    assert.equal(loaded.send({ iface: victimIface, ip: VICTIM_IP }, outsider), 'DROP', 'the twin cannot send as the victim');
  });

  it('drops an interface claimed by two pods of equal standing, even where unknown interfaces are allowed', () => {
    const pendingVictim = pod('x', 'v', { annotationIp: VICTIM_IP, labels: { app: 'v' } });
    const objects = [...base.filter((o) => (o['metadata'] as Obj)['name'] !== 'v'), pendingVictim, twin()];
    const c = compiler(objects, { unknownEndpoint: 'allow' });
    const loaded = load(c.build());
    assert.equal(loaded.send(outsider, toVictim), 'DROP');
    assert.equal(loaded.send({ iface: victimIface, ip: VICTIM_IP }, outsider), 'DROP');
    assert.match(problemsOf(c).join('\n'), /neither has kubelet's word over the other/);
  });

  it('names endpoint chains by the pod, so colliding pods never share a chain', () => {
    const c = compiler([...base, twin({ ip: '10.1.1.88', annotationIp: undefined })]);
    const dataplane = c.build();
    const chains = [...dataplane.chains.keys()].filter((n) => /^pal-(fw|tw)-/.test(n));
    assert.equal(new Set(chains).size, chains.length);
    assert.ok(chains.every((n) => n.length <= 28));
  });
});

describe('a tenant attacking through names and sizes', () => {
  const longNs = 'n'.repeat(63);
  const longName = (prefix: string) => (prefix + 'a'.repeat(253)).slice(0, 253);

  it('keeps every rule comment within the 255 bytes iptables keeps, with names at their longest', () => {
    const objects = [
      node('node-a', NODE_A),
      namespace(longNs),
      pod(longNs, longName('p'), { ip: '10.1.1.10', labels: { app: 'a' } }),
      policy(longNs, longName('q'), { podSelector: {}, policyTypes: ['Ingress', 'Egress'], ingress: [{ from: [{ podSelector: {} }] }], egress: [{ to: [{ podSelector: {} }, { ipBlock: { cidr: '10.0.0.0/8' } }], ports: [{ port: 80 }, { port: 'http' }] }] }),
    ];
    const text = renderIptables(compiler(objects).build());
    let longest = 0;
    for (const line of text.split('\n').filter((l) => l.startsWith('-A'))) {
      const tokens = splitRuleLine(line);
      const comment = tokens[tokens.indexOf('--comment') + 1]!;
      longest = Math.max(longest, Buffer.byteLength(comment));
      assert.match(comment, /^pal:[A-Za-z0-9_-]{16}/);
    }
    assert.ok(longest <= MAX_COMMENT_BYTES, `a comment of ${longest} bytes`);
    assert.equal(longest, MAX_COMMENT_BYTES, 'the longest comments are cut, not dropped');
  });

  it('grows a rule\'s iptables rules with its peers plus its ports, not their product', () => {
    const peers = (n: number) => Array.from({ length: n }, (_, i) => ({ podSelector: { matchLabels: { idx: `p${i}` } } }));
    const ports = (n: number) => Array.from({ length: n }, (_, i) => ({ port: `n${i}` }));
    for (const [n, m] of [[10, 10], [100, 100], [300, 300]] as const) {
      const big = policy('evil', 'big', { podSelector: {}, ingress: [{ from: peers(n), ports: ports(m) }] });
      const { record } = parsePolicy(big, { rules: 10_000, sets: 10_000, setEntries: 10_000 });
      assert.deepEqual(record!.cost, { rules: n + m + 1, sets: n + m, setEntries: 0 });
      const dataplane = compiler([...base, big], { policyBudget: { rules: 10_000, sets: 10_000 } }).build();
      const names = new Names('pal');
      const chains = [names.policy('ingress', 'evil', 'big'), names.policyRule('ingress', 'evil', 'big', 0)];
      const rules = chains.reduce((sum, name) => sum + dataplane.chains.get(name)!.rules.length, 0);
      assert.equal(rules, n + m + 1, `${n} peers x ${m} ports`);
    }
  });

  it('fails a policy over budget closed: it isolates what it selects, grants nothing, and says why', () => {
    const peers = Array.from({ length: 300 }, (_, i) => ({ podSelector: { matchLabels: { idx: `p${i}` } } }));
    const ports = Array.from({ length: 300 }, (_, i) => ({ port: `n${i}` }));
    const big = policy('evil', 'huge', { podSelector: {}, ingress: [{ from: peers, ports }, { from: [{ podSelector: {} }] }] });
    const { snapshot, problems } = parseObjects([...base, big].map((object) => ({ object })));
    const record = snapshot.policies.find((p) => p.name === 'huge')!;
    assert.equal(record.failed, true);
    assert.equal(record.overBudget, true);
    assert.deepEqual(record.ingress, []);
    assert.match(problems.map(formatProblem).join('\n'), /NetworkPolicy evil\/huge field spec: over palisade's per-policy budget \(601 ipsets, the limit is 500\): the policy isolates what it selects and grants nothing/);
    const loaded = load(loadedCompiler(snapshot, settings()).build());
    const runner = { iface: hostInterfaceName('eni', 'evil', 'runner'), ip: ATTACKER_IP };
    assert.equal(loaded.send({ ip: FRIEND_IP }, runner), 'DROP', 'the attacker\'s own pod is isolated');
    assert.equal(loaded.send({ ip: FRIEND_IP }, toVictim), 'ACCEPT', 'the victim is untouched');
  });

  it('builds a policy\'s chains only on a node where it selects a pod', () => {
    let reads = 0;
    const { record } = parsePolicy(policy('evil', 'elsewhere', { podSelector: { matchLabels: { app: 'remote' } }, ingress: [{ from: [{ podSelector: {} }] }] }));
    const watched: PolicyRecord = Object.defineProperty({ ...record! }, 'ingress', { get: () => { reads++; return record!.ingress; }, enumerable: true });
    const c = compiler(base);
    c.setPolicy(watched);
    c.build();
    assert.equal(reads, 0, 'no rule of a policy selecting no local pod was read');
    c.setPod(parsedPod(pod('evil', 'here', { ip: '10.1.1.40', labels: { app: 'remote' } })));
    c.build();
    assert.ok(reads > 0, 'built once it selects a local pod');
  });

  it('fails closed a policy whose selector peers would have palisade look at more pods than the budget allows, where installed and in explain', () => {
    const crowd = Array.from({ length: 12 }, (_, i) => pod('evil', `crowd-${i}`, { ip: `10.1.2.${i + 1}`, labels: { app: 'crowd' }, node: 'node-b' }));
    // 12 pods carry app=crowd; the empty selector looks at all 13 pods of the namespace.
    const greedy = policy('evil', 'greedy', { podSelector: {}, ingress: [{ from: [{ podSelector: { matchLabels: { app: 'crowd' } } }, { podSelector: {} }] }] });
    const objects = [...base, ...crowd, greedy];
    const c = compiler(objects, { policyBudget: { selectorPods: 20 } });
    const loaded = load(c.build());
    const runner = { iface: hostInterfaceName('eni', 'evil', 'runner'), ip: ATTACKER_IP };
    assert.equal(loaded.send({ ip: '10.1.2.1' }, runner), 'DROP', 'the policy grants nothing');
    assert.equal(loaded.send({ ip: FRIEND_IP }, toVictim), 'ACCEPT', 'the victim is untouched');
    assert.deepEqual([...c.selectorPodsOverBudget()], [['evil/greedy', 25]]);
    assert.equal([...loaded.dataplane.ipsets.values()].filter((set) => set.members.has('10.1.2.1')).length, 0, 'no set was filled for it');
    assert.match(problemsOf(c).join('\n'), /NetworkPolicy evil\/greedy field spec: over palisade's per-policy budget \(its selector peers would have palisade look at 25 pods, the limit is 20\)/);
    const evaluator = new Evaluator(snapshotOf(objects), { selectorPods: 20 });
    const verdict = evaluator.evaluate({ src: '10.1.2.1', dst: ATTACKER_IP, protocol: 'TCP', port: 80 });
    assert.equal(verdict.allowed, false);
    assert.match(verdict.ingress.reason, /evil\/greedy grants nothing \(its selector peers would have palisade look at 25 pods, over the budget of 20\)/);
    assert.equal(new Evaluator(snapshotOf(objects), { selectorPods: 25 }).evaluate({ src: '10.1.2.1', dst: ATTACKER_IP, protocol: 'TCP', port: 80 }).allowed, true);
  });

  it('closes a policy on the refresh after pods joining its peers push it over the budget, and opens it again once they are gone', () => {
    const greedy = policy('evil', 'greedy', { podSelector: {}, ingress: [{ from: [{ podSelector: { matchLabels: { app: 'crowd' } } }] }] });
    const c = compiler([...base, greedy], { policyBudget: { selectorPods: 5 } });
    const crowdPod = (i: number) => parsedPod(pod('evil', `crowd-${i}`, { ip: `10.1.2.${i + 1}`, labels: { app: 'crowd' }, node: 'node-b' }));
    const runner = { iface: hostInterfaceName('eni', 'evil', 'runner'), ip: ATTACKER_IP };
    for (let i = 0; i < 5; i++) c.setPod(crowdPod(i));
    assert.equal(c.recheckBudgets(), false);
    assert.equal(load(c.build()).send({ ip: '10.1.2.1' }, runner), 'ACCEPT', 'within budget: 5 pods');
    c.setPod(crowdPod(5));
    assert.equal(c.recheckBudgets(), true);
    assert.equal(load(c.build()).send({ ip: '10.1.2.1' }, runner), 'DROP', 'over budget: 6 pods');
    assert.equal(c.selectorPodsOverBudget().get('evil/greedy'), 6);
    c.deletePod('evil', 'crowd-5');
    assert.equal(c.recheckBudgets(), true);
    assert.equal(load(c.build()).send({ ip: '10.1.2.1' }, runner), 'ACCEPT', 'open again after the refresh');
    assert.equal(c.selectorPodsOverBudget().size, 0);
  });
});
