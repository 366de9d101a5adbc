import type { NamespaceRecord, NodeRecord } from './model.js';
import type { Problem } from './problems.js';
import { readMeta, recordAt, refOf, stringAt, isValidNamespaceName } from './object-fields.js';
import { parseIPv4 } from './ipv4.js';

/** The label the API server puts on every namespace; set here too for namespaces read from files. */
export const NAMESPACE_NAME_LABEL = 'kubernetes.io/metadata.name';

export interface Parsed<T> {
  readonly record: T | null;
  readonly problems: readonly Problem[];
}

export function parseNamespace(object: Record<string, unknown>): Parsed<NamespaceRecord> {
  const sink = refOf('Namespace', object, false);
  const meta = readMeta(object, sink, false);
  if (meta.name !== '' && !isValidNamespaceName(meta.name)) sink.error('metadata.name', `"${meta.name}" is not a valid namespace name`);
  if (sink.hasErrors) return { record: null, problems: sink.problems };
  return { record: { name: meta.name, labels: { ...meta.labels, [NAMESPACE_NAME_LABEL]: meta.name } }, problems: sink.problems };
}

/** A namespace that pods or policies live in but that was never seen as an object still has its name label. */
export function implicitNamespace(name: string): NamespaceRecord {
  return { name, labels: { [NAMESPACE_NAME_LABEL]: name } };
}

export function parseNode(object: Record<string, unknown>): Parsed<NodeRecord> {
  const sink = refOf('Node', object, false);
  const meta = readMeta(object, sink, false);
  const addresses: string[] = [];
  const internal: string[] = [];
  const list = recordAt(object, 'status')['addresses'];
  for (const entry of Array.isArray(list) ? list : []) {
    if (typeof entry !== 'object' || entry === null) continue;
    const address = stringAt(entry as Record<string, unknown>, 'address');
    if (address === null || parseIPv4(address) === null) continue;
    addresses.push(address);
    if (stringAt(entry as Record<string, unknown>, 'type') === 'InternalIP') internal.push(address);
  }
  if (sink.hasErrors) return { record: null, problems: sink.problems };
  const unique = (values: string[]) => [...new Set(values)].sort();
  return { record: { name: meta.name, labels: meta.labels, addresses: unique(addresses), internalAddresses: unique(internal) }, problems: sink.problems };
}
