import type { DataplaneCompiler } from '../rules/compiler.js';
import { loadedCompiler, parseObjects } from '../rules/snapshot.js';
import { makeSettings } from '../rules/settings.js';
import { Names } from '../rules/names.js';
import { parsePod } from '../rules/pod.js';
import { renderIpsets, renderIptables } from '../rules/render.js';
import type { Dataplane } from '../rules/dataplane.js';
import { NetworkNamespace } from '../lib/netns.js';
import { namespaceBenchBlocked } from './preflight.js';
import { commandAvailable } from '../lib/exec.js';
import { Iptables } from '../lib/iptables/iptables.js';
import type { Backend } from '../lib/iptables/iptables.js';
import { Ipset } from '../lib/ipset.js';
import { DataplaneApplier } from '../lib/dataplane/applier.js';
import type { ApplyReport } from '../lib/dataplane/applier.js';
import { BENCH_SCALE, podLabelChange, syntheticCluster } from './synthetic-cluster.js';
import type { SyntheticCluster } from './synthetic-cluster.js';
import type { Report } from './run.js';

/**
 * Applying the benchmark cluster's dataplane (250 local pods, 2,000 policies) to a real kernel, in a
 * throwaway network namespace, per iptables backend: from empty, then one pod's change on top, each
 * against the floor of loading the identical text with bare ipset restore and iptables-restore.
 */

const RUNS = 5;
const CHANGES = 30;
const GOAL_RATIO = 1.2;
const GOAL_CHANGE_MS = 50;
const PREFIX = 'palbench';

const median = (values: readonly number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] ?? NaN;
const p99 = (values: readonly number[]) => [...values].sort((a, b) => a - b)[Math.min(values.length - 1, Math.ceil(values.length * 0.99) - 1)] ?? NaN;
const ms = (value: number) => `${value.toFixed(1)} ms`;

async function timed<T>(action: () => Promise<T>): Promise<[T, number]> {
  const started = performance.now();
  const value = await action();
  return [value, performance.now() - started];
}

async function withNamespace<T>(action: (ns: NetworkNamespace) => Promise<T>): Promise<T> {
  const ns = await NetworkNamespace.create(PREFIX);
  try {
    return await action(ns);
  } finally {
    await ns.destroy();
  }
}

function applierIn(ns: NetworkNamespace, backend: Backend): DataplaneApplier {
  return new DataplaneApplier({ iptables: new Iptables({ runner: ns, backend }), ipset: new Ipset({ runner: ns }), names: new Names('pal') });
}

/** The floor: the same texts, loaded by the bare tools with nothing around them. */
async function floor(backend: Backend, ipsetText: string, iptablesText: string): Promise<{ ipset: number; iptables: number }> {
  return withNamespace(async (ns) => {
    const [, ipset] = await timed(() => ns.run(['ipset', 'restore'], { input: ipsetText }));
    const [, iptables] = await timed(() => ns.run([`iptables-${backend}-restore`, '--noflush', '-w', '5'], { input: iptablesText }));
    return { ipset, iptables };
  });
}

function compilerFor(cluster: SyntheticCluster): { compiler: DataplaneCompiler; dataplane: Dataplane } {
  const settings = makeSettings({ nodeName: cluster.localNode });
  if (!settings.ok) throw new Error(settings.errors.join('; '));
  const { snapshot } = parseObjects(cluster.objects.map((object) => ({ object })));
  const compiler = loadedCompiler(snapshot, settings.settings);
  return { compiler, dataplane: compiler.build() };
}

