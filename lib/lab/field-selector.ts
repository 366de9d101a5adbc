/**
 * Field selectors for the lab API server: `a.b=x,c!=y` (`==` as `=`), each a dotted path into the
 * object compared as text, a missing field reading as ''. Enough for what clients send it
 * (`kubectl describe` asks for Events by involvedObject.name, namespace, kind and uid); a real API
 * server allows fewer fields per kind, and refuses the rest.
 */
export interface FieldRequirement {
  readonly path: readonly string[];
  readonly equal: boolean;
  readonly value: string;
}

/** Null for an empty selector; throws on one it cannot read. */
export function parseFieldSelector(text: string): FieldRequirement[] | null {
  if (text.trim() === '') return null;
  return text.split(',').map((part) => {
    const match = /^\s*([A-Za-z0-9_.]+)\s*(==|!=|=)\s*(.*?)\s*$/.exec(part);
    if (match === null) throw new Error(`invalid field selector "${part}"`);
    return { path: match[1]!.split('.'), equal: match[2] !== '!=', value: match[3]! };
  });
}

export function fieldsMatch(requirements: readonly FieldRequirement[] | null, object: unknown): boolean {
  if (requirements === null) return true;
  return requirements.every((r) => {
    const found = r.path.reduce<unknown>((o, key) => (typeof o === 'object' && o !== null ? (o as Record<string, unknown>)[key] : undefined), object);
    const text = found === undefined || found === null ? '' : String(found);
    return (text === r.value) === r.equal;
  });
}
