import { PerformanceObserver } from 'node:perf_hooks';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { DataplaneCompiler } from '../rules/compiler.js';
import type { Dataplane } from '../rules/dataplane.js';
import type { PolicyRecord } from '../rules/model.js';
import { parsePod } from '../rules/pod.js';
import { parsePolicy } from '../rules/policy.js';
import { renderIpsets, renderIptables } from '../rules/render.js';
import type { CompilerSettings } from '../rules/settings.js';
import { makeSettings } from '../rules/settings.js';
import type { Snapshot } from '../rules/snapshot.js';
import { compile, loadedCompiler, parseObjects } from '../rules/snapshot.js';
import type { Report } from './run.js';
import type { Obj, SyntheticCluster, SyntheticOptions } from './synthetic-cluster.js';
import { BENCH_SCALE, podLabelChange, policyWithExtraPort, policyWithNewPeer, syntheticCluster, traceWalks, withDoubledRemotePods } from './synthetic-cluster.js';

/**
 * The compiler at cluster scale (10,000 pods, 1,000 namespaces, 2,000 policies, 250 pods on this
 * node): parse, full compile, render, incremental changes, dataplane size, memory and the number of
 * rules a new connection's first packet walks.
 */

const RUNS = 5;
const CHANGES = 100;
const GOAL_FULL_MS = 500;
const GOAL_CHANGE_MS = 20;
const GOAL_WALK = 200;

// ---------------------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------------------

function ms(value: number): string {
  return `${value.toFixed(value < 10 ? 2 : 1)} ms`;
}

function mib(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

function count(n: number): string {
  return n.toLocaleString('en-US');
}

/** Nearest-rank percentile of a sample. */
export function percentile(values: readonly number[], q: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

function median(values: readonly number[]): number {
  return percentile(values, 0.5);
}

function timeIt<T>(fn: () => T): [T, number] {
  const start = performance.now();
  const value = fn();
  return [value, performance.now() - start];
}

/** One warm-up, then RUNS timed runs; returns the last value and the durations. */
function repeat<T>(fn: () => T, runs = RUNS): { value: T; times: number[] } {
  let value = fn();
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const [v, t] = timeIt(fn);
    value = v;
    times.push(t);
  }
  return { value, times };
}

/** `node --expose-gc` provides gc(); without the flag it is enabled at run time. */
function collectGarbage(): void {
  const holder = globalThis as { gc?: () => void };
  if (typeof holder.gc !== 'function') {
    setFlagsFromString('--expose-gc');
    holder.gc = runInNewContext('gc') as () => void;
  }
  holder.gc!();
  holder.gc!();
}

function settingsFor(cluster: SyntheticCluster): CompilerSettings {
  const result = makeSettings({ nodeName: cluster.localNode });
  if (!result.ok) throw new Error(result.errors.join('; '));
  return result.settings;
}

function parseAll(objects: readonly Obj[]): Snapshot {
  const { snapshot, problems } = parseObjects(objects.map((object) => ({ object })));
  const errors = problems.filter((p) => p.severity === 'error');
  if (errors.length > 0) throw new Error(`synthetic cluster has ${errors.length} invalid objects, e.g. ${JSON.stringify(errors[0])}`);
  return snapshot;
}

export interface Size {
  readonly chains: number;
  readonly rules: number;
  readonly ipsets: number;
  readonly members: number;
}

export function sizeOf(dataplane: Dataplane): Size {
  let rules = dataplane.hooks.length;
  for (const chain of dataplane.chains.values()) rules += chain.rules.length;
  let members = 0;
  for (const set of dataplane.ipsets.values()) members += set.members.size;
  return { chains: dataplane.chains.size, rules, ipsets: dataplane.ipsets.size, members };
}

function loaded(cluster: SyntheticCluster, snapshot: Snapshot): DataplaneCompiler {
  return loadedCompiler(snapshot, settingsFor(cluster));
}

function changedEntries<T>(before: ReadonlyMap<string, T>, after: ReadonlyMap<string, T>): number {
  let n = 0;
  for (const [name, value] of after) if (before.get(name) !== value) n++;
  for (const name of before.keys()) if (!after.has(name)) n++;
  return n;
}

/**
 * Garbage-collection pauses, to tell the compiler's own time from the collector's in the tail of the
 * change timings. Entries arrive asynchronously: call flush() after a synchronous measurement.
 */
class GcLog {
  private readonly pauses: { start: number; end: number }[] = [];
  private readonly observer = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) this.pauses.push({ start: entry.startTime, end: entry.startTime + entry.duration });
  });

  constructor() {
    this.observer.observe({ entryTypes: ['gc'] });
  }

  async flush(): Promise<void> {
    await new Promise((resolve) => setTimeout(resolve, 0));
  }

  /** Milliseconds of GC pause inside [start, end]. */
  within(start: number, end: number): number {
    let total = 0;
    for (const p of this.pauses) total += Math.max(0, Math.min(end, p.end) - Math.max(start, p.start));
    return total;
  }

  stop(): void {
    this.observer.disconnect();
  }
}

