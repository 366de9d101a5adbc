/** How the demo prints: one line at a time, ✔/✘ marks, durations in seconds. */

import type { CommandIO } from '../command-io.js';
import type { CheckResult } from './checks.js';
import type { Round } from './observe.js';
import type { DemoStep } from './script.js';

export type Out = (line?: string) => void;

export function lineWriter(io: CommandIO): Out {
  return (line = '') => io.stdout(`${line}\n`);
}

export const seconds = (ms: number): string => `${(ms / 1000).toFixed(2)} s`;
export const mark = (ok: boolean): string => (ok ? '✔' : '✘');
export const reach = (reachable: boolean): string => (reachable ? 'reachable' : 'blocked');
export const describeError = (error: unknown): string => (error instanceof Error ? error.message : String(error));

/** Prints the checks of a finished step, each marked ✔ or ✘. */
export function printChecks(out: Out, checks: readonly CheckResult[]): void {
  for (const check of checks) {
    const [first, ...rest] = check.lines;
    if (first === undefined) continue;
    // Command echoes ("$ ...") carry no mark; the lines after them do.
    if (first.startsWith('$ ')) {
      out(`  ${first}`);
      const [result, ...more] = rest;
      if (result !== undefined) out(`    ${mark(check.ok)} ${result}`);
      for (const line of more) out(`      ${line}`);
    } else {
      out(`    ${mark(check.ok)} ${first}`);
      for (const line of rest) out(`      ${line}`);
    }
  }
}

/** The ✔/✘ line closing a step, with how long it took. `issuedWall` is when its last command was issued (epoch ms). */
export function stepVerdict(step: DemoStep, round: Round, elapsed: number, issuedWall: number): string {
  // The daemon's own record of when it finished writing says how long enforcement took; the probes
  // only bound it from above (a blocked probe takes its whole timeout to say so).
  const inForce = round.lastSuccessMs === null ? null : Math.max(0, round.lastSuccessMs - issuedWall);
  const timing = step.commands.length === 0
    ? `observed in ${seconds(elapsed)}`
    : round.ok
      ? `enforced ${inForce === null ? '' : `${seconds(inForce)} after the last command (the daemon's sync took ${round.syncMs ?? '?'} ms), `}observed within ${seconds(elapsed)}`
      : `still not as expected ${seconds(elapsed)} after the last command`;
  return `${mark(round.ok)} step ${step.number}: ${step.summary} (${timing})`;
}
