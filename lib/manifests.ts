/**
 * Reads Kubernetes manifests (YAML or JSON, multi-document streams, `List`s) from files and directories,
 * keeping the file and line of every object so that later errors can point back at their source.
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { getSystemErrorMessage } from 'node:util';
import { isMap, isNode, isSeq, LineCounter, parseAllDocuments } from 'yaml';
import { ManifestError } from './errors.js';

export interface ManifestSource {
  readonly file: string;
  /** 1-based line where the object's document (or List item) starts. */
  readonly line: number;
}

export interface LoadedObject {
  readonly object: Readonly<Record<string, unknown>>;
  readonly source: ManifestSource;
}

const MANIFEST_EXTENSIONS = new Set(['.yaml', '.yml', '.json']);

/** Loads every object from the given files and directories, in argument order then sorted path order. */
export async function loadManifests(paths: readonly string[]): Promise<LoadedObject[]> {
  const loaded: LoadedObject[] = [];
  for (const p of paths) {
    for (const file of await manifestFiles(p)) {
      const text = await readOrThrow(file, () => readFile(file, 'utf8'));
      loaded.push(...parseManifestText(text, file));
    }
  }
  return loaded;
}

async function manifestFiles(p: string): Promise<string[]> {
  const stats = await readOrThrow(p, () => stat(p));
  // An explicitly named file is the user's choice, whatever its extension.
  if (!stats.isDirectory()) return [p];
  // Sorting whole paths (not each directory's entries) gives one byte order across the tree.
  return (await walk(p)).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
}

async function walk(dir: string): Promise<string[]> {
  const entries = await readOrThrow(dir, () => readdir(dir, { withFileTypes: true }));
  const files: string[] = [];
  for (const entry of entries) {
    // Hidden entries include editor swap files, .git, and the `..data` links of mounted ConfigMaps.
    if (entry.name.startsWith('.')) continue;
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) files.push(...(await walk(full)));
    // Symlinked files are followed (ConfigMap volumes are made of them); symlinked directories are not,
    // so that a link cycle cannot recurse forever.
    else if ((entry.isFile() || entry.isSymbolicLink()) && MANIFEST_EXTENSIONS.has(path.extname(entry.name))) {
      files.push(full);
    }
  }
  return files;
}

async function readOrThrow<T>(file: string, read: () => Promise<T>): Promise<T> {
  try {
    return await read();
  } catch (err) {
    throw new ManifestError(file, undefined, `cannot read: ${systemReason(err)}`, { cause: err });
  }
}

/** "no such file or directory" rather than Node's "ENOENT: no such file or directory, stat 'x'". */
function systemReason(err: unknown): string {
  const errno = (err as NodeJS.ErrnoException | undefined)?.errno;
  if (typeof errno === 'number') return getSystemErrorMessage(errno);
  return err instanceof Error ? err.message : String(err);
}

/** Parses one YAML or JSON text (JSON is YAML) into objects; `file` is only used to name sources. */
export function parseManifestText(text: string, file: string): LoadedObject[] {
  const lineCounter = new LineCounter();
  // Merge keys (`<<`) are honoured because kubectl's YAML 1.1 parser honours them.
  const docs = parseAllDocuments(text, { lineCounter, prettyErrors: false, merge: true });
  const lineAt = (node: unknown, fallback: number): number =>
    isNode(node) && node.range ? lineCounter.linePos(node.range[0]).line : fallback;

  const loaded: LoadedObject[] = [];
  for (const doc of docs) {
    const error = doc.errors[0];
    if (error) throw new ManifestError(file, lineCounter.linePos(error.pos[0]).line, firstLine(error.message), { cause: error });
    const source = { file, line: lineAt(doc.contents, 1) };
    const value = toJS(() => doc.toJS(), source);
    // Comment-only documents, and an explicit `null`, hold no object, as kubectl also sees it.
    if (value === null || value === undefined) continue;
    if (!isPlainObject(value)) throw notAnObject(value, source);
    flatten(value, doc.contents, source, lineAt, loaded);
  }
  return loaded;
}

/** Appends `object`, or the items of a List, recursively; `node` is its YAML node, used only for item lines. */
function flatten(
  object: Record<string, unknown>,
  node: unknown,
  source: ManifestSource,
  lineAt: (node: unknown, fallback: number) => number,
  out: LoadedObject[],
): void {
  const apiVersion = requireString(object, 'apiVersion', source);
  const kind = requireString(object, 'kind', source);
  const items = object['items'];
  // A kind merely ending in "List" is an ordinary object unless it carries items, as `kubectl get -o yaml` prints.
  if (kind !== 'List' && !(kind.endsWith('List') && Array.isArray(items))) {
    out.push({ object, source });
    return;
  }
  if (items === undefined || items === null) return;
  if (!Array.isArray(items)) throw new ManifestError(source.file, source.line, `${kind} items must be a sequence`);

  // Through aliases or merge keys the nodes may not line up with the values; items then get the list's line.
  const itemsNode = isMap(node) ? node.get('items', true) : undefined;
  const itemNodes: unknown[] = isSeq(itemsNode) ? itemsNode.items : [];
  items.forEach((item: unknown, i) => {
    const itemSource = { file: source.file, line: lineAt(itemNodes[i], source.line) };
    if (!isPlainObject(item)) throw notAnObject(item, itemSource);
    // Typed lists (PodList, NetworkPolicyList) leave out each item's kind and apiVersion.
    const filled = kind === 'List' ? item : { kind: kind.slice(0, -'List'.length), apiVersion, ...item };
    flatten(filled, itemNodes[i], itemSource, lineAt, out);
  });
}

function requireString(object: Record<string, unknown>, key: string, source: ManifestSource): string {
  const value = object[key];
  if (typeof value !== 'string' || value === '') {
    throw new ManifestError(source.file, source.line, `object has no ${key}`);
  }
  return value;
}

/** Converting can still fail after a clean parse, e.g. on an alias to a later anchor or an alias bomb. */
function toJS(convert: () => unknown, source: ManifestSource): unknown {
  try {
    return convert();
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    throw new ManifestError(source.file, source.line, firstLine(message), { cause: err });
  }
}

function notAnObject(value: unknown, source: ManifestSource): ManifestError {
  const found = Array.isArray(value) ? 'sequence' : 'scalar';
  return new ManifestError(source.file, source.line, `expected a Kubernetes object (a mapping), found a ${found}`);
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function firstLine(message: string): string {
  return (message.split('\n')[0] ?? message).trim();
}
