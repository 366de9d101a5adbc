import { DataplaneCompiler } from '../rules/compiler.js';
import type { Dataplane } from '../rules/dataplane.js';
import type { PolicyRecord } from '../rules/model.js';
import { parsePod } from '../rules/pod.js';
import { parsePolicy } from '../rules/policy.js';
import { renderIpsets, renderIptables } from '../rules/render.js';
import { compile } from '../rules/snapshot.js';
import { runWithClusterPolicies } from './compile-cluster-policies.bench.js';
import { CHANGES, GOAL_FULL_MS, GOAL_WALK, GcLog, RUNS, changedEntries, collectGarbage, count, loaded, measureChanges, median, mib, ms, parseAll, repeat, reportChanges, settingsFor, sizeOf, stride, timeIt } from './compile-measure.js';
import type { Report } from './run.js';
import type { Obj, SyntheticOptions } from './synthetic-cluster.js';
import { BENCH_SCALE, podLabelChange, policyWithExtraPort, policyWithNewPeer, syntheticCluster, traceWalks, withDoubledRemotePods } from './synthetic-cluster.js';

export { percentile, sizeOf } from './compile-measure.js';
export type { Size } from './compile-measure.js';

/**
 * The compiler at cluster scale (10,000 pods, 1,000 namespaces, 2,000 policies, 250 pods on this
 * node): parse, full compile, render, incremental changes, dataplane size, memory and the number of
 * rules a new connection's first packet walks; then the same cluster with 100 ClusterNetworkPolicies
 * (compile-cluster-policies.bench.ts).
 */

// ---------------------------------------------------------------------------------------------------------
// The benchmark
// ---------------------------------------------------------------------------------------------------------

