import assert from 'node:assert/strict';
import { POLICY_TABLE } from '../../rules/dataplane.js';
import type { Dataplane, EndpointInfo } from '../../rules/dataplane.js';
import type { ClusterDenyLog, DropLogSource } from '../../rules/drop-log.js';
import { Evaluator } from '../../rules/evaluator.js';
import { hostInterfaceName, Names } from '../../rules/names.js';
import { formatProblem } from '../../rules/problems.js';
import { renderIpsets, renderIptables } from '../../rules/render.js';
import { makeSettings } from '../../rules/settings.js';
import type { SettingsInput } from '../../rules/settings.js';
import { compile, parseObjects } from '../../rules/snapshot.js';
import { DropLog } from '../../daemon/drop-log.js';
import type { DropRecord, LossReason } from '../../daemon/drop-log.js';
import { DaemonMetrics } from '../../daemon/metrics.js';
import { drops } from '../../daemon/status-routes.js';
import { parseDaemonConfig } from '../../daemon/config.js';
import type { NflogPacket } from '../../lib/drop-log/nflog-packet.js';
import { clusterPolicy, namespace, node, pod, policy, snapshotOf } from '../support/builders.js';
import { IpsetModel, IptablesModel } from '../support/tracer.js';
import type { Packet } from '../support/tracer.js';

/**
 * The drop log, judged on what a node's rules do with a packet (which NFLOG prefix it carries to
 * userspace, and whether it is dropped) and on what the daemon makes of such a packet: a record naming
 * the pods and policies, kept, filtered and counted.
 */

type Obj = Record<string, unknown>;

const A_IP = '10.1.1.10';
const B_IP = '10.1.1.20';
const C_IP = '10.1.2.30';
const OUTSIDE = '198.51.100.7';

const cluster: readonly Obj[] = [
  node('node-a', '10.0.0.1'),
  node('node-b', '10.0.0.2'),
  namespace('x'),
  namespace('y'),
  pod('x', 'a', { ip: A_IP, labels: { app: 'a' } }),
  pod('x', 'b', { ip: B_IP, labels: { app: 'b' } }),
  pod('y', 'c', { ip: C_IP, labels: { app: 'c' }, node: 'node-b' }),
];

const audited = (object: Obj): Obj => ({ ...object, metadata: { ...(object['metadata'] as Obj), annotations: { 'palisade.io/audit': 'true' } } });
const denyAllIngress = (ns: string): Obj => policy(ns, 'deny-all', { podSelector: {}, policyTypes: ['Ingress'] });
const allowFromB = policy('x', 'allow-b', { podSelector: { matchLabels: { app: 'a' } }, policyTypes: ['Ingress'], ingress: [{ from: [{ podSelector: { matchLabels: { app: 'b' } } }] }] });

interface NodeRules {
  readonly dataplane: Dataplane;
  readonly iptables: IptablesModel;
  readonly ipsets: IpsetModel;
}

function nodeRules(objects: readonly Obj[], overrides: Partial<SettingsInput> = {}): NodeRules {
  const settings = makeSettings({ nodeName: 'node-a', ...overrides });
  assert.ok(settings.ok);
  const dataplane = compile(snapshotOf(objects), settings.settings);
  return { dataplane, iptables: IptablesModel.parse(renderIptables(dataplane)), ipsets: IpsetModel.parse(renderIpsets(dataplane.ipsets.values())) };
}

const veth = (ns: string, name: string): string => hostInterfaceName('eni', ns, name);

/** A new TCP connection to port 80 between two of node-a's pods, or from outside into one of them. */
function forward(rules: NodeRules, from: { ip: string; iface: string }, to: { ip: string; iface: string }, extra: Partial<Packet> = {}) {
  const trace = rules.iptables.trace('FORWARD', { src: from.ip, dst: to.ip, protocol: 'tcp', sport: 40000, dport: 80, inIface: from.iface, outIface: to.iface, localAddresses: ['10.0.0.1'], ...extra }, rules.ipsets, POLICY_TABLE);
  const sources = new Map<string, DropLogSource>();
  for (const e of rules.dataplane.endpoints) for (const log of [e.ingressLog, e.egressLog]) if (log !== null) sources.set(log.prefix, log);
  return {
    verdict: trace.verdict,
    logged: trace.logged.map((l) => {
      assert.equal(l.via, 'NFLOG');
      const source = sources.get(l.prefix);
      assert.ok(source !== undefined, `prefix ${l.prefix} stands for an endpoint's drop log`);
      return `${source.verdict} ${source.direction} ${source.namespace}/${source.pod} by ${source.policies.join(',')} (group ${l.group})`;
    }),
  };
}

