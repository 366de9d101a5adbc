import assert from 'node:assert/strict';
import { Evaluator } from '../../rules/evaluator.js';
import type { PacketProtocol } from '../../rules/evaluator.js';
import { namespace, node, pod, policy, snapshotOf } from '../support/builders.js';
import { SimulatedCluster } from '../support/cluster-sim.js';

/**
 * Every semantic rule of NetworkPolicy, each asserted twice: by the evaluator (the semantics as
 * documented) and by walking the compiled, rendered iptables rules of a two-node cluster. A case
 * passes only when both give the expected verdict.
 */

type Obj = Record<string, unknown>;
type Probe = readonly [from: string, to: string, protocol: PacketProtocol, port: number | null, allowed: boolean];

interface Case {
  readonly name: string;
  readonly objects: readonly Obj[];
  readonly probes: readonly Probe[];
}

const NODE_A = '10.0.0.1';
const NODE_B = '10.0.0.2';
const EXTERNAL = '198.51.100.7';
const nodes = [node('node-a', NODE_A), node('node-b', NODE_B)];

/** Two namespaces with two pods each on node-a, one pod on node-b. */
function base(extra: { labelsA?: Record<string, string>; labelsB?: Record<string, string> } = {}): Obj[] {
  return [
    ...nodes,
    namespace('ns1', { team: 'one' }),
    namespace('ns2', { team: 'two' }),
    pod('ns1', 'a', { ip: '10.1.1.1', labels: { app: 'a', ...extra.labelsA }, ports: [{ name: 'http', port: 8080 }] }),
    pod('ns1', 'b', { ip: '10.1.1.2', labels: { app: 'b', ...extra.labelsB }, ports: [{ name: 'http', port: 9090 }] }),
    pod('ns2', 'c', { ip: '10.1.2.1', labels: { app: 'c' } }),
    pod('ns2', 'd', { ip: '10.1.3.1', labels: { app: 'd', role: 'db' }, node: 'node-b' }),
  ];
}

const denyIngress = (ns: string, selector: Obj = {}): Obj => policy(ns, 'deny-ingress', { podSelector: selector });
const denyEgress = (ns: string): Obj => policy(ns, 'deny-egress', { podSelector: {}, policyTypes: ['Egress'] });