async function benchBackend(report: Report, backend: Backend, cluster: SyntheticCluster): Promise<void> {
  const { compiler, dataplane } = compilerFor(cluster);
  const ipsetText = renderIpsets(dataplane.ipsets.values());
  const iptablesText = renderIptables(dataplane);
  const floors: { ipset: number; iptables: number }[] = [];
  const full: number[] = [];
  const parts: ApplyReport['timings'][] = [];
  for (let i = 0; i <= RUNS; i++) {
    const f = await floor(backend, ipsetText, iptablesText);
    const [result, applied] = await withNamespace(async (ns) => timed(() => applierIn(ns, backend).applyAndCheck(dataplane)));
    if (i === 0) continue; // warm-up
    floors.push(f);
    full.push(applied);
    parts.push(result.timings);
  }
  const floorTotal = median(floors.map((f) => f.ipset + f.iptables));
  const floorIptables = median(floors.map((f) => f.iptables));
  const writes = median(parts.map((p) => p.plan + p.write));
  report.row(`${backend}: bare ipset restore + iptables-restore (floor)`, ms(floorTotal));
  report.row(`${backend}:   of which iptables-restore alone`, ms(floorIptables));
  report.row(`${backend}: palisade apply from empty: plan + writes`, ms(writes), { text: `<= ${GOAL_RATIO}x floor`, met: writes <= GOAL_RATIO * floorTotal });
  report.row(`${backend}:   ratio to the floor`, `${(writes / floorTotal).toFixed(2)}x`);
  report.row(`${backend}: palisade apply from empty: all (read, plan, write, read-back)`, ms(median(full)));
  report.note(`${backend}: medians: read ${ms(median(parts.map((p) => p.read)))}, plan ${ms(median(parts.map((p) => p.plan)))}, write ${ms(median(parts.map((p) => p.write)))}, read-back ${ms(median(parts.map((p) => p.check)))}`);

  const local = cluster.podInfo.map((info, index) => ({ info, index })).filter(({ info }) => info.local && info.counts);
  await withNamespace(async (ns) => {
    const applier = applierIn(ns, backend);
    await applier.applyAndCheck(dataplane);
    const times: number[] = [];
    const checks: number[] = [];
    let chains = 0;
    let sets = 0;
    for (let tried = 0; times.length < CHANGES && tried < CHANGES * 20; tried++) {
      const { index } = local[(tried * 7) % local.length]!;
      const changed = parsePod(podLabelChange(cluster, index, tried)).record!;
      const original = parsePod(cluster.pods[index]!).record!;
      const [result, took] = await timed(async () => {
        compiler.setPod(changed);
        return applier.apply(compiler.build());
      });
      const [, checked] = await timed(() => applier.checkWrites());
      // Only changes that reach this node's kernel count: the others write nothing at all.
      if (result.plan !== null) {
        times.push(took);
        checks.push(checked);
        chains += result.plan.chainsWritten.length;
        sets += result.plan.setsWritten.length;

      }
      compiler.setPod(original);
      await applier.applyAndCheck(compiler.build());
    }
    report.row(`${backend}: one local pod's change, compile + apply: median`, ms(median(times)), { text: `< ${GOAL_CHANGE_MS} ms`, met: median(times) < GOAL_CHANGE_MS });
    report.row(`${backend}: one local pod's change, compile + apply: p99`, ms(p99(times)));
    report.row(`${backend}: read-back after it (iptables-save + ipset list -t): median`, ms(median(checks)));
    report.note(`${times.length} relabels of local pods that changed this node's rules; per change on average ${(chains / times.length).toFixed(1)} chains and ${(sets / times.length).toFixed(1)} sets written`);
  });
}

export async function run(report: Report): Promise<void> {
  const cluster = syntheticCluster(BENCH_SCALE);
  report.section(`apply: ${BENCH_SCALE.localPods} local pods, ${BENCH_SCALE.policies} policies, ${BENCH_SCALE.pods} pods, into a throwaway network namespace`);
  const blocked = await namespaceBenchBlocked(PREFIX, ['ipset']);
  if (blocked !== null) {
    report.note(`skipped: ${blocked}`);
    return;
  }
  for (const backend of ['nft', 'legacy'] as const) {
    if (!(await commandAvailable(`iptables-${backend}-restore`))) {
      report.note(`${backend}: skipped, iptables-${backend}-restore not installed`);
      continue;
    }
    await benchBackend(report, backend, cluster);
  }
}