const A = { ip: A_IP, iface: veth('x', 'a') };
const B = { ip: B_IP, iface: veth('x', 'b') };
const FROM_UPLINK = (ip: string) => ({ ip, iface: 'eth0' });

describe('the drop log in the rules', () => {
  it('logs a denied new connection once, on NFLOG group 29, with a prefix that names the pod, the direction and the isolating policy', () => {
    const rules = nodeRules([...cluster, denyAllIngress('x'), allowFromB]);
    assert.deepEqual(forward(rules, FROM_UPLINK(C_IP), A), { verdict: 'DROP', logged: ['denied ingress x/a by x/allow-b,x/deny-all (group 29)'] });
    assert.deepEqual(forward(rules, A, B), { verdict: 'DROP', logged: ['denied ingress x/b by x/deny-all (group 29)'] });
  });

  it('logs nothing for an allowed connection, nor for replies and established traffic of a denied pair', () => {
    const rules = nodeRules([...cluster, denyAllIngress('x'), allowFromB]);
    assert.deepEqual(forward(rules, B, A), { verdict: 'ACCEPT', logged: [] });
    assert.deepEqual(forward(rules, FROM_UPLINK(C_IP), A, { ctstate: 'ESTABLISHED' }), { verdict: 'ACCEPT', logged: [] });
    assert.deepEqual(forward(rules, FROM_UPLINK(C_IP), A, { ctstate: 'RELATED' }), { verdict: 'ACCEPT', logged: [] });
  });

  it('still drops, without a record, once the rate limits have run out', () => {
    const rules = nodeRules([...cluster, denyAllIngress('x')]);
    assert.deepEqual(forward(rules, FROM_UPLINK(OUTSIDE), A, { overLimit: true }), { verdict: 'DROP', logged: [] });
  });

  it('limits per pod and direction at a tenth of the node rate, then per node in one shared bucket, both from --drop-log-rate', () => {
    const rules = nodeRules([...cluster, denyAllIngress('x')], { dropLog: { group: 7, rate: 300, burst: 600 } });
    const logRules = [...rules.dataplane.chains.values()].flatMap((c) => c.rules).filter((r) => r.target[1] === 'NFLOG');
    assert.equal(logRules.length, 2, 'one per isolated direction of x/a and x/b');
    for (const r of logRules) {
      assert.deepEqual(r.match.slice(0, -1), ['-m', 'limit', '--limit', '30/sec', '--limit-burst', '60', '-m', 'hashlimit', '--hashlimit-upto', '300/sec', '--hashlimit-burst', '600', '--hashlimit-name']);
      assert.deepEqual(r.target.slice(4, 6), ['--nflog-group', '7']);
    }
    // The kernel keeps a hashlimit table's rate from the rule that created it: other settings, another table.
    const names = new Set(logRules.map((r) => r.match.at(-1)));
    assert.equal(names.size, 1, 'every log rule shares the node\'s table');
    const [name] = names;
    assert.match(name!, /^pal-dl[0-9a-f]{4}$/);
    const other = nodeRules([...cluster, denyAllIngress('x')], { dropLog: { group: 7, rate: 100, burst: 200 } });
    const otherName = [...other.dataplane.chains.values()].flatMap((c) => c.rules).find((r) => r.target[1] === 'NFLOG')!.match.at(-1);
    assert.notEqual(otherName, name);
  });

  it('keeps tenant names out of the prefix: only a hash of them reaches the kernel', () => {
    const hostile = [...cluster, namespace('evil'), pod('evil', 'x"; -j ACCEPT', { ip: '10.1.1.99' }), denyAllIngress('evil')];
    const rules = nodeRules(hostile);
    const e = rules.dataplane.endpoints.find((p) => p.namespace === 'evil')!;
    assert.match(e.ingressLog!.prefix, /^pal:deny:in:[0-9a-f]{16}$/);
    assert.equal(e.ingressLog!.pod, 'x"; -j ACCEPT');
  });

  it('with --drop-log off, has no log rules and compiles audit policies to nothing', () => {
    const rules = nodeRules([...cluster, denyAllIngress('x'), audited(policy('y', 'trial', { podSelector: {}, policyTypes: ['Egress'] }))], { dropLog: null });
    assert.ok(![...rules.dataplane.chains.values()].some((c) => c.rules.some((r) => r.target.includes('NFLOG'))));
    assert.deepEqual(forward(rules, FROM_UPLINK(C_IP), A), { verdict: 'DROP', logged: [] });
    assert.ok(rules.dataplane.endpoints.every((e) => e.ingressLog === null && e.egressLog === null));
  });
});