const cases: readonly Case[] = [
  {
    name: 'without policies every pod talks to every pod, ICMP included',
    objects: base(),
    probes: [['ns1/a', 'ns2/c', 'TCP', 80, true], ['ns2/d', 'ns1/a', 'ICMP', null, true], ['ns1/a', 'ns1/b', 'UDP', 53, true]],
  },
  {
    name: 'a policy with podSelector {} and no ingress isolates every pod of its namespace for every protocol',
    objects: [...base(), denyIngress('ns1')],
    probes: [['ns2/c', 'ns1/a', 'TCP', 80, false], ['ns2/c', 'ns1/b', 'ICMP', null, false], ['ns2/d', 'ns1/a', 'UDP', 53, false], ['ns1/a', 'ns2/c', 'TCP', 80, true]],
  },
  {
    name: 'a policy does not select pods of another namespace',
    objects: [...base(), denyIngress('ns2')],
    probes: [['ns2/c', 'ns1/a', 'TCP', 80, true], ['ns1/a', 'ns2/c', 'TCP', 80, false]],
  },
  {
    name: 'an empty ingress rule allows everything while an empty ingress list allows nothing',
    objects: [...base(), policy('ns1', 'open', { podSelector: { matchLabels: { app: 'a' } }, ingress: [{}] }), policy('ns1', 'shut', { podSelector: { matchLabels: { app: 'b' } }, ingress: [] })],
    probes: [['ns2/d', 'ns1/a', 'TCP', 1234, true], [EXTERNAL, 'ns1/a', 'ICMP', null, true], ['ns2/c', 'ns1/b', 'TCP', 80, false]],
  },
  {
    name: 'an empty from list and an absent from both mean any source',
    objects: [...base(), policy('ns1', 'p', { podSelector: {}, ingress: [{ from: [], ports: [{ port: 80 }] }, { ports: [{ port: 81 }] }] })],
    probes: [[EXTERNAL, 'ns1/a', 'TCP', 80, true], ['ns2/d', 'ns1/a', 'TCP', 81, true], ['ns2/d', 'ns1/a', 'TCP', 82, false]],
  },
  {
    name: 'namespaceSelector and podSelector in one peer must both match',
    objects: [...base(), policy('ns1', 'and', { podSelector: {}, ingress: [{ from: [{ namespaceSelector: { matchLabels: { team: 'two' } }, podSelector: { matchLabels: { role: 'db' } } }] }] })],
    probes: [['ns2/d', 'ns1/a', 'TCP', 80, true], ['ns2/c', 'ns1/a', 'TCP', 80, false], ['ns1/b', 'ns1/a', 'TCP', 80, false]],
  },
  {
    name: 'namespaceSelector and podSelector as two peers match either',
    objects: [...base({ labelsB: { role: 'db' } }), policy('ns1', 'or', { podSelector: { matchLabels: { app: 'a' } }, ingress: [{ from: [{ namespaceSelector: { matchLabels: { team: 'two' } } }, { podSelector: { matchLabels: { role: 'db' } } }] }] })],
    probes: [['ns2/c', 'ns1/a', 'TCP', 80, true], ['ns2/d', 'ns1/a', 'TCP', 80, true], ['ns1/b', 'ns1/a', 'TCP', 80, true], [EXTERNAL, 'ns1/a', 'TCP', 80, false]],
  },
  {
    name: 'a podSelector peer alone selects only pods of the policy namespace',
    objects: [...base(), policy('ns1', 'same-ns', { podSelector: { matchLabels: { app: 'a' } }, ingress: [{ from: [{ podSelector: {} }] }] })],
    probes: [['ns1/b', 'ns1/a', 'TCP', 80, true], ['ns2/c', 'ns1/a', 'TCP', 80, false]],
  },
  {
    name: 'a namespaceSelector peer matches pods in every matching namespace, on every node',
    objects: [...base(), namespace('ns3', { team: 'two' }), pod('ns3', 'e', { ip: '10.1.4.1', node: 'node-b' }), policy('ns1', 'teams', { podSelector: {}, ingress: [{ from: [{ namespaceSelector: { matchLabels: { team: 'two' } } }] }] })],
    probes: [['ns2/c', 'ns1/a', 'TCP', 80, true], ['ns3/e', 'ns1/a', 'TCP', 80, true], ['ns2/d', 'ns1/a', 'TCP', 80, true], ['ns1/b', 'ns1/a', 'TCP', 80, false]],
  },
  {
    name: 'an empty namespaceSelector matches pods of all namespaces but no external address',
    objects: [...base(), policy('ns1', 'cluster', { podSelector: {}, ingress: [{ from: [{ namespaceSelector: {} }] }] })],
    probes: [['ns2/c', 'ns1/a', 'TCP', 80, true], ['ns1/b', 'ns1/a', 'TCP', 80, true], [EXTERNAL, 'ns1/a', 'TCP', 80, false]],
  },
  {
    name: 'the automatic kubernetes.io/metadata.name label selects a namespace by name',
    objects: [...base(), policy('ns1', 'by-name', { podSelector: {}, ingress: [{ from: [{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'ns2' } } }] }] })],
    probes: [['ns2/c', 'ns1/a', 'TCP', 80, true], ['ns1/b', 'ns1/a', 'TCP', 80, false]],
  },
  {
    name: 'matchExpressions In, NotIn, Exists and DoesNotExist select as documented',
    objects: [
      ...base(),
      pod('ns1', 'x', { ip: '10.1.1.3', labels: { tier: 'front', env: 'prod' } }),
      pod('ns1', 'y', { ip: '10.1.1.4', labels: { tier: 'back' } }),
      pod('ns1', 'z', { ip: '10.1.1.5', labels: { tier: 'cache', env: 'dev' } }),
      policy('ns1', 'exprs', {
        podSelector: { matchLabels: { app: 'a' } },
        ingress: [
          { from: [{ podSelector: { matchExpressions: [{ key: 'tier', operator: 'In', values: ['front', 'edge'] }, { key: 'env', operator: 'Exists' }] } }], ports: [{ port: 1 }] },
          { from: [{ podSelector: { matchExpressions: [{ key: 'tier', operator: 'NotIn', values: ['front', 'cache'] }] } }], ports: [{ port: 2 }] },
          { from: [{ podSelector: { matchExpressions: [{ key: 'env', operator: 'DoesNotExist' }, { key: 'tier', operator: 'Exists' }] } }], ports: [{ port: 3 }] },
        ],
      }),
    ],
    probes: [
      ['ns1/x', 'ns1/a', 'TCP', 1, true], ['ns1/y', 'ns1/a', 'TCP', 1, false], ['ns1/z', 'ns1/a', 'TCP', 1, false],
      ['ns1/y', 'ns1/a', 'TCP', 2, true], ['ns1/b', 'ns1/a', 'TCP', 2, true], ['ns1/x', 'ns1/a', 'TCP', 2, false], ['ns1/z', 'ns1/a', 'TCP', 2, false],
      ['ns1/y', 'ns1/a', 'TCP', 3, true], ['ns1/x', 'ns1/a', 'TCP', 3, false], ['ns1/b', 'ns1/a', 'TCP', 3, false],
    ],
  },
  {
    name: 'a named port resolves against each destination pod, so one name allows different numbers on two pods',
    objects: [...base(), policy('ns1', 'http', { podSelector: {}, ingress: [{ ports: [{ port: 'http' }] }] })],
    probes: [['ns2/c', 'ns1/a', 'TCP', 8080, true], ['ns2/c', 'ns1/a', 'TCP', 9090, false], ['ns2/c', 'ns1/b', 'TCP', 9090, true], ['ns2/c', 'ns1/b', 'TCP', 8080, false], ['ns2/c', 'ns1/a', 'UDP', 8080, false]],
  },
  {
    name: 'an egress named port resolves against the destination pod and never matches a non-pod address',
    objects: [...base(), policy('ns2', 'out', { podSelector: { matchLabels: { app: 'c' } }, policyTypes: ['Egress'], egress: [{ ports: [{ port: 'http', protocol: 'TCP' }] }] })],
    probes: [['ns2/c', 'ns1/a', 'TCP', 8080, true], ['ns2/c', 'ns1/b', 'TCP', 9090, true], ['ns2/c', 'ns1/b', 'TCP', 8080, false], ['ns2/c', EXTERNAL, 'TCP', 8080, false]],
  },
  {
    name: 'a named port whose protocol differs from the container port does not match',
    objects: [...base(), pod('ns1', 'dns', { ip: '10.1.1.9', ports: [{ name: 'dns', port: 53, protocol: 'UDP' }] }), policy('ns1', 'dns', { podSelector: {}, ingress: [{ ports: [{ port: 'dns', protocol: 'TCP' }] }, { ports: [{ port: 'dns', protocol: 'UDP' }], from: [{ podSelector: { matchLabels: { app: 'b' } } }] }] })],
    probes: [['ns2/c', 'ns1/dns', 'TCP', 53, false], ['ns2/c', 'ns1/dns', 'UDP', 53, false], ['ns1/b', 'ns1/dns', 'UDP', 53, true]],
  },
  {
    name: 'endPort allows the whole inclusive range and nothing outside it',
    objects: [...base(), policy('ns1', 'range', { podSelector: {}, ingress: [{ ports: [{ port: 8000, endPort: 8080 }, { protocol: 'UDP', port: 53 }] }] })],
    probes: [['ns2/c', 'ns1/a', 'TCP', 8000, true], ['ns2/c', 'ns1/a', 'TCP', 8080, true], ['ns2/c', 'ns1/a', 'TCP', 8040, true], ['ns2/c', 'ns1/a', 'TCP', 7999, false], ['ns2/c', 'ns1/a', 'TCP', 8081, false], ['ns2/c', 'ns1/a', 'UDP', 53, true], ['ns2/c', 'ns1/a', 'TCP', 53, false]],
  },
  {
    name: 'a port without protocol means TCP, and a rule with ports allows no ICMP',
    objects: [...base(), policy('ns1', 'tcp80', { podSelector: {}, ingress: [{ ports: [{ port: 80 }] }] })],
    probes: [['ns2/c', 'ns1/a', 'TCP', 80, true], ['ns2/c', 'ns1/a', 'UDP', 80, false], ['ns2/c', 'ns1/a', 'SCTP', 80, false], ['ns2/c', 'ns1/a', 'ICMP', null, false]],
  },
  {
    name: 'a protocol without port allows every port of that protocol only',
    objects: [...base(), policy('ns1', 'sctp', { podSelector: {}, ingress: [{ ports: [{ protocol: 'SCTP' }] }] })],
    probes: [['ns2/c', 'ns1/a', 'SCTP', 9, true], ['ns2/c', 'ns1/a', 'SCTP', 65535, true], ['ns2/c', 'ns1/a', 'TCP', 9, false]],
  },
  {
    name: 'ipBlock matches any address in its range, pod addresses included, except the except ranges',
    objects: [...base(), policy('ns1', 'block', { podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: '10.1.0.0/16', except: ['10.1.2.0/24'] } }] }] })],
    probes: [['ns2/d', 'ns1/a', 'TCP', 80, true], ['ns2/c', 'ns1/a', 'TCP', 80, false], [EXTERNAL, 'ns1/a', 'TCP', 80, false]],
  },
  {
    name: 'an egress ipBlock of 0.0.0.0/0 with an except reaches everything but the except',
    objects: [...base(), policy('ns1', 'world', { podSelector: { matchLabels: { app: 'a' } }, policyTypes: ['Egress'], egress: [{ to: [{ ipBlock: { cidr: '0.0.0.0/0', except: ['10.1.0.0/16'] } }] }] })],
    probes: [['ns1/a', EXTERNAL, 'TCP', 443, true], ['ns1/a', 'ns2/c', 'TCP', 80, false], ['ns1/a', NODE_B, 'TCP', 22, true]],
  },
  {
    name: 'an ipBlock except equal to half of 0.0.0.0/0 excludes that whole half',
    objects: [...base(), policy('ns1', 'half', { podSelector: { matchLabels: { app: 'a' } }, policyTypes: ['Egress'], egress: [{ to: [{ ipBlock: { cidr: '0.0.0.0/0', except: ['128.0.0.0/1'] } }] }] })],
    probes: [['ns1/a', 'ns2/c', 'TCP', 80, true], ['ns1/a', EXTERNAL, 'TCP', 80, false]],
  },
  {
    name: 'a connection needs egress allowed at the source and ingress allowed at the destination',
    objects: [...base(), denyEgress('ns1'), policy('ns1', 'a-to-c', { podSelector: { matchLabels: { app: 'a' } }, policyTypes: ['Egress'], egress: [{ to: [{ namespaceSelector: {} }] }] }), denyIngress('ns2', { matchLabels: { app: 'd' } })],
    probes: [['ns1/a', 'ns2/c', 'TCP', 80, true], ['ns1/b', 'ns2/c', 'TCP', 80, false], ['ns1/a', 'ns2/d', 'TCP', 80, false]],
  },
  {
    name: 'policies selecting the same pod add up',
    objects: [...base(), policy('ns1', 'p80', { podSelector: {}, ingress: [{ ports: [{ port: 80 }], from: [{ namespaceSelector: {} }] }] }), policy('ns1', 'p443', { podSelector: { matchLabels: { app: 'a' } }, ingress: [{ ports: [{ port: 443 }] }] })],
    probes: [['ns2/c', 'ns1/a', 'TCP', 80, true], ['ns2/c', 'ns1/a', 'TCP', 443, true], ['ns2/c', 'ns1/b', 'TCP', 443, false], ['ns2/c', 'ns1/a', 'TCP', 22, false]],
  },
  {
    name: 'policyTypes Egress alone leaves ingress open even when ingress rules are written',
    objects: [...base(), policy('ns1', 'egress-only', { podSelector: {}, policyTypes: ['Egress'], ingress: [{ from: [{ podSelector: { matchLabels: { app: 'nobody' } } }] }], egress: [] })],
    probes: [['ns2/c', 'ns1/a', 'TCP', 80, true], ['ns1/a', 'ns2/c', 'TCP', 80, false]],
  },
  {
    name: 'without policyTypes an egress section makes the policy isolate egress too',
    objects: [...base(), policy('ns1', 'implied', { podSelector: {}, egress: [{ ports: [{ port: 53, protocol: 'UDP' }] }] })],
    probes: [['ns1/a', 'ns2/c', 'UDP', 53, true], ['ns1/a', 'ns2/c', 'TCP', 80, false], ['ns2/c', 'ns1/a', 'TCP', 80, false]],
  },
  {
    name: 'without policyTypes an empty egress list isolates ingress only',
    objects: [...base(), policy('ns1', 'empty-egress', { podSelector: {}, egress: [] })],
    probes: [['ns1/a', 'ns2/c', 'TCP', 80, true], ['ns2/c', 'ns1/a', 'TCP', 80, false]],
  },
  {
    name: 'traffic between a pod and its own node is always allowed, traffic from other nodes is not',
    objects: [...base(), denyIngress('ns1'), denyEgress('ns1')],
    probes: [['ns1/a', NODE_A, 'TCP', 10250, true], [NODE_A, 'ns1/a', 'TCP', 8080, true], [NODE_B, 'ns1/a', 'TCP', 8080, false], ['ns1/a', NODE_B, 'TCP', 10250, false]],
  },
  {
    name: 'pods on other nodes count as peers',
    objects: [...base(), policy('ns1', 'from-db', { podSelector: {}, ingress: [{ from: [{ namespaceSelector: {}, podSelector: { matchLabels: { role: 'db' } } }] }] })],
    probes: [['ns2/d', 'ns1/a', 'TCP', 5432, true], ['ns2/c', 'ns1/a', 'TCP', 5432, false]],
  },
  {
    name: 'a hostNetwork pod is never selected, neither as endpoint nor as peer',
    objects: [...base(), pod('ns1', 'agent', { ip: NODE_B, node: 'node-b', hostNetwork: true, labels: { app: 'agent' } }), policy('ns1', 'from-agent', { podSelector: {}, ingress: [{ from: [{ podSelector: { matchLabels: { app: 'agent' } } }] }] })],
    probes: [[NODE_B, 'ns1/a', 'TCP', 80, false]],
  },
  {
    name: 'a finished pod counts nowhere, even when another pod reuses its address',
    objects: [...base(), pod('ns2', 'old', { ip: '10.1.2.50', labels: { role: 'db' }, phase: 'Succeeded' }), pod('ns2', 'new', { ip: '10.1.2.50', labels: {} }), policy('ns1', 'from-db', { podSelector: {}, ingress: [{ from: [{ namespaceSelector: {}, podSelector: { matchLabels: { role: 'db' } } }] }] })],
    probes: [['ns2/new', 'ns1/a', 'TCP', 80, false], ['ns2/d', 'ns1/a', 'TCP', 80, true]],
  },
  {
    name: 'a pod known only by the VPC CNI annotation is already enforced',
    objects: [...base(), pod('ns1', 'fresh', { annotationIp: '10.1.1.77' }), denyIngress('ns1')],
    probes: [['ns2/c', 'ns1/fresh', 'TCP', 80, false], ['ns1/fresh', 'ns2/c', 'TCP', 80, true]],
  },
  {
    name: 'the seed allow-out-to-in policy lets name=out reach name=in and nothing else',
    objects: [...base({ labelsA: { name: 'in' }, labelsB: { name: 'out' } }), policy('ns1', 'allow-out-to-in', { podSelector: {}, ingress: [{ from: [{ podSelector: { matchLabels: { name: 'out' } } }] }], egress: [{ to: [{ podSelector: { matchLabels: { name: 'in' } } }] }], policyTypes: ['Ingress', 'Egress'] })],
    probes: [['ns1/b', 'ns1/a', 'ICMP', null, true], ['ns1/a', 'ns1/b', 'ICMP', null, false], ['ns2/c', 'ns1/a', 'TCP', 80, false]],
  },
];

