/**
 * RFC 6902 JSON patch for the lab API server: test, add, remove and replace, applied to a copy, all
 * or nothing, as the real API server applies an application/json-patch+json PATCH. A failed `test`
 * or a path that is not there is a JsonPatchError with status 422 (as the API server answers); a
 * patch that is not a list of operations is one with status 400.
 */

export class JsonPatchError extends Error {
  readonly status: 400 | 422;

  constructor(status: 400 | 422, message: string) {
    super(message);
    this.name = 'JsonPatchError';
    this.status = status;
  }
}

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** "/spec/taints/0" → ["spec", "taints", "0"], with ~1 and ~0 unescaped. */
function pointer(path: unknown): string[] {
  if (typeof path !== 'string' || (path !== '' && !path.startsWith('/'))) throw new JsonPatchError(400, `invalid JSON pointer ${JSON.stringify(path)}`);
  return path === '' ? [] : path.slice(1).split('/').map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
}

/** Deep equality of JSON values, member order aside. */
export function jsonEqual(a: unknown, b: unknown): boolean {
  return equal(a, b);
}

function equal(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Array.isArray(a) || Array.isArray(b)) return Array.isArray(a) && Array.isArray(b) && a.length === b.length && a.every((x, i) => equal(x, b[i]));
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  return ka.length === kb.length && ka.every((k) => Object.hasOwn(b, k) && equal((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]));
}

/** The container holding the last segment, and that segment; throws 422 when a step is missing. */
function parentOf(doc: Json, segments: string[], path: string): { parent: Json[] | { [key: string]: Json }; last: string } {
  let at: Json = doc;
  for (const segment of segments.slice(0, -1)) {
    const next: Json | undefined = Array.isArray(at) ? at[Number(segment)] : typeof at === 'object' && at !== null ? at[segment] : undefined;
    if (next === undefined || next === null || typeof next !== 'object') throw new JsonPatchError(422, `path ${path}: ${segment} does not exist`);
    at = next;
  }
  if (typeof at !== 'object' || at === null) throw new JsonPatchError(422, `path ${path}: no container`);
  return { parent: at, last: segments[segments.length - 1]! };
}

function arrayIndex(parent: Json[], last: string, path: string, forAdd: boolean): number {
  if (forAdd && last === '-') return parent.length;
  if (!/^(0|[1-9][0-9]*)$/.test(last)) throw new JsonPatchError(422, `path ${path}: "${last}" is not an array index`);
  const index = Number(last);
  if (index > parent.length || (!forAdd && index === parent.length)) throw new JsonPatchError(422, `path ${path}: index ${index} out of range`);
  return index;
}

function read(doc: Json, path: string): Json | undefined {
  let at: Json | undefined = doc;
  for (const segment of pointer(path)) {
    if (Array.isArray(at)) at = /^(0|[1-9][0-9]*)$/.test(segment) ? at[Number(segment)] : undefined;
    else if (typeof at === 'object' && at !== null) at = Object.hasOwn(at, segment) ? at[segment] : undefined;
    else return undefined;
  }
  return at;
}

/** Applies `patch` to a copy of `document`; returns the copy, or throws JsonPatchError and changes nothing. */
export function applyJsonPatch<T>(document: T, patch: unknown): T {
  if (!Array.isArray(patch)) throw new JsonPatchError(400, 'a JSON patch must be a list of operations');
  const doc = structuredClone(document) as Json;
  for (const operation of patch as unknown[]) {
    if (typeof operation !== 'object' || operation === null) throw new JsonPatchError(400, 'every JSON patch operation must be an object');
    const { op, path, value } = operation as { op?: unknown; path?: unknown; value?: unknown };
    const segments = pointer(path);
    const where = String(path);
    if (op === 'test') {
      if (!equal(read(doc, where), value)) throw new JsonPatchError(422, `testing value ${where} failed`);
      continue;
    }
    if (segments.length === 0) throw new JsonPatchError(422, `${String(op)} of the whole document is not supported`);
    const { parent, last } = parentOf(doc, segments, where);
    if (op === 'remove' || op === 'replace') {
      if (Array.isArray(parent)) {
        const index = arrayIndex(parent, last, where, false);
        if (op === 'remove') parent.splice(index, 1);
        else parent[index] = structuredClone(value) as Json;
      } else {
        if (!Object.hasOwn(parent, last)) throw new JsonPatchError(422, `${op} ${where}: no such member`);
        if (op === 'remove') delete parent[last];
        else parent[last] = structuredClone(value) as Json;
      }
    } else if (op === 'add') {
      if (Array.isArray(parent)) parent.splice(arrayIndex(parent, last, where, true), 0, structuredClone(value) as Json);
      else parent[last] = structuredClone(value) as Json;
    } else {
      throw new JsonPatchError(400, `unsupported JSON patch operation ${JSON.stringify(op)} (the lab supports test, add, remove, replace)`);
    }
  }
  return doc as T;
}

/**
 * RFC 7386 JSON merge patch (application/merge-patch+json), as the API server applies it to custom
 * resources: objects merge member by member, null removes a member, anything else (lists included)
 * replaces. Returns a new document; `document` is left as it was.
 */
export function applyMergePatch<T>(document: T, patch: unknown): T {
  if (typeof patch !== 'object' || patch === null || Array.isArray(patch)) throw new JsonPatchError(400, 'a JSON merge patch must be an object');
  return merge(structuredClone(document) as Json, patch as Json) as T;
}

function merge(target: Json, patch: Json): Json {
  if (typeof patch !== 'object' || patch === null || Array.isArray(patch)) return structuredClone(patch);
  const result: { [key: string]: Json } = typeof target === 'object' && target !== null && !Array.isArray(target) ? target : {};
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete result[key];
    else result[key] = merge(Object.hasOwn(result, key) ? result[key]! : null, value);
  }
  return result;
}