describe('audit policies', () => {
  it('never drop: an audited deny-all logs would-deny for what it would refuse, and lets it through', () => {
    const rules = nodeRules([...cluster, audited(denyAllIngress('x'))]);
    assert.deepEqual(forward(rules, A, B), { verdict: 'ACCEPT', logged: ['would-deny ingress x/b by x/deny-all (group 29)'] });
    assert.deepEqual(forward(rules, FROM_UPLINK(C_IP), A), { verdict: 'ACCEPT', logged: ['would-deny ingress x/a by x/deny-all (group 29)'] });
  });

  it('log nothing for what their rules allow, and nothing for a pod\'s traffic to itself', () => {
    const rules = nodeRules([...cluster, audited(denyAllIngress('x')), audited(allowFromB)]);
    assert.deepEqual(forward(rules, B, A), { verdict: 'ACCEPT', logged: [] });
    assert.deepEqual(forward(rules, { ip: A_IP, iface: A.iface }, A), { verdict: 'ACCEPT', logged: [] });
  });

  it('change nothing where an enforced policy isolates the pod: its verdict stands and is logged as denied', () => {
    const rules = nodeRules([...cluster, allowFromB, audited(denyAllIngress('x'))]);
    assert.deepEqual(forward(rules, B, A), { verdict: 'ACCEPT', logged: [] });
    assert.deepEqual(forward(rules, FROM_UPLINK(C_IP), A), { verdict: 'DROP', logged: ['denied ingress x/a by x/allow-b (group 29)'] });
    // x/b has no enforced policy: the audit one logs.
    assert.deepEqual(forward(rules, A, B), { verdict: 'ACCEPT', logged: ['would-deny ingress x/b by x/deny-all (group 29)'] });
  });

  it('install only the chains of the directions they are used in', () => {
    const both = audited(policy('x', 'both', { podSelector: {}, policyTypes: ['Ingress', 'Egress'] }));
    const rules = nodeRules([...cluster, denyAllIngress('x'), both]);
    const names = new Names('pal');
    assert.ok(rules.dataplane.chains.has(names.policy('egress', 'x', 'both')), 'its egress chain: no enforced policy isolates x pods for egress');
    assert.ok(!rules.dataplane.chains.has(names.policy('ingress', 'x', 'both')), 'no ingress chain: x/deny-all isolates them for ingress');
    // pal-allow is always there; no policy here has a rule that leads to it.
    assert.deepEqual(rules.iptables.check(rules.ipsets).filter((p) => p !== 'unreachable: pal-allow (table mangle)'), [], 'no unreachable chain');
  });

  it('take only the exact value "true": anything else leaves the policy enforced, with a warning', () => {
    const typo = { ...denyAllIngress('x'), metadata: { name: 'deny-all', namespace: 'x', annotations: { 'palisade.io/audit': 'True' } } };
    const { snapshot, problems } = parseObjects([...cluster, typo].map((object) => ({ object })));
    assert.equal(snapshot.policies[0]!.audit, false);
    assert.deepEqual(problems.map(formatProblem).filter((p) => p.includes('audit')), ['warning: NetworkPolicy x/deny-all field metadata.annotations.palisade.io/audit: only "true" makes this an audit policy; it is enforced']);
  });

  it('are shown as such by the evaluator: no verdict changes, and wouldDeny where they would refuse', () => {
    const evaluator = new Evaluator(snapshotOf([...cluster, audited(denyAllIngress('x')), allowFromB]));
    const intoA = evaluator.evaluate({ src: C_IP, dst: A_IP, protocol: 'TCP', port: 80 });
    assert.equal(intoA.allowed, false, 'x/allow-b isolates x/a');
    assert.equal(intoA.ingress.audit?.wouldDeny, false);
    assert.deepEqual(intoA.ingress.policies, ['x/allow-b']);
    const intoB = evaluator.evaluate({ src: A_IP, dst: B_IP, protocol: 'TCP', port: 80 });
    assert.equal(intoB.allowed, true);
    assert.deepEqual(intoB.ingress.audit, { policies: ['x/deny-all'], wouldDeny: true, allowedBy: [], reason: 'audit policies x/deny-all would deny this packet were they enforced' });
  });
});

