import { parseClusterPolicy } from '../rules/cluster-policy.js';
import { DataplaneCompiler } from '../rules/compiler.js';
import type { Dataplane } from '../rules/dataplane.js';
import type { ClusterPolicyRecord, NamespaceRecord } from '../rules/model.js';
import { parseNamespace } from '../rules/namespace.js';
import type { Snapshot } from '../rules/snapshot.js';
import { compile, parseObjects } from '../rules/snapshot.js';
import { GOAL_FULL_MS, GOAL_WALK, GcLog, RUNS, count, loaded, measureChanges, median, ms, repeat, reportChanges, settingsFor, sizeOf, stride, timeIt } from './compile-measure.js';
import type { Size } from './compile-measure.js';
import type { Report } from './run.js';
import { clusterPolicyWithExtraPort, clusterPolicyWithNewPeer, clusterPolicyWithPriority, syntheticClusterPolicies } from './synthetic-cluster-policies.js';
import type { Obj, SyntheticCluster, WalkResult } from './synthetic-cluster.js';
import { guardrailProbes, traceWalks, walkProbes } from './synthetic-cluster.js';

/**
 * The same cluster with 100 ClusterNetworkPolicies added (bench/synthetic-cluster-policies.ts), set
 * beside the cluster without them: full compile, incremental ClusterNetworkPolicy changes, rules and
 * sets, and the rules the first packet of a new connection walks, each held to the goals the cluster
 * without them is held to. The probes add packets the guardrails are about (the instance metadata
 * service, another node's kubelet) to the usual ones.
 */

function parsedClusterPolicy(object: Obj): ClusterPolicyRecord {
  const record = parseClusterPolicy(object).record;
  if (record === null) throw new Error('changed ClusterNetworkPolicy did not parse');
  return record;
}

function parsedNamespace(object: Obj): NamespaceRecord {
  const record = parseNamespace(object).record;
  if (record === null) throw new Error('changed namespace did not parse');
  return record;
}

function sizeRow(report: Report, label: string, without: number, withPolicies: number): void {
  report.row(`${label}: without / with`, `${count(without)} / ${count(withPolicies)}`);
}

/** The dataplane is the same as without ClusterNetworkPolicies: the compiler takes them but renders nothing for them. */
function sameDataplane(a: Dataplane, b: Dataplane): boolean {
  const sa = sizeOf(a);
  const sb = sizeOf(b);
  if (sa.rules !== sb.rules || sa.chains !== sb.chains || sa.ipsets !== sb.ipsets || sa.members !== sb.members) return false;
  for (const name of a.chains.keys()) if (!b.chains.has(name)) return false;
  return true;
}

function walkRows(report: Report, without: readonly WalkResult[], withPolicies: readonly WalkResult[]): void {
  const walked = (walks: readonly WalkResult[]) => walks.map((w) => w.rulesWalked);
  const max = (walks: readonly WalkResult[]) => Math.max(0, ...walked(walks));
  report.row('rules walked by a new packet: max, without / with', `${max(without)} / ${max(withPolicies)}`, { text: `<= ${GOAL_WALK}`, met: max(withPolicies) <= GOAL_WALK });
  report.row('rules walked by a new packet: median, without / with', `${median(walked(without))} / ${median(walked(withPolicies))}`);
  for (const kind of [...new Set(withPolicies.map((w) => w.probe.kind))]) {
    const mine = (walks: readonly WalkResult[]) => walks.filter((w) => w.probe.kind === kind).map((w) => w.rulesWalked);
    const text = (xs: number[]) => `${xs.length > 0 ? Math.max(...xs) : 0}/${median(xs)}`;
    report.row(`  ${kind}: max/median, without / with`, `${text(mine(without))} / ${text(mine(withPolicies))}`);
  }
}

