import { DataplaneCompiler } from '../rules/compiler.js';
import type { Dataplane } from '../rules/dataplane.js';
import { Names } from '../rules/names.js';
import { parsePod } from '../rules/pod.js';
import { parsePolicy } from '../rules/policy.js';
import { DEFAULT_POLICY_BUDGET } from '../rules/policy-budget.js';
import { renderIptables } from '../rules/render.js';
import { makeSettings } from '../rules/settings.js';
import type { Report } from './run.js';

/**
 * One NetworkPolicy rule with N pod-selector peers and M named ports, N and M in 10, 100, 300 and
 * 1,000, installed on a node where it selects a pod, in a cluster of 2,000 pods that fill its sets.
 * What it costs: iptables rules, ipsets and their members, parse and compile time, heap. Rules grow
 * with N + M (a rule of many peers and many ports gets a chain of its own for its peers), never N x M.
 * The budget is lifted here to measure the compiler itself; the last table shows the default budget.
 */

const SIZES = [10, 100, 300, 1000] as const;
const PODS = 2000;
const NAMESPACES = 20;
const RUNS = 3;
const LIFTED = { rules: 1e9, sets: 1e9, setEntries: 1e9, selectorPods: 1e9 };

type Obj = Record<string, unknown>;

function policyObject(peers: number, ports: number): Obj {
  return {
    apiVersion: 'networking.k8s.io/v1',
    kind: 'NetworkPolicy',
    metadata: { namespace: 'ns0', name: `big-${peers}x${ports}` },
    spec: {
      podSelector: { matchLabels: { role: 'server' } },
      ingress: [{
        from: Array.from({ length: peers }, (_, i) => ({ namespaceSelector: {}, podSelector: { matchLabels: { idx: `p${i}` } } })),
        ports: Array.from({ length: ports }, (_, i) => ({ port: `n${i}` })),
      }],
    },
  };
}

/** Pods spread over namespaces, each matching one peer and declaring one of the named ports. */
function podObjects(peers: number, ports: number): Obj[] {
  return Array.from({ length: PODS }, (_, k) => ({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { namespace: `ns${k % NAMESPACES}`, name: `pod-${k}`, labels: { idx: `p${k % peers}`, ...(k === 0 ? { role: 'server' } : {}) } },
    spec: { nodeName: k % 10 === 0 ? 'node-a' : 'node-b', containers: [{ name: 'main', ports: [{ name: `n${k % ports}`, containerPort: 8000 + (k % 1000) }] }] },
    status: { phase: 'Running', podIP: `10.${1 + (k >> 16)}.${(k >> 8) & 255}.${k & 255}`, podIPs: [{ ip: `10.${1 + (k >> 16)}.${(k >> 8) & 255}.${k & 255}` }] },
  }));
}