function resolve(snapshotPods: readonly { namespace: string; name: string; ip: string | null }[], ref: string): string {
  if (!ref.includes('/')) return ref;
  const [ns, name] = ref.split('/');
  const found = snapshotPods.find((p) => p.namespace === ns && p.name === name);
  if (found?.ip == null) throw new Error(`no pod ${ref} with an address in the case`);
  return found.ip;
}

describe('NetworkPolicy semantics, by the evaluator and through the compiled rules', () => {
  for (const testCase of cases) {
    it(testCase.name, () => {
      const snapshot = snapshotOf(testCase.objects);
      const evaluator = new Evaluator(snapshot);
      const cluster = new SimulatedCluster(snapshot, ['node-a', 'node-b']);
      for (const [from, to, protocol, port, allowed] of testCase.probes) {
        const packet = { src: resolve(snapshot.pods, from), dst: resolve(snapshot.pods, to), protocol, port };
        const what = `${from} -> ${to} ${protocol}${port === null ? '' : `/${port}`}`;
        const verdict = evaluator.evaluate(packet);
        assert.equal(verdict.allowed, allowed, `evaluator: ${what}: expected ${allowed ? 'allowed' : 'denied'}\n${verdict.egress.reason}\n${verdict.ingress.reason}`);
        const traced = cluster.send(packet);
        assert.equal(traced.allowed, allowed, `rules: ${what}: expected ${allowed ? 'allowed' : 'denied'}\n${traced.describe()}`);
      }
    });
  }
});
