/**
 * Benchmark entry point (`npm run bench`). Runs every benchmark module in BENCHMARKS, or only those
 * named on the command line (`node dist/bench/run.js compile`), and prints plain-text tables. Nothing
 * is written to disk.
 *
 * A benchmark module exports `async function run(report: Report)` and reports rows as it measures,
 * each with the goal it is held to, if any.
 */

export interface Goal {
  /** e.g. "< 500 ms". */
  readonly text: string;
  readonly met: boolean;
}

export interface Report {
  /** Starts a new table. */
  section(title: string): void;
  row(label: string, value: string, goal?: Goal): void;
  /** A line of context under the current table (scale, method, caveats). */
  note(text: string): void;
}

export interface BenchmarkModule {
  run(report: Report): Promise<void>;
}

interface Benchmark {
  readonly name: string;
  readonly load: () => Promise<BenchmarkModule>;
}

const BENCHMARKS: readonly Benchmark[] = [
  { name: 'compile', load: () => import('./compile.bench.js') },
  { name: 'apply', load: () => import('./apply.bench.js') },
  { name: 'daemon', load: () => import('./daemon.bench.js') },
  { name: 'packet-path', load: () => import('./packet-path.bench.js') },
  { name: 'policy-size', load: () => import('./policy-size.bench.js') },
  { name: 'nflog-reader', load: () => import('./nflog-reader.bench.js') },
  { name: 'drop-log', load: () => import('./drop-log.bench.js') },
];

const LABEL_WIDTH = 62;
const VALUE_WIDTH = 22;

class TextReport implements Report {
  readonly missed: string[] = [];
  private current = '';

  section(title: string): void {
    this.current = title.split(':')[0] ?? title;
    process.stdout.write(`\n${title}\n${'-'.repeat(LABEL_WIDTH + VALUE_WIDTH + 24)}\n`);
  }

  row(label: string, value: string, goal?: Goal): void {
    const goalText = goal === undefined ? '' : `goal ${goal.text}`.padEnd(18) + (goal.met ? 'ok' : 'MISSED');
    if (goal !== undefined && !goal.met) this.missed.push(`${this.current}: ${label} = ${value} (goal ${goal.text})`);
    process.stdout.write(`${label.padEnd(LABEL_WIDTH)} ${value.padStart(VALUE_WIDTH)}   ${goalText}`.trimEnd() + '\n');
  }

  note(text: string): void {
    process.stdout.write(`  (${text})\n`);
  }
}

async function main(): Promise<void> {
  const wanted = process.argv.slice(2);
  const unknown = wanted.filter((name) => !BENCHMARKS.some((b) => b.name === name));
  if (unknown.length > 0) {
    process.stderr.write(`unknown benchmark(s): ${unknown.join(', ')}; known: ${BENCHMARKS.map((b) => b.name).join(', ')}\n`);
    process.exitCode = 2;
    return;
  }
  const selected = wanted.length === 0 ? BENCHMARKS : BENCHMARKS.filter((b) => wanted.includes(b.name));
  const report = new TextReport();
  process.stdout.write(`palisade benchmarks: node ${process.version}, ${process.platform}/${process.arch}\n`);
  for (const benchmark of selected) {
    const started = performance.now();
    const module = await benchmark.load();
    await module.run(report);
    process.stdout.write(`\n[${benchmark.name}: ${((performance.now() - started) / 1000).toFixed(1)} s]\n`);
  }
  process.stdout.write(report.missed.length === 0 ? '\nAll goals met.\n' : `\nGoals missed:\n${report.missed.map((m) => `  ${m}`).join('\n')}\n`);
}

await main();