function endpoint(namespace: string, name: string, ip: string, ingressLog: DropLogSource | null, egressLog: DropLogSource | null = null): EndpointInfo {
  return {
    namespace, name, ip, interfaces: [], extraInterfaces: [], isolatedIngress: ingressLog?.verdict === 'denied', isolatedEgress: egressLog?.verdict === 'denied',
    ingressPolicies: [], egressPolicies: [], ingressAudit: [], egressAudit: [], ingressClusterPolicies: [], egressClusterPolicies: [], ingressLog, egressLog, toChain: `to-${name}`, fromChain: `from-${name}`,
  };
}

const source = (prefix: string, verdict: DropLogSource['verdict'], direction: DropLogSource['direction'], ns: string, pod: string, policies: string[]): DropLogSource => ({ prefix, verdict, direction, namespace: ns, pod, policies });

function packet(prefix: string, src: string, dst: string, extra: Partial<NflogPacket> = {}): NflogPacket {
  return { prefix, time: new Date('2026-12-03T20:16:18.123Z'), source: src, destination: dst, protocol: 6, sourcePort: 40000, destinationPort: 8080, icmpType: null, ...extra };
}

function recorder() {
  const logged: { fields: Record<string, unknown>; message: string }[] = [];
  const denied: DropRecord[] = [];
  const lost: { reason: LossReason; count: number }[] = [];
  let inUse = new Set<string>();
  const logger = { debug: () => {}, info: (fields: Record<string, unknown>, message: string) => logged.push({ fields, message }), warn: (fields: Record<string, unknown>, message: string) => logged.push({ fields, message }), error: () => {} };
  const metrics = { denied: (r: DropRecord) => denied.push(r), lost: (reason: LossReason, count: number) => lost.push({ reason, count }), policiesInUse: (p: ReadonlySet<string>) => { inUse = new Set(p); } };
  return { logged, denied, lost, logger, metrics, inUse: () => inUse };
}

