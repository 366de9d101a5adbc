import { loadManifests } from '../lib/manifests.js';
import { PalisadeError } from '../lib/errors.js';
import { parseObjects } from '../rules/snapshot.js';
import type { ParsedSnapshot } from '../rules/snapshot.js';
import { formatProblem } from '../rules/problems.js';
import { DEFAULT_POLICY_BUDGET } from '../rules/policy-budget.js';
import type { TextBudget } from '../rules/policy-budget.js';

/** Raised when input objects are invalid; the message lists every problem, each with file:line. */
export class InvalidInputError extends PalisadeError {
  constructor(message: string) {
    super('INPUT_INVALID', message);
    this.name = 'InvalidInputError';
  }
}

/**
 * Reads manifests for the offline commands. Warnings are written to `warn` and the rest still used;
 * errors stop the command, since compiling around an invalid object would print rules the cluster
 * would never get.
 */
export async function snapshotFromFiles(paths: readonly string[], warn: (line: string) => void, budget: TextBudget = DEFAULT_POLICY_BUDGET): Promise<ParsedSnapshot> {
  const loaded = await loadManifests(paths);
  const parsed = parseObjects(loaded.map(({ object, source }) => ({ object, origin: `${source.file}:${source.line}` })), budget);
  const errors = parsed.problems.filter((p) => p.severity === 'error');
  for (const problem of parsed.problems) if (problem.severity === 'warning') warn(formatProblem(problem));
  if (errors.length > 0) throw new InvalidInputError(errors.map(formatProblem).join('\n'));
  return parsed;
}
