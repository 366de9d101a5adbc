/**
 * Problems found in input objects are data, not log lines: the CLI prints them, the daemon logs them,
 * counts them and shows them in its status, and tests assert on them.
 */

export type Severity = 'error' | 'warning';

export interface ObjectRef {
  readonly kind: string;
  readonly namespace: string | null;
  readonly name: string;
}

export interface Problem {
  /** error: the object (or the part named) is invalid; warning: valid but not supported, so ignored. */
  readonly severity: Severity;
  readonly object: ObjectRef;
  /** JSON-path-like location of the offending field, e.g. "spec.ingress[0].from[1].ipBlock.cidr". */
  readonly field: string;
  readonly message: string;
  /** Where the object came from, when it came from a file ("path:line"). */
  readonly origin?: string;
}

export function formatObjectRef(ref: ObjectRef): string {
  return ref.namespace === null ? `${ref.kind} ${ref.name}` : `${ref.kind} ${ref.namespace}/${ref.name}`;
}

export function formatProblem(problem: Problem): string {
  const where = problem.field === '' ? '' : ` field ${problem.field}`;
  const origin = problem.origin === undefined ? '' : `${problem.origin}: `;
  return `${origin}${problem.severity}: ${formatObjectRef(problem.object)}${where}: ${problem.message}`;
}

/** Collects problems for one object while it is parsed, so every problem is reported, not just the first. */
export class ProblemSink {
  readonly problems: Problem[] = [];
  readonly object: ObjectRef;

  constructor(object: ObjectRef) {
    this.object = object;
  }

  error(field: string, message: string): void {
    this.problems.push({ severity: 'error', object: this.object, field, message });
  }

  warn(field: string, message: string): void {
    this.problems.push({ severity: 'warning', object: this.object, field, message });
  }

  get hasErrors(): boolean {
    return this.problems.some((p) => p.severity === 'error');
  }
}