describe('the drop log in the daemon', () => {
  const IN_A = source('pal:deny:in:aaaa', 'denied', 'ingress', 'x', 'a', ['x/deny-all']);
  const OUT_B = source('pal:deny:out:bbbb', 'denied', 'egress', 'x', 'b', ['x/egress-lock']);
  const AUDIT_A = source('pal:audit:in:cccc', 'would-deny', 'ingress', 'x', 'a', ['x/trial']);
  const pods = new Map([[A_IP, 'x/a'], [B_IP, 'x/b'], [C_IP, 'y/c']]);

  function log(capacity = 100) {
    let now = 1_000_000;
    const r = recorder();
    const dropLog = new DropLog({ capacity, logger: r.logger, metrics: r.metrics, now: () => now });
    dropLog.setPodLookup((ip) => pods.get(ip) ?? null);
    dropLog.install([endpoint('x', 'a', A_IP, IN_A), endpoint('x', 'b', B_IP, null, OUT_B)]);
    return { dropLog, r, advance: (ms: number) => { now += ms; } };
  }

  it('makes a record naming both pods, the port, the refusing side and its policies, logs it as one line and counts it', () => {
    const { dropLog, r } = log();
    dropLog.packet(packet(IN_A.prefix, C_IP, A_IP));
    const expected: DropRecord = {
      time: '2026-12-03T20:16:18.123Z', verdict: 'denied', direction: 'ingress', protocol: 'TCP', port: 8080,
      source: { ip: C_IP, namespace: 'y', pod: 'c' }, destination: { ip: A_IP, namespace: 'x', pod: 'a' }, policies: ['x/deny-all'],
    };
    assert.deepEqual(dropLog.query(), { drops: [expected], lost: 0 });
    const { time: _t, ...fields } = expected;
    assert.deepEqual(r.logged, [{ fields, message: 'connection denied' }]);
    assert.deepEqual(r.denied, [expected]);
  });

  it('names the refusing pod from the prefix for egress, leaves an address that is no pod bare, and gives ICMP no port', () => {
    const { dropLog } = log();
    dropLog.packet(packet(OUT_B.prefix, B_IP, OUTSIDE, { protocol: 1, sourcePort: null, destinationPort: null, icmpType: 8 }));
    const [record] = dropLog.query().drops;
    assert.deepEqual({ ...record, time: undefined }, {
      time: undefined, verdict: 'denied', direction: 'egress', protocol: 'ICMP', port: null,
      source: { ip: B_IP, namespace: 'x', pod: 'b' }, destination: { ip: OUTSIDE }, policies: ['x/egress-lock'],
    });
  });

  it('makes one record of a connection whose first packet is retransmitted, and a new one after the window or for another port', () => {
    const { dropLog, advance } = log();
    dropLog.packet(packet(IN_A.prefix, C_IP, A_IP));
    advance(1000);
    dropLog.packet(packet(IN_A.prefix, C_IP, A_IP));
    advance(3000);
    dropLog.packet(packet(IN_A.prefix, C_IP, A_IP));
    assert.equal(dropLog.query().drops.length, 1);
    dropLog.packet(packet(IN_A.prefix, C_IP, A_IP, { sourcePort: 40001 }));
    assert.equal(dropLog.query().drops.length, 2);
    advance(20_000);
    dropLog.packet(packet(IN_A.prefix, C_IP, A_IP));
    assert.equal(dropLog.query().drops.length, 3);
  });

  it('still attributes a packet logged just before a change under the rule that logged it, and ignores prefixes it never installed (saying so once)', () => {
    const { dropLog, r, advance } = log();
    dropLog.install([endpoint('x', 'a', A_IP, AUDIT_A)]);
    dropLog.packet(packet(IN_A.prefix, C_IP, A_IP));
    dropLog.packet(packet(AUDIT_A.prefix, B_IP, A_IP));
    assert.deepEqual(dropLog.query().drops.map((d) => `${d.verdict} ${d.policies.join(',')}`), ['would-deny x/trial', 'denied x/deny-all']);
    advance(60_000);
    dropLog.install([endpoint('x', 'a', A_IP, AUDIT_A)]);
    dropLog.packet(packet(IN_A.prefix, B_IP, A_IP, { sourcePort: 1 }));
    dropLog.packet(packet('someone:else', B_IP, A_IP));
    dropLog.packet(packet('someone:else', B_IP, A_IP, { sourcePort: 2 }));
    assert.equal(dropLog.query().drops.length, 2);
    assert.equal(r.logged.filter((l) => l.message.includes('prefix no installed rule')).length, 2, 'the stale prefix and the foreign one, once each');
  });

  it('keeps the newest records up to its capacity, newest first, filtered by pod (either end) and limited', () => {
    const { dropLog } = log(3);
    for (let port = 1; port <= 5; port++) dropLog.packet(packet(IN_A.prefix, port % 2 === 0 ? B_IP : C_IP, A_IP, { destinationPort: port }));
    assert.deepEqual(dropLog.query().drops.map((d) => d.port), [5, 4, 3]);
    assert.deepEqual(dropLog.query({ pod: 'x/b' }).drops.map((d) => d.port), [4]);
    assert.deepEqual(dropLog.query({ pod: 'x/a', limit: 2 }).drops.map((d) => d.port), [5, 4]);
    assert.deepEqual(dropLog.query({ pod: 'x/zzz' }).drops, []);
  });

  it('counts as lost what the rate limits held back (reached minus logged, across chain rewrites) and what the reader missed', () => {
    const { dropLog, r } = log();
    // The first reading after start is the baseline for rules already there.
    dropLog.observeCounters([{ chain: 'to-a', direction: 'ingress', reached: 500, logged: 200 }]);
    assert.equal(dropLog.query().lost, 0);
    dropLog.observeCounters([{ chain: 'to-a', direction: 'ingress', reached: 560, logged: 210 }]);
    assert.equal(dropLog.query().lost, 50);
    // Rewritten: counters start again from zero. A new chain counts from zero too.
    dropLog.observeCounters([{ chain: 'to-a', direction: 'ingress', reached: 5, logged: 5 }, { chain: 'to-b', direction: 'ingress', reached: 30, logged: 20 }]);
    assert.equal(dropLog.query().lost, 60);
    dropLog.lost(7);
    assert.equal(dropLog.query().lost, 67);
    assert.deepEqual(r.lost, [{ reason: 'rate-limit', count: 50 }, { reason: 'rate-limit', count: 10 }, { reason: 'reader', count: 7 }]);
  });

  it('tells the metrics which policies can appear in records, so series of policies gone from the node are removed', async () => {
    const metrics = new DaemonMetrics();
    const dropLog = new DropLog({ capacity: 10, logger: recorder().logger, metrics: metrics.dropLog });
    dropLog.install([endpoint('x', 'a', A_IP, IN_A), endpoint('x', 'b', B_IP, null, OUT_B)]);
    dropLog.packet(packet(IN_A.prefix, C_IP, A_IP));
    dropLog.packet(packet(OUT_B.prefix, B_IP, OUTSIDE));
    let text = await metrics.registry.metrics();
    assert.match(text, /palisade_denied_connections_total\{direction="ingress",verdict="denied"\} 1/);
    assert.match(text, /palisade_policy_denied_connections_total\{policy_namespace="x",policy="deny-all",verdict="denied"\} 1/);
    assert.match(text, /palisade_policy_denied_connections_total\{policy_namespace="x",policy="egress-lock",verdict="denied"\} 1/);
    dropLog.install([endpoint('x', 'a', A_IP, IN_A)]);
    text = await metrics.registry.metrics();
    assert.match(text, /policy="deny-all"/);
    assert.doesNotMatch(text, /policy="egress-lock"/);
  });
});

