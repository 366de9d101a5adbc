import { DEFAULT_POLICY_BUDGET } from './policy-budget.js';
import type { PolicyBudget } from './policy-budget.js';

/**
 * What the compiler needs to know about the node and the naming it owns. Validated here, once, so the
 * compiler never meets a prefix that could produce an over-long or clashing name.
 */

export interface CompilerSettings {
  readonly nodeName: string;
  /**
   * Host-side veth prefixes: for the AWS VPC CNI `eni` (its AWS_VPC_K8S_CNI_VETHPREFIX) and `vlan`
   * (the veths of branch-ENI pods, security groups for pods in strict mode); `cali` for Calico.
   */
  readonly interfacePrefixes: readonly string[];
  /** Prefix of every chain and ipset palisade owns. */
  readonly chainPrefix: string;
  /**
   * The packet-mark bit a policy sets to say "allowed". ClusterNetworkPolicy tiers use it and the next
   * two bits up (tierMarks): Accept, Pass, Deny.
   */
  readonly allowMark: number;
  /**
   * Traffic through an interface that has the prefix but belongs to no known pod yet. 'drop' (the
   * default) closes the window between a pod's interface appearing and its rules landing.
   */
  readonly unknownEndpoint: 'drop' | 'allow';
  /** What one policy may cost a node before it fails closed (policy-budget.ts). */
  readonly policyBudget: PolicyBudget;
  /** Logging of denied (and, for audit policies, would-be-denied) new connections; null: off. */
  readonly dropLog: DropLogSettings | null;
}

/**
 * The drop log's kernel side: an NFLOG rule ahead of each isolation drop, limited per pod and
 * direction and then per node, so one noisy pod uses at most a tenth of the node's records.
 */
export interface DropLogSettings {
  /** The NFLOG group palisade's reader binds to. */
  readonly group: number;
  /** Records per second per node, and the burst above it. */
  readonly rate: number;
  readonly burst: number;
}

/** A pod's share of the node's drop-log rate and burst, per direction. */
export function podDropLogLimit(settings: DropLogSettings): { rate: number; burst: number } {
  return { rate: Math.max(1, Math.ceil(settings.rate / 10)), burst: Math.max(2, Math.ceil(settings.burst / 10)) };
}

export const DEFAULT_DROP_LOG: DropLogSettings = Object.freeze({ group: 29, rate: 100, burst: 200 });

/** xt_limit and xt_hashlimit refuse rates above 10,000 per second. */
export const MAX_DROP_LOG_RATE = 10_000;

export const DEFAULT_SETTINGS = {
  interfacePrefixes: ['eni', 'vlan'],
  chainPrefix: 'pal',
  allowMark: 0x100000,
  unknownEndpoint: 'drop',
  policyBudget: DEFAULT_POLICY_BUDGET,
  dropLog: DEFAULT_DROP_LOG,
} as const satisfies Omit<CompilerSettings, 'nodeName'>;

/** Marks others on an EKS node already use: kube-proxy's masquerade and drop bits, the VPC CNI's connmark. */
export const RESERVED_MARKS: ReadonlyMap<number, string> = new Map([
  [0x4000, 'kube-proxy masquerade mark'],
  [0x8000, 'kube-proxy drop mark'],
  [0x80, 'AWS VPC CNI connmark'],
]);

/**
 * The bits a ClusterNetworkPolicy's word sets, from the allow bit up: a tier runs every policy of one
 * priority before it reads them, so a Deny and an Accept of the same priority can both be set and the
 * tie is broken by which bit the endpoint chain tests first (Deny, then Pass, then Accept).
 */
export interface TierMarks {
  readonly accept: number;
  readonly pass: number;
  readonly deny: number;
  /** All three. */
  readonly mask: number;
}

export function tierMarks(settings: Pick<CompilerSettings, 'allowMark'>): TierMarks {
  const accept = settings.allowMark;
  const pass = accept * 2;
  const deny = accept * 4;
  return { accept, pass, deny, mask: accept + pass + deny };
}

/** Chain prefixes earlier versions used; cleanup removes their leftovers too. */
export const HISTORIC_CHAIN_PREFIXES: readonly string[] = ['pal'];

