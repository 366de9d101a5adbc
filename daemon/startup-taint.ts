/**
 * The startup taint, as data: the `--startup-taint` flag's value parsed, how a node's taint is
 * matched against it, and the JSON patch that removes it. Pure: no client, no clock, no logger.
 *
 * New nodes register with the taint (kubelet's --register-with-taints, an EKS node group's `taints`,
 * a Karpenter NodePool's `startupTaints`), so nothing without a toleration is scheduled there before
 * palisade has enforced policy once; palisade removes it from its own node after its first apply.
 */

export const TAINT_EFFECTS = ['NoSchedule', 'PreferNoSchedule', 'NoExecute'] as const;
export type TaintEffect = (typeof TAINT_EFFECTS)[number];

export interface StartupTaint {
  readonly key: string;
  /** null: any value matches (kubelet's `KEY:EFFECT` form registers the empty value). */
  readonly value: string | null;
  readonly effect: TaintEffect;
}

/** A taint as the API server serves it in a Node's spec.taints. */
export interface NodeTaint {
  readonly key: string;
  readonly value?: string;
  readonly effect: string;
  readonly timeAdded?: string;
  readonly [field: string]: unknown;
}

export const DEFAULT_STARTUP_TAINT = 'palisade.io/agent-not-ready=true:NoSchedule';

/** A qualified name, as Kubernetes validates label and taint keys: an optional DNS subdomain prefix, a name of at most 63. */
const KEY = /^(?:(?=[a-z0-9.-]{1,253}\/)[a-z0-9]([-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?(?=.{1,63}$)[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;
/** A label value: at most 63, empty allowed. */
const VALUE = /^(?:(?=.{1,63}$)[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$/;

/**
 * `KEY=VALUE:EFFECT` or `KEY:EFFECT` (kubelet's --register-with-taints syntax), or `none`. Returns the
 * taint, null for `none`, or an error message.
 */
export function parseStartupTaint(text: string): { ok: true; taint: StartupTaint | null } | { ok: false; error: string } {
  const trimmed = text.trim();
  if (trimmed === 'none') return { ok: true, taint: null };
  const colon = trimmed.lastIndexOf(':');
  if (colon < 0) return { ok: false, error: 'must be KEY[=VALUE]:EFFECT, like palisade.io/agent-not-ready=true:NoSchedule, or none' };
  const effect = trimmed.slice(colon + 1);
  const keyValue = trimmed.slice(0, colon);
  const equals = keyValue.indexOf('=');
  const key = equals < 0 ? keyValue : keyValue.slice(0, equals);
  const value = equals < 0 ? null : keyValue.slice(equals + 1);
  const problems: string[] = [];
  if (!KEY.test(key)) problems.push(`key "${key}" is not a qualified name (an optional DNS prefix and /, then at most 63 letters, digits, '-', '_' or '.')`);
  if (value !== null && !VALUE.test(value)) problems.push(`value "${value}" is not a label value (at most 63 letters, digits, '-', '_' or '.')`);
  if (!(TAINT_EFFECTS as readonly string[]).includes(effect)) problems.push(`effect "${effect}" must be one of ${TAINT_EFFECTS.join(', ')}`);
  if (problems.length > 0) return { ok: false, error: problems.join('; ') };
  return { ok: true, taint: { key, value, effect: effect as TaintEffect } };
}

export function formatStartupTaint(taint: StartupTaint): string {
  return `${taint.key}${taint.value === null ? '' : `=${taint.value}`}:${taint.effect}`;
}

/** Key and effect always (together they are a taint's identity on a node); the value only when the flag gave one. */
export function matchesStartupTaint(taint: StartupTaint, candidate: NodeTaint): boolean {
  return candidate.key === taint.key && candidate.effect === taint.effect && (taint.value === null || (candidate.value ?? '') === taint.value);
}

/** The taints of a Node object, read defensively: whatever is not a list of taints reads as none. */
export function nodeTaints(node: unknown): readonly NodeTaint[] {
  const spec = typeof node === 'object' && node !== null ? (node as { spec?: unknown }).spec : undefined;
  const taints = typeof spec === 'object' && spec !== null ? (spec as { taints?: unknown }).taints : undefined;
  if (!Array.isArray(taints)) return [];
  return taints.filter((t): t is NodeTaint => typeof t === 'object' && t !== null && typeof (t as NodeTaint).key === 'string' && typeof (t as NodeTaint).effect === 'string');
}

export type JsonPatchOperation =
  | { readonly op: 'test'; readonly path: string; readonly value: unknown }
  | { readonly op: 'remove'; readonly path: string };

/**
 * The RFC 6902 patch that removes the startup taint from `taints` (the node's spec.taints as just
 * read), or null when the taint is not there. It tests the whole taints list first: the API server
 * applies a patch to the object it is about to write, in one step, so when anything changed the
 * list since it was read (a taint added, removed or reordered) the test fails (422) and nothing is
 * written, rather than the wrong index being removed. Nothing else of the node is named, so status
 * and label updates in between do not conflict with it, as a resourceVersion precondition would.
 */
export function removalPatch(taint: StartupTaint, taints: readonly NodeTaint[]): JsonPatchOperation[] | null {
  const index = taints.findIndex((t) => matchesStartupTaint(taint, t));
  if (index < 0) return null;
  return [
    { op: 'test', path: '/spec/taints', value: taints },
    { op: 'remove', path: `/spec/taints/${index}` },
  ];
}