describe('the drop log of ClusterNetworkPolicy Deny rules, in the daemon', () => {
  const pods = new Map([[A_IP, 'x/a'], [B_IP, 'x/b'], [C_IP, 'y/c']]);
  const log = (direction: 'ingress' | 'egress', prefix: string): ClusterDenyLog => ({ prefix, direction, tier: 'Admin', policy: 'guard', priority: 10, rule: 1, ruleName: 'no-tools', chain: `pal-cd-${prefix.slice(-4)}` });
  const IN = log('ingress', 'pal:cnp:in:dddd');
  const OUT = log('egress', 'pal:cnp:out:eeee');

  it('names the policy and rule, and the pod by the packet\'s own address (the rule is shared), with no NetworkPolicies', async () => {
    const metrics = new DaemonMetrics();
    const dropLog = new DropLog({ capacity: 10, logger: recorder().logger, metrics: metrics.dropLog });
    dropLog.setPodLookup((ip) => pods.get(ip) ?? null);
    dropLog.install([], [IN, OUT]);
    dropLog.packet(packet(IN.prefix, C_IP, A_IP));
    dropLog.packet(packet(OUT.prefix, B_IP, OUTSIDE));
    const [egress, ingress] = dropLog.query().drops;
    assert.deepEqual({ ...ingress, time: undefined }, {
      time: undefined, verdict: 'denied', direction: 'ingress', protocol: 'TCP', port: 8080,
      source: { ip: C_IP, namespace: 'y', pod: 'c' }, destination: { ip: A_IP, namespace: 'x', pod: 'a' }, policies: [],
      clusterPolicy: { tier: 'Admin', name: 'guard', priority: 10, rule: 1, ruleName: 'no-tools' },
    });
    assert.deepEqual(egress?.source, { ip: B_IP, namespace: 'x', pod: 'b' });
    assert.deepEqual(dropLog.query({ pod: 'x/a' }).drops.length, 1);
    let text = await metrics.registry.metrics();
    assert.match(text, /palisade_policy_denied_connections_total\{policy_namespace="ClusterNetworkPolicy",policy="guard",verdict="denied"\} 2/);
    dropLog.install([], []);
    text = await metrics.registry.metrics();
    assert.doesNotMatch(text, /policy="guard"/);
  });

  it('compiles a Deny rule\'s log with a per-pod bucket keyed by the pod\'s address (source for egress, destination for ingress), then the node\'s', () => {
    const objects = [
      ...cluster,
      clusterPolicy('guard', { tier: 'Admin', priority: 10, subject: { namespaces: {} }, ingress: [{ action: 'Deny', name: 'r', from: [{ namespaces: {} }] }], egress: [{ action: 'Deny', to: [{ networks: ['198.51.100.0/24'] }] }] }),
    ];
    const settings = makeSettings({ nodeName: 'node-a' });
    assert.ok(settings.ok);
    const dataplane = compile(snapshotOf(objects), settings.settings);
    assert.deepEqual(dataplane.clusterDenyLogs.map((l) => `${l.direction} ${l.policy} ${l.rule} ${l.ruleName}`).sort(), ['egress guard 0 ', 'ingress guard 0 r']);
    for (const l of dataplane.clusterDenyLogs) {
      const [logRule, markRule] = dataplane.chains.get(l.chain)!.rules;
      assert.deepEqual(logRule!.match.slice(0, 10), ['-m', 'hashlimit', '--hashlimit-upto', '10/sec', '--hashlimit-burst', '20', '--hashlimit-mode', l.direction === 'ingress' ? 'dstip' : 'srcip', '--hashlimit-name', `pal-c${l.direction === 'ingress' ? 'i' : 'o'}${logRule!.match[9]!.slice(6)}`]);
      assert.ok(logRule!.target.includes(l.prefix));
      assert.match(l.prefix, /^pal:cnp:(in|out):[0-9a-f]{16}$/);
      assert.deepEqual(markRule!.target, ['-j', 'MARK', '--set-xmark', '0x400000/0x400000']);
    }
  });
});

