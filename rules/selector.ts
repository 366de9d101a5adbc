import type { Labels, Selector, SelectorOperator, SelectorRequirement } from './model.js';
import type { ProblemSink } from './problems.js';

/**
 * Label selectors (metav1.LabelSelector): matchLabels and matchExpressions, ANDed. Parsing validates
 * what the API server would, because an invalid selector that quietly matched nothing (or everything)
 * would change what a policy allows.
 */

const OPERATORS: readonly SelectorOperator[] = ['In', 'NotIn', 'Exists', 'DoesNotExist'];
const NAME_PART = /^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$/;

export function isValidLabelKey(key: string): boolean {
  const slash = key.indexOf('/');
  if (slash < 0) return NAME_PART.test(key);
  const prefix = key.slice(0, slash);
  return prefix.length <= 253 && DNS_SUBDOMAIN.test(prefix) && NAME_PART.test(key.slice(slash + 1));
}

export function isValidLabelValue(value: string): boolean {
  return value.length <= 63 && LABEL_VALUE.test(value);
}

export const MATCH_ALL: Selector = { requirements: [], canonical: '' };

export function makeSelector(requirements: readonly SelectorRequirement[]): Selector {
  const normalised = requirements
    .map((r) => ({ key: r.key, operator: r.operator, values: [...new Set(r.values)].sort() }))
    .sort((a, b) => compareRequirement(a, b));
  const unique = normalised.filter((r, i) => i === 0 || compareRequirement(r, normalised[i - 1]!) !== 0);
  const canonical = unique.map((r) => `${r.key} ${r.operator} (${r.values.join(',')})`).join(' && ');
  return { requirements: unique, canonical };
}

function compareRequirement(a: SelectorRequirement, b: SelectorRequirement): number {
  const ka = `${a.key}\u0000${a.operator}\u0000${a.values.join('\u0001')}`;
  const kb = `${b.key}\u0000${b.operator}\u0000${b.values.join('\u0001')}`;
  return ka < kb ? -1 : ka > kb ? 1 : 0;
}

export function selectorMatches(selector: Selector, labels: Labels): boolean {
  for (const requirement of selector.requirements) {
    if (!requirementMatches(requirement, labels)) return false;
  }
  return true;
}

function requirementMatches(requirement: SelectorRequirement, labels: Labels): boolean {
  const has = Object.prototype.hasOwnProperty.call(labels, requirement.key);
  switch (requirement.operator) {
    case 'In':
      return has && requirement.values.includes(labels[requirement.key]!);
    case 'NotIn':
      return !has || !requirement.values.includes(labels[requirement.key]!);
    case 'Exists':
      return has;
    case 'DoesNotExist':
      return !has;
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * Parses a LabelSelector found at `field`. Returns null when the selector is invalid (the problems say
 * why); callers decide what an invalid selector means for safety.
 */
export function parseSelector(raw: unknown, field: string, sink: ProblemSink): Selector | null {
  if (raw === undefined || raw === null) return MATCH_ALL;
  if (!isRecord(raw)) {
    sink.error(field, 'a label selector must be an object with matchLabels and/or matchExpressions');
    return null;
  }
  const before = sink.problems.length;
  const requirements: SelectorRequirement[] = [];
  for (const key of Object.keys(raw)) {
    if (key !== 'matchLabels' && key !== 'matchExpressions') sink.unknownField(`${field}.${key}`, 'label selector');
  }
  parseMatchLabels(raw['matchLabels'], `${field}.matchLabels`, sink, requirements);
  parseMatchExpressions(raw['matchExpressions'], `${field}.matchExpressions`, sink, requirements);
  const failed = sink.problems.slice(before).some((p) => p.severity === 'error');
  return failed ? null : makeSelector(requirements);
}

function parseMatchLabels(raw: unknown, field: string, sink: ProblemSink, out: SelectorRequirement[]): void {
  if (raw === undefined || raw === null) return;
  if (!isRecord(raw)) {
    sink.error(field, 'matchLabels must be a map of label keys to values');
    return;
  }
  for (const [key, value] of Object.entries(raw)) {
    if (!isValidLabelKey(key)) sink.error(`${field}.${key}`, `"${key}" is not a valid label key`);
    else if (typeof value !== 'string' || !isValidLabelValue(value)) {
      sink.error(`${field}.${key}`, `${JSON.stringify(value)} is not a valid label value`);
    } else out.push({ key, operator: 'In', values: [value] });
  }
}

function parseMatchExpressions(raw: unknown, field: string, sink: ProblemSink, out: SelectorRequirement[]): void {
  if (raw === undefined || raw === null) return;
  if (!Array.isArray(raw)) {
    sink.error(field, 'matchExpressions must be a list');
    return;
  }
  raw.forEach((item: unknown, i) => {
    const at = `${field}[${i}]`;
    if (!isRecord(item)) {
      sink.error(at, 'a match expression must be an object with key, operator and values');
      return;
    }
    for (const name of Object.keys(item)) if (name !== 'key' && name !== 'operator' && name !== 'values') sink.unknownField(`${at}.${name}`, 'match expression');
    const { key, operator, values } = item;
    if (typeof key !== 'string' || !isValidLabelKey(key)) {
      sink.error(`${at}.key`, `${JSON.stringify(key)} is not a valid label key`);
      return;
    }
    if (typeof operator !== 'string' || !(OPERATORS as readonly string[]).includes(operator)) {
      sink.error(`${at}.operator`, `${JSON.stringify(operator)} is not one of ${OPERATORS.join(', ')}`);
      return;
    }
    const list = values ?? [];
    if (!Array.isArray(list) || !list.every((v): v is string => typeof v === 'string')) {
      sink.error(`${at}.values`, 'values must be a list of strings');
      return;
    }
    const op = operator as SelectorOperator;
    const needsValues = op === 'In' || op === 'NotIn';
    if (needsValues && list.length === 0) sink.error(`${at}.values`, `operator ${op} needs at least one value`);
    else if (!needsValues && list.length > 0) sink.error(`${at}.values`, `operator ${op} takes no values`);
    else if (list.some((v) => !isValidLabelValue(v))) sink.error(`${at}.values`, 'values must be valid label values');
    else out.push({ key, operator: op, values: list });
  });
}