export async function run(report: Report, options: SyntheticOptions = BENCH_SCALE): Promise<void> {
  report.section(`compile: ${count(options.pods)} pods (${options.localPods} local), ${count(options.namespaces)} namespaces, ${count(options.policies)} policies, ${options.nodes} nodes`);
  const [cluster, generateMs] = timeIt(() => syntheticCluster(options));
  report.note(`synthetic cluster generated in ${ms(generateMs)}: ${count(cluster.objects.length)} raw objects, seed ${options.seed}; timings are the median of ${RUNS} runs after a warm-up`);
  const settings = settingsFor(cluster);

  // Memory, first, before repeated runs have grown the heap: one parse, then one full compile.
  {
    const snapshot = parseAll(cluster.objects);
    collectGarbage();
    const baseline = process.memoryUsage();
    const compiler = loaded(cluster, snapshot);
    const built = compiler.build();
    const [peakRss, peakHeap] = [process.memoryUsage().rss, process.memoryUsage().heapUsed];
    collectGarbage();
    const after = process.memoryUsage();
    report.row('heapUsed after full compile (after gc)', mib(after.heapUsed));
    report.row('  of which compiler state + dataplane', mib(after.heapUsed - baseline.heapUsed));
    report.row('heapUsed right after compile (before gc)', mib(peakHeap));
    report.row('rss after full compile', mib(Math.max(peakRss, after.rss)));
    report.note(`heapUsed includes the raw objects and the parsed snapshot: ${mib(baseline.heapUsed)} before compiling (rss ${mib(baseline.rss)}); ${count(built.chains.size)} chains kept alive`);
  }

  // Parse, compile, render.
  const parse = repeat(() => parseAll(cluster.objects));
  const snapshot = parse.value;
  report.row('parse all objects', ms(median(parse.times)));
  const full = repeat(() => compile(snapshot, settings));
  const dataplane = full.value;
  report.row('full compile (from empty)', ms(median(full.times)), { text: `< ${GOAL_FULL_MS} ms`, met: median(full.times) < GOAL_FULL_MS });
  const phases = { pods: [] as number[], policies: [] as number[], build: [] as number[] };
  for (let i = 0; i <= RUNS; i++) {
    const compiler = new DataplaneCompiler(settings);
    const [, podsMs] = timeIt(() => {
      for (const namespace of snapshot.namespaces) compiler.setNamespace(namespace);
      for (const pod of snapshot.pods) compiler.setPod(pod);
    });
    const [, policiesMs] = timeIt(() => { for (const policy of snapshot.policies) compiler.setPolicy(policy); });
    const [, buildMs] = timeIt(() => compiler.build());
    if (i === 0) continue; // warm-up
    phases.pods.push(podsMs);
    phases.policies.push(policiesMs);
    phases.build.push(buildMs);
  }
  report.row('  of which: namespaces + pods', ms(median(phases.pods)));
  report.row('  of which: policies', ms(median(phases.policies)));
  report.row('  of which: build()', ms(median(phases.build)));
  report.row('parse + full compile', ms(median(parse.times) + median(full.times)));
  const render = repeat(() => ({ ipsets: renderIpsets(dataplane.ipsets.values()), iptables: renderIptables(dataplane) }));
  report.row('render (ipsets + iptables text)', ms(median(render.times)));
  report.note(`restore text: iptables ${count(render.value.iptables.length)} bytes, ipsets ${count(render.value.ipsets.length)} bytes`);

  // Size, and its independence from the number of remote pods.
  const size = sizeOf(dataplane);
  report.row('chains', count(size.chains));
  report.row('rules (chain rules + hooks)', count(size.rules));
  report.row('ipsets', count(size.ipsets));
  report.row('ipset members', count(size.members));
  {
    const doubledOptions = withDoubledRemotePods(options);
    const doubled = syntheticCluster(doubledOptions);
    const doubledSize = sizeOf(compile(parseAll(doubled.objects), settings));
    const same = doubledSize.rules === size.rules && doubledSize.chains === size.chains;
    report.row(`rules with 2x remote pods (${count(doubledOptions.pods)} pods)`, count(doubledSize.rules), { text: `= ${count(size.rules)}`, met: same });
    report.note(`2x remote pods: ${count(doubledSize.chains)} chains, ${count(doubledSize.ipsets)} ipsets, ${count(doubledSize.members)} members`);
  }

  // Incremental changes, each from the fully built state.
  {
    report.note('incremental: each change is parse + setPod/setPolicy + build(), from the fully built state, undone untimed afterwards');
    const gc = new GcLog();
    const compiler = loaded(cluster, snapshot);
    const baseline = compiler.build();
    const parsedPod = (object: Obj) => {
      const record = parsePod(object).record;
      if (record === null) throw new Error('changed pod did not parse');
      return record;
    };
    // The raw objects are made before the clock starts; parsing them is part of the change.
    const podChange = (index: number, variant: number) => {
      const changed = podLabelChange(cluster, index, variant);
      return {
        apply: () => compiler.setPod(parsedPod(changed)),
        undo: () => compiler.setPod(parsedPod(cluster.pods[index]!)),
      };
    };
    const remoteIndexes = cluster.podInfo.flatMap((p, i) => (!p.local && p.counts ? [i] : []));
    const remote = measureChanges(compiler, baseline, (function* () {
      for (const variant of [0, 1, 2]) for (const index of stride(remoteIndexes, CHANGES * 4)) yield podChange(index, variant);
    })(), (before, after) => changedEntries(before.ipsets, after.ipsets) > 0);
    await reportChanges(report, 'remote pod relabel', remote, gc);

    const localIndexes = cluster.podInfo.flatMap((p, i) => (p.local ? [i] : []));
    const selection = (d: Dataplane) => new Map(d.endpoints.map((e) => [`${e.namespace}/${e.name}`, `${e.ingressPolicies.join(',')} | ${e.egressPolicies.join(',')}`]));
    const local = measureChanges(compiler, baseline, (function* () {
      for (const variant of [0, 1, 2]) for (const index of localIndexes) yield podChange(index, variant);
    })(), (before, after) => {
      const a = selection(before);
      const b = selection(after);
      return [...b].some(([key, value]) => a.get(key) !== value);
    });
    await reportChanges(report, 'local pod relabel (its policies change)', local, gc);

    const installed = new Set(baseline.endpoints.flatMap((e) => [...e.ingressPolicies, ...e.egressPolicies]));
    const policyIndexes = cluster.policies.flatMap((p, i) => {
      const meta = p['metadata'] as Obj;
      return installed.has(`${String(meta['namespace'])}/${String(meta['name'])}`) ? [i] : [];
    });
    const parsedPolicy = (object: Obj): PolicyRecord => {
      const record = parsePolicy(object).record;
      if (record === null) throw new Error('changed policy did not parse');
      return record;
    };
    const policyChange = (make: (policy: Obj, k: number) => Obj) => function* () {
      let k = 0;
      for (;;) {
        for (const index of stride(policyIndexes, CHANGES)) {
          const changed = make(cluster.policies[index]!, k++);
          yield {
            apply: () => compiler.setPolicy(parsedPolicy(changed)),
            undo: () => compiler.setPolicy(parsedPolicy(cluster.policies[index]!)),
          };
        }
      }
    };
    const chainsChange = (before: Dataplane, after: Dataplane) => changedEntries(before.chains, after.chains) > 0;
    const extraPort = measureChanges(compiler, baseline, policyChange((p, k) => policyWithExtraPort(p, 10_000 + k))(), chainsChange);
    await reportChanges(report, 'policy change: one more port', extraPort, gc);
    const newPeer = measureChanges(compiler, baseline, policyChange((p, k) => policyWithNewPeer(p, k))(), chainsChange);
    await reportChanges(report, 'policy change: new peer (new ipset)', newPeer, gc);
    report.note(`changed policies are among the ${policyIndexes.length} that select local pods (the others are not installed on this node)`);
    gc.stop();
  }

  // Rules walked by the first packet of a new connection.
  {
    const [walks, walkMs] = timeIt(() => traceWalks(cluster, dataplane, snapshot));
    const walked = walks.map((w) => w.rulesWalked);
    const worst = walks.reduce((a, b) => (b.rulesWalked > a.rulesWalked ? b : a));
    const max = Math.max(...walked);
    report.row('rules walked by a new packet: max', count(max), { text: `<= ${GOAL_WALK}`, met: max <= GOAL_WALK });
    report.row('rules walked by a new packet: median', count(median(walked)));
    for (const kind of [...new Set(walks.map((w) => w.probe.kind))]) {
      const mine = walks.filter((w) => w.probe.kind === kind).map((w) => w.rulesWalked);
      report.row(`  ${kind}: max / median`, `${mine.length > 0 ? Math.max(...mine) : 0} / ${median(mine)}`);
    }
    const mismatches = walks.filter((w) => w.expected !== undefined && w.expected !== w.verdict);
    report.row('verdicts agreeing with the evaluator', `${walks.length - mismatches.length} / ${walks.length}`, { text: 'all', met: mismatches.length === 0 });
    report.note(`${walks.length} probes traced in ${ms(walkMs)}; worst: ${worst.probe.kind} ${worst.probe.from} -> ${worst.probe.to}, ${worst.verdict}`);
    for (const m of mismatches.slice(0, 3)) report.note(`MISMATCH (evaluator says ${m.expected}): ${m.describe().split('\n')[0]}`);
  }
  report.row('peak rss of the whole benchmark (maxRSS)', mib(process.resourceUsage().maxRSS * 1024));
  report.note('the peak includes the 2x-remote-pods cluster and the tracer models, not only the compiler');

  await runWithClusterPolicies(report, cluster, snapshot, dataplane);
}