interface ChangeStats {
  readonly times: number[];
  /** The timed window of each measured change, for GC accounting. */
  readonly windows: { start: number; end: number }[];
  readonly setsChanged: number[];
  readonly chainsChanged: number[];
  tried: number;
}

/**
 * Applies candidate changes one at a time from the same baseline: each is timed (parse + set + build),
 * kept in the sample only when `accept` says it did what the benchmark wants, then undone (untimed).
 */
function measureChanges(
  compiler: DataplaneCompiler,
  baseline: Dataplane,
  candidates: Iterable<{ apply: () => void; undo: () => void }>,
  accept: (before: Dataplane, after: Dataplane) => boolean,
): ChangeStats {
  const stats: ChangeStats = { times: [], windows: [], setsChanged: [], chainsChanged: [], tried: 0 };
  let before = baseline;
  for (const candidate of candidates) {
    if (stats.times.length >= CHANGES) break;
    stats.tried++;
    const start = performance.now();
    candidate.apply();
    const after = compiler.build();
    const end = performance.now();
    if (accept(before, after)) {
      stats.times.push(end - start);
      stats.windows.push({ start, end });
      stats.setsChanged.push(changedEntries(before.ipsets, after.ipsets));
      stats.chainsChanged.push(changedEntries(before.chains, after.chains));
    }
    candidate.undo();
    before = compiler.build();
  }
  return stats;
}

async function reportChanges(report: Report, label: string, stats: ChangeStats, gc: GcLog): Promise<void> {
  await gc.flush();
  const p99 = percentile(stats.times, 0.99);
  report.row(`${label}: median`, ms(median(stats.times)), { text: `< ${GOAL_CHANGE_MS} ms`, met: median(stats.times) < GOAL_CHANGE_MS });
  report.row(`${label}: p99`, ms(p99), { text: `< ${GOAL_CHANGE_MS} ms`, met: p99 < GOAL_CHANGE_MS });
  report.row(`${label}: max`, ms(Math.max(...stats.times)));
  const gcTimes = stats.windows.map((w) => gc.within(w.start, w.end));
  const withoutGc = stats.times.map((t, i) => t - gcTimes[i]!);
  report.row(`${label}: p99 excl. GC pauses`, ms(percentile(withoutGc, 0.99)));
  const mean = (xs: number[]): string => (xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length)).toFixed(1);
  report.note(`${stats.times.length} changes measured of ${stats.tried} tried; per change on average ${mean(stats.setsChanged)} ipsets and ${mean(stats.chainsChanged)} chains changed; ${gcTimes.filter((t) => t > 0).length} changes overlapped a GC pause (longest ${ms(Math.max(0, ...gcTimes))})`);
}

function* stride<T>(items: readonly T[], n: number): Iterable<T> {
  if (items.length === 0) return;
  const step = Math.max(1, Math.floor(items.length / n));
  for (let round = 0; round < step; round++) for (let i = round; i < items.length; i += step) yield items[i]!;
}

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
}