describe('GET /drops', () => {
  const source = { drops: (q: { pod?: string; limit?: number }) => ({ drops: [], lost: 0, query: q }) as unknown as { drops: DropRecord[]; lost: number }, dropLogCapacity: 1000, ready: () => ({ ready: true, reason: 'ok' }), status: () => ({}), dataplane: () => null, snapshot: () => snapshotOf([]) };
  const get = (query: string) => drops(new URL(`http://127.0.0.1/drops${query}`), source);

  it('passes pod and limit through, with the limit capped at the buffer', () => {
    assert.deepEqual(JSON.parse(get('?pod=x/a&limit=5000').body as string), { drops: [], lost: 0, query: { pod: 'x/a', limit: 1000 } });
    assert.deepEqual(JSON.parse(get('').body as string), { drops: [], lost: 0, query: {} });
  });

  it('refuses a malformed pod, a bad limit and unknown parameters with 400, naming each', () => {
    const reply = get('?pod=nope&limit=-1&since=5');
    assert.equal(reply.status, 400);
    assert.deepEqual(JSON.parse(reply.body as string), { error: 'pod=nope: expected NAMESPACE/POD; limit=-1: must be a whole number of at least 1; since: unknown parameter (pod and limit are known)' });
  });
});

describe('drop log settings', () => {
  const parse = (argv: string[], env: Record<string, string> = {}) => parseDaemonConfig(['--node-name', 'n', ...argv], env);

  it('defaults to on, 100 records a second with a burst of 200, group 29, 1,000 kept', () => {
    const config = parse([]);
    assert.deepEqual(config.compiler.dropLog, { group: 29, rate: 100, burst: 200 });
    assert.equal(config.dropLogBuffer, 1000);
  });

  it('takes flags and PALISADE_ variables, and turns off with off', () => {
    assert.equal(parse(['--drop-log', 'off']).compiler.dropLog, null);
    const config = parse([], { PALISADE_DROP_LOG_RATE: '50', PALISADE_DROP_LOG_BUFFER: '10', PALISADE_DROP_LOG_GROUP: '3' });
    assert.deepEqual(config.compiler.dropLog, { group: 3, rate: 50, burst: 100 });
    assert.equal(config.dropLogBuffer, 10);
    // The kernel's limit matches take a burst of at most 10,000.
    assert.deepEqual(parse(['--drop-log-rate', '10000']).compiler.dropLog, { group: 29, rate: 10000, burst: 10000 });
  });

  it('names every bad value together', () => {
    assert.throws(() => parse(['--drop-log', 'maybe', '--drop-log-rate', '0', '--drop-log-buffer', 'lots', '--drop-log-group', '70000']), (error: Error) => {
      for (const part of ['--drop-log "maybe": must be on or off', '--drop-log-buffer "lots"', 'drop log NFLOG group 70000', 'drop log rate 0']) assert.ok(error.message.includes(part), `${part} in: ${error.message}`);
      return true;
    });
    assert.throws(() => parse(['--drop-log-rate', '20000']), /drop log rate 20000: must be a whole number of records per second from 1 to 10000/);
  });
});
