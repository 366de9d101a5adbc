import { UsageError } from '../lib/errors.js';
import { makeSettings, DEFAULT_DROP_LOG, DEFAULT_SETTINGS, MAX_DROP_LOG_RATE } from '../rules/settings.js';
import { budgetOf, DEFAULT_POLICY_BUDGET } from '../rules/policy-budget.js';
import type { CompilerSettings, DropLogSettings } from '../rules/settings.js';

/** The flags every command that compiles shares, parsed into validated compiler settings. */
export const COMPILER_FLAGS = {
  'node-name': { type: 'string' },
  'interface-prefix': { type: 'string' },
  'chain-prefix': { type: 'string' },
  'allow-mark': { type: 'string' },
  'unknown-endpoint': { type: 'string' },
  'policy-max-rules': { type: 'string' },
  'policy-max-sets': { type: 'string' },
  'policy-max-set-entries': { type: 'string' },
  'policy-max-selector-pods': { type: 'string' },
  'drop-log': { type: 'string' },
  'drop-log-rate': { type: 'string' },
  'drop-log-group': { type: 'string' },
} as const;

export const COMPILER_FLAG_HELP = `  --interface-prefix LIST  host-side veth prefixes, comma separated (default ${DEFAULT_SETTINGS.interfacePrefixes.join(',')})
  --chain-prefix P        prefix of every chain and set (default ${DEFAULT_SETTINGS.chainPrefix})
  --allow-mark BIT        packet-mark bit for "allowed", and the two above it for Pass and Deny (default 0x${DEFAULT_SETTINGS.allowMark.toString(16)})
  --unknown-endpoint A    drop|allow traffic of pod interfaces not known yet (default ${DEFAULT_SETTINGS.unknownEndpoint})
  --policy-max-rules N    iptables rules one policy may need before it fails closed (default ${DEFAULT_POLICY_BUDGET.rules})
  --policy-max-sets N     ipsets one policy may need (default ${DEFAULT_POLICY_BUDGET.sets})
  --policy-max-set-entries N  ipBlock set entries one policy may need (default ${DEFAULT_POLICY_BUDGET.setEntries})
  --policy-max-selector-pods N  pods palisade may look at for one policy's selector sets (default ${DEFAULT_POLICY_BUDGET.selectorPods})
  --drop-log on|off       log rules ahead of each drop (default on)
  --drop-log-rate N       drop-log records per second per node (default ${DEFAULT_DROP_LOG.rate})
  --drop-log-group N      NFLOG group of the drop log (default ${DEFAULT_DROP_LOG.group})`;

export interface CompilerFlagValues {
  readonly 'node-name'?: string | undefined;
  readonly 'interface-prefix'?: string | undefined;
  readonly 'chain-prefix'?: string | undefined;
  readonly 'allow-mark'?: string | undefined;
  readonly 'unknown-endpoint'?: string | undefined;
  readonly 'policy-max-rules'?: string | undefined;
  readonly 'policy-max-sets'?: string | undefined;
  readonly 'policy-max-set-entries'?: string | undefined;
  readonly 'policy-max-selector-pods'?: string | undefined;
  readonly 'drop-log'?: string | undefined;
  readonly 'drop-log-rate'?: string | undefined;
  readonly 'drop-log-group'?: string | undefined;
}

interface GivenFlag {
  readonly value: string;
  /** Where it came from, for the error: "--drop-log-rate", "PALISADE_DROP_LOG_RATE". */
  readonly name: string;
}

/**
 * The drop log's settings from its flags: off, or on with a rate (burst: twice the rate) and an NFLOG
 * group. Problems go to `errors`; what is valid is range-checked again by makeSettings.
 */
export function parseDropLogFlags(given: { mode?: GivenFlag | undefined; rate?: GivenFlag | undefined; group?: GivenFlag | undefined }, errors: string[]): DropLogSettings | null {
  const mode = given.mode?.value ?? 'on';
  if (mode !== 'on' && mode !== 'off') errors.push(`${given.mode!.name} "${mode}": must be on or off`);
  const whole = (flag: GivenFlag | undefined, fallback: number): number => {
    if (flag === undefined) return fallback;
    if (!/^[0-9]+$/.test(flag.value)) {
      errors.push(`${flag.name} "${flag.value}": must be a whole number`);
      return fallback;
    }
    return Number(flag.value);
  };
  const rate = whole(given.rate, DEFAULT_DROP_LOG.rate);
  const group = whole(given.group, DEFAULT_DROP_LOG.group);
  // The kernel's limit matches take a burst of at most 10,000.
  return mode === 'off' ? null : { group, rate, burst: Math.min(rate * 2, MAX_DROP_LOG_RATE) };
}

export function compilerSettingsFromFlags(values: CompilerFlagValues, defaultNodeName?: string): CompilerSettings {
  const errors: string[] = [];
  const nodeName = values['node-name'] ?? defaultNodeName;
  if (nodeName === undefined) errors.push('--node-name is required');
  const mark = values['allow-mark'];
  const allowMark = mark === undefined ? undefined : Number(mark);
  if (mark !== undefined && (!/^(0x[0-9a-fA-F]+|[0-9]+)$/.test(mark) || !Number.isFinite(allowMark))) errors.push(`--allow-mark "${mark}": not a number`);
  const unknown = values['unknown-endpoint'];
  if (unknown !== undefined && unknown !== 'drop' && unknown !== 'allow') errors.push(`--unknown-endpoint "${unknown}": must be drop or allow`);
  const limit = (flag: 'policy-max-rules' | 'policy-max-sets' | 'policy-max-set-entries' | 'policy-max-selector-pods'): number | undefined => {
    const value = values[flag];
    if (value === undefined) return undefined;
    if (!/^[0-9]+$/.test(value) || Number(value) < 1) errors.push(`--${flag} "${value}": must be a whole number of at least 1`);
    return Number(value);
  };
  const policyBudget = budgetOf({ rules: limit('policy-max-rules'), sets: limit('policy-max-sets'), setEntries: limit('policy-max-set-entries'), selectorPods: limit('policy-max-selector-pods') });
  const prefixes = values['interface-prefix']?.split(',').map((s) => s.trim());
  const flag = (name: 'drop-log' | 'drop-log-rate' | 'drop-log-group'): GivenFlag | undefined => (values[name] === undefined ? undefined : { value: values[name], name: `--${name}` });
  const dropLog = parseDropLogFlags({ mode: flag('drop-log'), rate: flag('drop-log-rate'), group: flag('drop-log-group') }, errors);
  if (errors.length === 0) {
    const result = makeSettings({
      nodeName: nodeName!,
      ...(prefixes === undefined ? {} : { interfacePrefixes: prefixes }),
      ...(values['chain-prefix'] === undefined ? {} : { chainPrefix: values['chain-prefix'] }),
      ...(allowMark === undefined ? {} : { allowMark }),
      ...(unknown === undefined ? {} : { unknownEndpoint: unknown as 'drop' | 'allow' }),
      policyBudget,
      dropLog,
    });
    if (result.ok) return result.settings;
    errors.push(...result.errors);
  }
  throw new UsageError(errors.join('\n'));
}
