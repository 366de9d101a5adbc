import type { Labels } from './model.js';
import { isValidLabelKey, isValidLabelValue } from './selector.js';
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
  readonly labels: Labels;
  readonly annotations: Readonly<Record<string, string>>;
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

export function isValidNamespaceName(name: string): boolean {
  return DNS_LABEL.test(name);
}

/**
 * Reads metadata for a sink whose object ref was made with `refOf`. Label entries the API server would
 * reject are dropped with a warning rather than failing the object: a selector can never match them.
 */
export function readMeta(object: Record<string, unknown>, sink: ProblemSink, namespaced: boolean): ObjectMeta {
  const metadata = recordAt(object, 'metadata');
  const name = stringAt(metadata, 'name') ?? '';
  if (name === '') sink.error('metadata.name', 'object has no name');
  const namespace = namespaced ? (stringAt(metadata, 'namespace') ?? 'default') : '';
  if (namespaced && !isValidNamespaceName(namespace)) sink.error('metadata.namespace', `"${namespace}" is not a valid namespace name`);
  const labels: Record<string, string> = {};
  for (const [key, value] of Object.entries(recordAt(metadata, 'labels'))) {
    if (isValidLabelKey(key) && typeof value === 'string' && isValidLabelValue(value)) labels[key] = value;
    else sink.warn(`metadata.labels.${key}`, 'label ignored: not a valid label key and value');
  }
  const annotations: Record<string, string> = {};
  for (const [key, value] of Object.entries(recordAt(metadata, 'annotations'))) {
    if (typeof value === 'string') annotations[key] = value;
  }
  return { name, namespace, labels, annotations };
}

/** The object reference used in problems, read defensively before anything is validated. */
export function refOf(kind: string, object: Record<string, unknown>, namespaced: boolean): ProblemSink {
  const metadata = recordAt(object, 'metadata');
  const name = stringAt(metadata, 'name') ?? '<unnamed>';
  const namespace = namespaced ? (stringAt(metadata, 'namespace') ?? 'default') : null;
  return new ProblemSink({ kind, namespace, name });
}