export async function runWithClusterPolicies(report: Report, cluster: SyntheticCluster, base: Snapshot, baseDataplane: Dataplane): Promise<void> {
  const objects = syntheticClusterPolicies(cluster);
  report.section(`compile with ClusterNetworkPolicies: the cluster above and ${objects.length} ClusterNetworkPolicies`);
  const settings = settingsFor(cluster);

  // Through the real parser, as a user applies them: not one may be invalid or fail closed.
  const parse = repeat(() => parseObjects(objects.map((object) => ({ object }))));
  const problems = parse.value.problems;
  if (problems.some((p) => p.severity === 'error')) throw new Error(`synthetic ClusterNetworkPolicies are invalid: ${JSON.stringify(problems.find((p) => p.severity === 'error'))}`);
  const policies = parse.value.snapshot.clusterPolicies;
  const snapshot: Snapshot = { ...base, clusterPolicies: policies };
  const admin = policies.filter((p) => p.tier === 'Admin');
  const priorities = new Map<string, number>();
  for (const p of policies) priorities.set(`${p.tier}/${p.priority}`, (priorities.get(`${p.tier}/${p.priority}`) ?? 0) + 1);
  const tied = [...priorities.values()].filter((n) => n > 1).reduce((a, b) => a + b, 0);
  const rules = policies.reduce((n, p) => n + p.ingress.length + p.egress.length, 0);
  report.note(`${admin.length} Admin, ${policies.length - admin.length} Baseline; ${rules} rules; ${priorities.size} distinct tier/priority pairs, ${tied} policies sharing theirs; ${problems.length} warnings`);
  report.row('parse the ClusterNetworkPolicies', ms(median(parse.times)));

  // Full compile, both ways, timed alike.
  const withoutFull = repeat(() => compile(base, settings));
  const withFull = repeat(() => compile(snapshot, settings));
  const dataplane = withFull.value;
  report.row('full compile (from empty), without', ms(median(withoutFull.times)));
  report.row('full compile (from empty), with', ms(median(withFull.times)), { text: `< ${GOAL_FULL_MS} ms`, met: median(withFull.times) < GOAL_FULL_MS });
  const phases = { policies: [] as number[], build: [] as number[] };
  for (let i = 0; i <= RUNS; i++) {
    const compiler = loaded(cluster, base);
    const [, policiesMs] = timeIt(() => { for (const policy of policies) compiler.setClusterPolicy(policy); });
    const [, buildMs] = timeIt(() => compiler.build());
    if (i === 0) continue; // warm-up
    phases.policies.push(policiesMs);
    phases.build.push(buildMs);
  }
  report.row('  of which: setClusterPolicy x 100, onto the loaded cluster', ms(median(phases.policies)));
  report.row('  build() after them', ms(median(phases.build)));
  // Each setClusterPolicy looks at every local endpoint again; fed before the pods there are none yet.
  const policiesFirst = repeat(() => {
    const compiler = new DataplaneCompiler(settings);
    for (const policy of policies) compiler.setClusterPolicy(policy);
    for (const node of base.nodes) compiler.setNode(node);
    for (const namespace of base.namespaces) compiler.setNamespace(namespace);
    for (const pod of base.pods) compiler.setPod(pod);
    for (const policy of base.policies) compiler.setPolicy(policy);
    return compiler.build();
  });
  report.row('full compile, with, ClusterNetworkPolicies set before the pods', ms(median(policiesFirst.times)));

  // What they cost on the node, and whom they select.
  const without: Size = sizeOf(baseDataplane);
  const withSize = sizeOf(dataplane);
  sizeRow(report, 'chains', without.chains, withSize.chains);
  sizeRow(report, 'rules (chain rules + hooks)', without.rules, withSize.rules);
  sizeRow(report, 'ipsets', without.ipsets, withSize.ipsets);
  sizeRow(report, 'ipset members', without.members, withSize.members);
  const selected = (d: 'ingressClusterPolicies' | 'egressClusterPolicies') => dataplane.endpoints.map((e) => e[d].length);
  for (const [label, key] of [['ingress', 'ingressClusterPolicies'], ['egress', 'egressClusterPolicies']] as const) {
    const n = selected(key);
    report.row(`ClusterNetworkPolicies selecting a local pod, ${label}: max / median`, `${Math.max(0, ...n)} / ${median(n)}`);
  }
  const rendered = !sameDataplane(baseDataplane, dataplane);
  if (!rendered) report.note('the dataplane is the same as without them: the compiler takes ClusterNetworkPolicies and names them per endpoint, but renders no rules for them yet');

  // Incremental changes to policies that select local pods, each from the fully built state.
  {
    const gc = new GcLog();
    const compiler = loaded(cluster, snapshot);
    const baseline = compiler.build();
    const inUse = new Set(baseline.endpoints.flatMap((e) => [...e.ingressClusterPolicies, ...e.egressClusterPolicies]));
    const indexes = objects.flatMap((o, i) => (inUse.has(String((o['metadata'] as Obj)['name'])) ? [i] : []));
    report.note(`incremental: parse + setClusterPolicy/setNamespace + build(), from the fully built state, undone untimed; ${indexes.length} of the ${objects.length} select local pods`);
    const change = (make: (object: Obj, k: number) => Obj) => function* () {
      let k = 0;
      for (;;) {
        for (const index of stride(indexes, 100)) {
          const changed = make(objects[index]!, k++);
          yield { apply: () => compiler.setClusterPolicy(parsedClusterPolicy(changed)), undo: () => compiler.setClusterPolicy(parsedClusterPolicy(objects[index]!)) };
        }
      }
    };
    // Until ClusterNetworkPolicies are rendered a change may leave every chain as it was; it is timed all the same.
    const every = () => true;
    await reportChanges(report, 'ClusterNetworkPolicy change: one more port', measureChanges(compiler, baseline, change((o, k) => clusterPolicyWithExtraPort(o, 20_000 + k))(), every), gc);
    await reportChanges(report, 'ClusterNetworkPolicy change: new peer', measureChanges(compiler, baseline, change((o, k) => clusterPolicyWithNewPeer(o, k))(), every), gc);
    await reportChanges(report, 'ClusterNetworkPolicy change: priority', measureChanges(compiler, baseline, change((o, k) => clusterPolicyWithPriority(o, (k * 37) % 1001))(), every), gc);
    // A namespace moving between environments enters and leaves subjects selected by namespace labels.
    const localNamespaces = new Set(baseline.endpoints.map((e) => e.namespace));
    const namespaceObjects = cluster.namespaces.filter((o) => localNamespaces.has(String((o['metadata'] as Obj)['name'])));
    const relabel = (o: Obj): Obj => {
      const copy = structuredClone(o);
      const labels = (copy['metadata'] as Obj)['labels'] as Record<string, string>;
      labels['env'] = labels['env'] === 'dev' ? 'prod' : 'dev';
      return copy;
    };
    const namespaceChanges = function* () {
      for (;;) for (const o of namespaceObjects) yield { apply: () => compiler.setNamespace(parsedNamespace(relabel(o))), undo: () => compiler.setNamespace(parsedNamespace(o)) };
    };
    await reportChanges(report, 'namespace relabel (env: subjects change)', measureChanges(compiler, baseline, namespaceChanges(), every), gc);
    gc.stop();
  }

  // Rules walked by the first packet of a new connection, with the guardrails' packets added.
  {
    const [withoutWalks, withoutMs] = timeIt(() => traceWalks(cluster, baseDataplane, base, [...walkProbes(cluster, baseDataplane), ...guardrailProbes(cluster, baseDataplane)]));
    const [withWalks, withMs] = timeIt(() => traceWalks(cluster, dataplane, snapshot, [...walkProbes(cluster, dataplane), ...guardrailProbes(cluster, dataplane)]));
    walkRows(report, withoutWalks, withWalks);
    const mismatches = withWalks.filter((w) => w.expected !== undefined && w.expected !== w.verdict);
    const agreeing = `${withWalks.length - mismatches.length} / ${withWalks.length}`;
    if (rendered) report.row('verdicts agreeing with the evaluator (tiers included)', agreeing, { text: 'all', met: mismatches.length === 0 });
    else report.row('verdicts agreeing with the evaluator (tiers included)', agreeing);
    const worst = withWalks.reduce((a, b) => (b.rulesWalked > a.rulesWalked ? b : a));
    report.note(`${withoutWalks.length} and ${withWalks.length} probes traced in ${ms(withoutMs)} and ${ms(withMs)}; worst with: ${worst.probe.kind} ${worst.probe.from} -> ${worst.probe.to}, ${worst.verdict}`);
    if (!rendered) report.note('without rendered ClusterNetworkPolicies the verdicts the evaluator gives them (an IMDS probe denied, say) cannot agree; the goal applies once they are rendered');
    for (const m of mismatches.slice(0, rendered ? 3 : 1)) report.note(`${rendered ? 'MISMATCH' : 'e.g.'} (evaluator says ${m.expected}): ${m.describe().split('\n')[0]}`);
  }
}

