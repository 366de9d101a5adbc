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

/**
 * Text from an object (names, keys, values quoted in messages) made safe for a terminal or a log line:
 * control characters are shown escaped, so a name cannot move the cursor, erase a line or forge one.
 */
export function printable(text: string): string {
  return text.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, (ch) => `\\u${ch.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

export function formatObjectRef(ref: ObjectRef): string {
  const text = ref.namespace === null ? `${ref.kind} ${ref.name}` : `${ref.kind} ${ref.namespace}/${ref.name}`;
  return printable(text);
}

export function formatProblem(problem: Problem): string {
  const where = problem.field === '' ? '' : ` field ${printable(problem.field)}`;
  const origin = problem.origin === undefined ? '' : `${printable(problem.origin)}: `;
  return `${origin}${problem.severity}: ${formatObjectRef(problem.object)}${where}: ${printable(problem.message)}`;
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

  /**
   * The API server drops fields it does not know (kubectl --validate=strict refuses them), so they are
   * ignored here too, but said: in a file, an unknown field is usually a typo ("exept", "form") that
   * makes a rule allow more than its author meant.
   */
  unknownField(field: string, where: string): void {
    this.warn(field, `unknown field in ${where}, ignored as the API server would drop it (kubectl --validate=strict refuses it); check the spelling: without it the rule may allow more`);
  }

  get hasErrors(): boolean {
    return this.problems.some((p) => p.severity === 'error');
  }
}