function gc(): void {
  (globalThis as { gc?: () => void }).gc?.();
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

interface Measure {
  readonly parseMs: number;
  readonly compileMs: number;
  readonly rules: number;
  readonly sets: number;
  readonly members: number;
  readonly textBytes: number;
  readonly heapBytes: number;
}

function measure(peers: number, ports: number): Measure {
  const settings = makeSettings({ nodeName: 'node-a', policyBudget: LIFTED });
  if (!settings.ok) throw new Error(settings.errors.join('; '));
  const pods = podObjects(peers, ports).map((o) => parsePod(o).record!);
  const object = policyObject(peers, ports);
  const names = new Names('pal');
  const parseTimes: number[] = [];
  const compileTimes: number[] = [];
  let dataplane: Dataplane | null = null;
  let heapBytes = 0;
  for (let run = 0; run < RUNS; run++) {
    const compiler = new DataplaneCompiler(settings.settings);
    for (const pod of pods) compiler.setPod(pod);
    compiler.build();
    gc();
    const heapBefore = process.memoryUsage().heapUsed;
    const t0 = performance.now();
    const record = parsePolicy(object, LIFTED).record!;
    const t1 = performance.now();
    compiler.setPolicy(record);
    dataplane = compiler.build();
    const t2 = performance.now();
    gc();
    heapBytes = process.memoryUsage().heapUsed - heapBefore;
    parseTimes.push(t1 - t0);
    compileTimes.push(t2 - t1);
  }
  const policyChains = [...dataplane!.chains.values()].filter((c) => c.name === names.policy('ingress', 'ns0', `big-${peers}x${ports}`) || c.name.startsWith('pal-ri-'));
  const setNames = new Set(policyChains.flatMap((c) => c.rules.flatMap((r) => {
    const at = r.match.indexOf('--match-set');
    return at < 0 ? [] : [r.match[at + 1]!];
  })));
  let members = 0;
  for (const name of setNames) members += dataplane!.ipsets.get(name)?.members.size ?? 0;
  return {
    parseMs: median(parseTimes),
    compileMs: median(compileTimes),
    rules: policyChains.reduce((n, c) => n + c.rules.length, 0),
    sets: setNames.size,
    members,
    textBytes: renderIptables(dataplane!).length,
    heapBytes,
  };
}

const fmt = (n: number): string => n.toLocaleString('en-US');

export async function run(report: Report): Promise<void> {
  report.section('policy-size: one rule with N selector peers x M named ports, installed on the node it selects (budget lifted)');
  const rows: { n: number; m: number; result: Measure }[] = [];
  for (const n of SIZES) {
    for (const m of SIZES) {
      const result = measure(n, m);
      rows.push({ n, m, result });
      const linear = result.rules === n + m + 1;
      report.row(`${fmt(n)} peers x ${fmt(m)} ports: iptables rules (product: ${fmt(n * m)})`, fmt(result.rules), { text: `= N+M+1 = ${fmt(n + m + 1)}`, met: linear });
      report.row(`${fmt(n)} x ${fmt(m)}: ipsets, members`, `${fmt(result.sets)}, ${fmt(result.members)}`);
      report.row(`${fmt(n)} x ${fmt(m)}: parse, compile`, `${result.parseMs.toFixed(1)} ms, ${result.compileMs.toFixed(1)} ms`);
      report.row(`${fmt(n)} x ${fmt(m)}: heap held, restore text`, `${(result.heapBytes / 1024 / 1024).toFixed(2)} MiB, ${(result.textBytes / 1024).toFixed(0)} KiB`);
    }
  }
  const small = rows.find((r) => r.n === 100 && r.m === 100)!.result;
  const large = rows.find((r) => r.n === 1000 && r.m === 1000)!.result;
  const ratio = large.compileMs / Math.max(small.compileMs, 0.01);
  report.row('compile time, 1,000x1,000 over 100x100 (10x the peers+ports)', `${ratio.toFixed(1)}x`, { text: '< 20x (linear)', met: ratio < 20 });
  report.note(`${fmt(PODS)} pods in ${NAMESPACES} namespaces fill the sets; medians of ${RUNS} runs; heap measured with --expose-gc`);

  report.section(`policy-size: the default budget (${fmt(DEFAULT_POLICY_BUDGET.rules)} rules, ${fmt(DEFAULT_POLICY_BUDGET.sets)} sets, ${fmt(DEFAULT_POLICY_BUDGET.setEntries)} set entries)`);
  for (const [n, m] of [[100, 100], [300, 300], [1000, 1000]] as const) {
    const t0 = performance.now();
    const { record, problems } = parsePolicy(policyObject(n, m));
    const took = performance.now() - t0;
    const verdict = record!.overBudget ? `fails closed in ${took.toFixed(1)} ms` : `within (${fmt(record!.cost!.rules)} rules, ${fmt(record!.cost!.sets)} sets)`;
    report.row(`${fmt(n)} peers x ${fmt(m)} ports`, verdict);
    if (record!.overBudget) report.note(problems.find((p) => p.severity === 'error')!.message);
  }

  report.section(`policy-size: N selector peers that each name every pod (${fmt(PODS)} pods), against the selector-pods budget`);
  for (const n of [10, 100, 500] as const) {
    for (const [label, selectorPods] of [[`default budget (${fmt(DEFAULT_POLICY_BUDGET.selectorPods)} pods)`, DEFAULT_POLICY_BUDGET.selectorPods], ['budget lifted', LIFTED.selectorPods]] as const) {
      const result = broad(n, selectorPods);
      report.row(`${fmt(n)} broad peers, ${label}`, `${result.verdict}, ${result.compileMs.toFixed(1)} ms`);
    }
  }
  report.note('each peer is a distinct selector matching every pod (key-i DoesNotExist): N x pods set members unless refused, and refusing fills nothing');
}

/** A policy whose peers are N distinct selectors matching every pod of the cluster. */
function broad(peers: number, selectorPods: number): { verdict: string; compileMs: number } {
  const settings = makeSettings({ nodeName: 'node-a', policyBudget: { ...LIFTED, selectorPods } });
  if (!settings.ok) throw new Error(settings.errors.join('; '));
  const compiler = new DataplaneCompiler(settings.settings);
  for (const object of podObjects(10, 10)) compiler.setPod(parsePod(object).record!);
  compiler.build();
  const object = policyObject(0, 0);
  (object['spec'] as Obj)['ingress'] = [{ from: Array.from({ length: peers }, (_, i) => ({ namespaceSelector: {}, podSelector: { matchExpressions: [{ key: `key-${i}`, operator: 'DoesNotExist' }] } })) }];
  const t0 = performance.now();
  compiler.setPolicy(parsePolicy(object, LIFTED).record!);
  const dataplane = compiler.build();
  const compileMs = performance.now() - t0;
  const over = compiler.selectorPodsOverBudget().get('ns0/big-0x0');
  let members = 0;
  for (const set of dataplane.ipsets.values()) members += set.members.size;
  return { verdict: over === undefined ? `installed, ${fmt(members)} set members` : `refused (it would look at ${fmt(over)} pods)`, compileMs };
}
