import { PerformanceObserver } from 'node:perf_hooks';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { DataplaneCompiler } from '../rules/compiler.js';
import type { Dataplane } from '../rules/dataplane.js';
import type { CompilerSettings } from '../rules/settings.js';
import { makeSettings } from '../rules/settings.js';
import type { Snapshot } from '../rules/snapshot.js';
import { loadedCompiler, parseObjects } from '../rules/snapshot.js';
import type { Report } from './run.js';
import type { Obj, SyntheticCluster } from './synthetic-cluster.js';

/** What the compile benchmarks measure with: timing, sizes, incremental changes and their report. */

export const RUNS = 5;
export const CHANGES = 100;
export const GOAL_FULL_MS = 500;
export const GOAL_CHANGE_MS = 20;
export const GOAL_WALK = 200;

export function ms(value: number): string {
  return `${value.toFixed(value < 10 ? 2 : 1)} ms`;
}

export function mib(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

export function count(n: number): string {
  return n.toLocaleString('en-US');
}

/** Nearest-rank percentile of a sample. */
export function percentile(values: readonly number[], q: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

export function median(values: readonly number[]): number {
  return percentile(values, 0.5);
}

export function timeIt<T>(fn: () => T): [T, number] {
  const start = performance.now();
  const value = fn();
  return [value, performance.now() - start];
}

/** One warm-up, then RUNS timed runs; returns the last value and the durations. */
export function repeat<T>(fn: () => T, runs = RUNS): { value: T; times: number[] } {
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
export function collectGarbage(): void {
  const holder = globalThis as { gc?: () => void };
  if (typeof holder.gc !== 'function') {
    setFlagsFromString('--expose-gc');
    holder.gc = runInNewContext('gc') as () => void;
  }
  holder.gc!();
  holder.gc!();
}

export function settingsFor(cluster: SyntheticCluster): CompilerSettings {
  const result = makeSettings({ nodeName: cluster.localNode });
  if (!result.ok) throw new Error(result.errors.join('; '));
  return result.settings;
}

export function parseAll(objects: readonly Obj[]): Snapshot {
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

export function loaded(cluster: SyntheticCluster, snapshot: Snapshot): DataplaneCompiler {
  return loadedCompiler(snapshot, settingsFor(cluster));
}

export function changedEntries<T>(before: ReadonlyMap<string, T>, after: ReadonlyMap<string, T>): number {
  let n = 0;
  for (const [name, value] of after) if (before.get(name) !== value) n++;
  for (const name of before.keys()) if (!after.has(name)) n++;
  return n;
}

/**
 * Garbage-collection pauses, to tell the compiler's own time from the collector's in the tail of the
 * change timings. Entries arrive asynchronously: call flush() after a synchronous measurement.
 */
export class GcLog {
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

export interface ChangeStats {
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
export function measureChanges(
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

export async function reportChanges(report: Report, label: string, stats: ChangeStats, gc: GcLog): Promise<void> {
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

export function* stride<T>(items: readonly T[], n: number): Iterable<T> {
  if (items.length === 0) return;
  const step = Math.max(1, Math.floor(items.length / n));
  for (let round = 0; round < step; round++) for (let i = round; i < items.length; i += step) yield items[i]!;
}