export type SettingsInput = Partial<Omit<CompilerSettings, 'policyBudget'>> & { readonly nodeName: string; readonly policyBudget?: Partial<PolicyBudget> };

export type SettingsResult = { readonly ok: true; readonly settings: CompilerSettings } | { readonly ok: false; readonly errors: readonly string[] };

export function makeSettings(input: SettingsInput): SettingsResult {
  const settings: CompilerSettings = Object.freeze({
    nodeName: input.nodeName,
    interfacePrefixes: Object.freeze([...(input.interfacePrefixes ?? DEFAULT_SETTINGS.interfacePrefixes)]),
    chainPrefix: input.chainPrefix ?? DEFAULT_SETTINGS.chainPrefix,
    allowMark: input.allowMark ?? DEFAULT_SETTINGS.allowMark,
    unknownEndpoint: input.unknownEndpoint ?? DEFAULT_SETTINGS.unknownEndpoint,
    policyBudget: Object.freeze({ ...DEFAULT_SETTINGS.policyBudget, ...input.policyBudget }),
    dropLog: input.dropLog === undefined ? DEFAULT_SETTINGS.dropLog : input.dropLog === null ? null : Object.freeze({ ...input.dropLog }),
  });
  const errors: string[] = [];
  if (settings.nodeName === '') errors.push('node name: must not be empty');
  if (settings.interfacePrefixes.length === 0) errors.push('interface prefixes: at least one is needed');
  for (const prefix of settings.interfacePrefixes) {
    // Host-side names are the prefix plus 11 hex characters and must fit the kernel's 15.
    if (!/^[a-z][a-z0-9]{0,3}$/.test(prefix)) errors.push(`interface prefix "${prefix}": must be 1 to 4 lowercase letters or digits, starting with a letter`);
  }
  const prefixes = settings.interfacePrefixes;
  for (const a of prefixes) for (const b of prefixes) {
    if (a !== b && b.startsWith(a)) errors.push(`interface prefixes "${a}" and "${b}" overlap`);
  }
  // Chain names must stay within iptables' 28 characters: prefix + "-pi-" + 16 hash characters.
  if (!/^[a-z][a-z0-9]{0,7}$/.test(settings.chainPrefix)) errors.push(`chain prefix "${settings.chainPrefix}": must be 1 to 8 lowercase letters or digits, starting with a letter`);
  const mark = settings.allowMark;
  if (!Number.isInteger(mark) || mark <= 0 || mark > 0x20000000 || (mark & (mark - 1)) !== 0) {
    errors.push(`allow mark ${String(mark)}: must be a single bit no higher than 0x20000000 (palisade uses it and the two bits above it), e.g. 0x100000`);
  } else {
    const { accept, pass, deny } = tierMarks(settings);
    for (const bit of [accept, pass, deny]) {
      if (RESERVED_MARKS.has(bit)) errors.push(`allow mark 0x${mark.toString(16)}: palisade's bit 0x${bit.toString(16)} clashes with the ${RESERVED_MARKS.get(bit)!}`);
    }
  }
  const log = settings.dropLog;
  if (log !== null) {
    // Group 0 is where the kernel's own conntrack messages and older loggers go.
    if (!Number.isInteger(log.group) || log.group < 1 || log.group > 0xffff) errors.push(`drop log NFLOG group ${String(log.group)}: must be a whole number from 1 to 65535`);
    if (!Number.isInteger(log.rate) || log.rate < 1 || log.rate > MAX_DROP_LOG_RATE) errors.push(`drop log rate ${String(log.rate)}: must be a whole number of records per second from 1 to ${MAX_DROP_LOG_RATE}`);
    if (!Number.isInteger(log.burst) || log.burst < 1 || log.burst > MAX_DROP_LOG_RATE) errors.push(`drop log burst ${String(log.burst)}: must be a whole number from 1 to ${MAX_DROP_LOG_RATE}`);
  }
  for (const [what, limit] of Object.entries(settings.policyBudget)) {
    if (!Number.isInteger(limit) || limit < 1) errors.push(`policy budget ${what} ${String(limit)}: must be a whole number of at least 1`);
  }
  return errors.length > 0 ? { ok: false, errors } : { ok: true, settings };
}
