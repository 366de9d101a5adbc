import { isValidLabelKey, isValidLabelValue } from './selector.js';
import type { Labels } from './model.js';
import { ProblemSink } from './problems.js';

/** Small readers shared by the object parsers: they accept `unknown` because input comes from YAML or the wire. */

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export function recordAt(parent: Record<string, unknown>, key: string): Record<string, unknown> {
  const value = parent[key];
  return isRecord(value) ? value : {};
}

export function stringAt(parent: Record<string, unknown>, key: string): string | null {
  const value = parent[key];
  return typeof value === 'string' ? value : null;
}

export interface ObjectMeta {
  readonly name: string;
  readonly namespace: string;
  readonly labels: Record<string, string>;
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

export function isValidNamespaceName(name: string): boolean {
  return DNS_LABEL.test(name);
}

/**
 * Reads metadata for a sink whose object ref was made with `refOf`. Label entries the API server would
 * reject are dropped with a warning rather than failing the object: a selector can never match them.
 */
/**
 * With `known`, label sets (and namespaces) seen before are taken as they were the first time, valid,
 * instead of being checked again: the pods of a Deployment carry the same ones.
 */
export function readMeta(object: Record<string, unknown>, sink: ProblemSink, namespaced: boolean, known?: KnownMeta): ObjectMeta {
  const metadata = recordAt(object, 'metadata');
  const name = stringAt(metadata, 'name') ?? '';
  if (name === '') sink.error('metadata.name', 'object has no name');
  const namespace = namespaced ? (stringAt(metadata, 'namespace') ?? 'default') : '';
  if (namespaced && known?.namespace(namespace) === undefined && !isValidNamespaceName(namespace)) sink.error('metadata.namespace', `"${namespace}" is not a valid namespace name`);
  const raw = recordAt(metadata, 'labels');
  const shared = known?.labels(raw);
  if (shared !== undefined) return { name, namespace, labels: shared };
  const labels: Record<string, string> = {};
  for (const [key, value] of Object.entries(raw)) {
    if (isValidLabelKey(key) && typeof value === 'string' && isValidLabelValue(value)) labels[key] = value;
    else sink.warn(`metadata.labels.${key}`, 'label ignored: not a valid label key and value');
  }
  return { name, namespace, labels };
}

/** What readMeta may take as already checked. */
export interface KnownMeta {
  /** The shared copy of a namespace name known to be valid, or undefined. */
  namespace(name: string): string | undefined;
  /** The shared copy of a label set known to be valid, or undefined. */
  labels(raw: Record<string, unknown>): Labels | undefined;
}

/** The object reference used in problems, read defensively before anything is validated. */
export function refOf(kind: string, object: Record<string, unknown>, namespaced: boolean): ProblemSink {
  const metadata = recordAt(object, 'metadata');
  const name = stringAt(metadata, 'name') ?? '<unnamed>';
  const namespace = namespaced ? (stringAt(metadata, 'namespace') ?? 'default') : null;
  return new ProblemSink({ kind, namespace, name });
}
