import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { spawnCollect } from '../../lib/exec.js';
import { removeStaleNamespaces } from '../../lib/netns.js';
import { netnsUnavailableReason } from '../support/netns-fixture.js';

/**
 * `palisade demo` as a user runs it: the real process, building its lab of network namespaces,
 * replaying the tutorial and cleaning up, also when interrupted with SIGINT halfway.
 */

const root = path.resolve(fileURLToPath(import.meta.url), '../../../..');
const MAIN = path.join(root, 'dist/daemon/main.js');
const STEPS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];

interface DemoRun {
  readonly child: ChildProcess;
  /** stdout and stderr, as they come. */
  output(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function startDemo(): DemoRun {
  const child = spawn(process.execPath, [MAIN, 'demo'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let text = '';
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => (text += chunk));
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (text += chunk));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('close', (code, signal) => resolve({ code, signal })));
  return { child, output: () => text, exited };
}

async function paldemoNamespaces(): Promise<string[]> {
  const result = await spawnCollect(['ip', 'netns', 'list'], {});
  return result.stdout.split('\n').map((line) => line.trim().split(/\s+/)[0] ?? '').filter((name) => name.startsWith('paldemo'));
}

/** The run's own namespace prefix, as the demo prints it while setting up. */
function runPrefix(output: string): string | null {
  return /network namespace (paldemo-[0-9a-f]+)-/.exec(output)?.[1] ?? null;
}

async function waitForOutput(run: DemoRun, pattern: RegExp, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pattern.test(run.output())) {
    if (run.child.exitCode !== null || run.child.signalCode !== null) throw new Error(`the demo exited before printing ${pattern}:\n${run.output()}`);
    if (Date.now() > deadline) throw new Error(`the demo did not print ${pattern} within ${timeoutMs} ms:\n${run.output()}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe('palisade demo, the process', function () {
  this.timeout(90_000);
  let before: string[] = [];
  let current: DemoRun | null = null;

  beforeEach(async function () {
    const reason = await netnsUnavailableReason();
    if (reason !== null) {
      if (process.env['PALISADE_REQUIRE_NETNS'] === '1') throw new Error(`the demo test needs network namespaces: ${reason}`);
      console.warn(`      skipped (palisade demo): ${reason}`);
      this.skip();
    }
    before = await paldemoNamespaces();
  });

  // A failed test must not leave a demo running, nor its namespaces behind.
  afterEach(async () => {
    const run = current;
    current = null;
    if (run === null) return;
    if (run.child.exitCode === null && run.child.signalCode === null) {
      run.child.kill('SIGINT');
      const timer = setTimeout(() => run.child.kill('SIGKILL'), 20_000);
      await run.exited;
      clearTimeout(timer);
    }
    const prefix = runPrefix(run.output());
    if (prefix !== null) await removeStaleNamespaces(prefix);
  });

  it('replays every step of the tutorial as expected, exits 0 and leaves no namespace behind', async () => {
    const run = (current = startDemo());
    const { code } = await run.exited;
    const output = run.output();
    assert.equal(code, 0, `exit code; output:\n${output}`);
    for (const n of STEPS) assert.match(output, new RegExp(`^✔ step ${n}: `, 'm'), `step ${n} passed; output:\n${output}`);
    assert.doesNotMatch(output, /✘/, 'no check failed');
    assert.match(output, /ping \(TCP echo probe on port 80\)|real ICMP ping/);
    assert.match(output, /^✔ all 11 steps behaved as the tutorial says/m);
    // The ClusterNetworkPolicy steps show what decided: the tier, and the drop log's record of the rule.
    assert.match(output, /ingress: denied \[Admin tier\], denied by admin ClusterNetworkPolicy admin-deny-busybox2 \(priority 10\) ingress rule 0 no-busybox2/);
    assert.match(output, /"clusterPolicy":\{"tier":"Admin","name":"admin-deny-busybox2","priority":10,"rule":0,"ruleName":"no-busybox2"\}/);
    assert.match(output, /"clusterPolicy":\{"tier":"Baseline","name":"baseline-isolate-namespace","priority":10,"rule":0,"ruleName":"from-anywhere"\}/);
    assert.match(output, /ingress: allowed \[NetworkPolicy tier\], allowed by default\/allow-in-from-out ingress rule 0/);
    assert.match(output, /\/status default\/busybox1: isolated for ingress by default\/allow-in-from-out; ClusterNetworkPolicies selecting it: baseline-isolate-namespace/);
    assert.match(output, /^cleaned up: /m);
    const prefix = runPrefix(output);
    assert.ok(prefix !== null, 'the demo names its namespaces');
    const left = await paldemoNamespaces();
    assert.deepEqual(left.filter((name) => name.startsWith(`${prefix}-`)), [], 'none of the run namespaces remain');
    assert.deepEqual(left.filter((name) => !before.includes(name)), [], 'no new paldemo namespace remains');
  });

  it('on SIGINT after the first step, stops, cleans up and exits 130 with no namespace left', async () => {
    const run = (current = startDemo());
    await waitForOutput(run, /^✔ step 1: /m, 45_000);
    const prefix = runPrefix(run.output());
    assert.ok(prefix !== null, 'the demo names its namespaces');
    assert.ok((await paldemoNamespaces()).some((name) => name.startsWith(`${prefix}-`)), 'the lab exists while the demo runs');
    run.child.kill('SIGINT');
    const { code, signal } = await run.exited;
    const output = run.output();
    assert.equal(signal, null, `the demo handled SIGINT itself; output:\n${output}`);
    assert.equal(code, 130, `exit code; output:\n${output}`);
    assert.match(output, /SIGINT received: stopping the demo and cleaning up/);
    assert.match(output, /^interrupted by SIGINT; everything the demo created is gone$/m);
    assert.doesNotMatch(output, /^✔ step 7: /m, 'it stopped before the end');
    const left = await paldemoNamespaces();
    assert.deepEqual(left.filter((name) => name.startsWith(`${prefix}-`)), [], 'none of the run namespaces remain');
    assert.deepEqual(left.filter((name) => !before.includes(name)), [], 'no new paldemo namespace remains');
  });
});
