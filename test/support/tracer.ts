/**
 * Packet tracer for the test suite: loads rendered iptables-restore (or iptables-save) text, independently
 * of the compiler, and walks a packet through it the way the kernel would, so tests can assert verdicts.
 *
 *   const sets = IpsetModel.parse(ipsetText);
 *   const rules = IptablesModel.parse(iptablesText);
 *   const r = rules.trace('FORWARD', { src: '10.0.0.1', dst: '10.0.0.2', protocol: 'tcp', dport: 80 }, sets);
 *   assert.equal(r.verdict, 'ACCEPT', r.describe());
 *
 * Strict by design: a line it does not understand throws an Error quoting it. The rule grammar lives in
 * iptables-model.ts, sets and the packet type in ipset-model.ts.
 */
import type { IpsetModel, Packet, SourceLine } from './ipset-model.js';
import { lineError, meaningfulLines, packetAddress, parseIPv4, tokenize } from './ipset-model.js';
import type { Env, Hook, Rule, SetRef, TableName, Target } from './iptables-model.js';
import { BUILTIN_CHAINS, parseRule } from './iptables-model.js';

export { IpsetModel } from './ipset-model.js';
export type { CtState, Packet, Protocol, SetDim, SetType } from './ipset-model.js';
export type { Hook, TableName } from './iptables-model.js';

export interface TraceStep {
  table: string;
  chain: string;
  /** 1-based position of the rule in its chain. */
  index: number;
  /** The rule as written, normalised to `-A CHAIN ...`. */
  text: string;
  matched: boolean;
}

export interface TraceResult {
  verdict: 'ACCEPT' | 'DROP';
  /** Rules evaluated, matched or not. */
  rulesWalked: number;
  /** The packet mark when the verdict was reached. */
  mark: number;
  steps: TraceStep[];
  /** What decided the verdict, e.g. `filter/pal-x rule 2` or `policy of filter/FORWARD`. */
  reason: string;
  /** LOG and NFLOG rules the packet matched on its way, in order. */
  logged: { readonly via: 'LOG' | 'NFLOG'; readonly prefix: string; readonly group: number | null }[];
  describe(): string;
}

/** Kernel limits: chain names are 29 bytes with the NUL, set names 32. */
const MAX_CHAIN_NAME = 28;
const MAX_SET_NAME = 31;
/** A trace walking more rules than this is certainly looping. */
const MAX_RULES_WALKED = 100_000;

// ---------------------------------------------------------------------------------------------------------
// Tables and chains, loaded with iptables-restore --noflush semantics.
// ---------------------------------------------------------------------------------------------------------

interface Chain {
  readonly name: string;
  readonly builtin: boolean;
  policy: 'ACCEPT' | 'DROP';
  rules: Rule[];
}

/** A table's chains in declaration order (builtins first). */
type Table = Map<string, Chain>;

function isTableName(name: string): name is TableName {
  return Object.hasOwn(BUILTIN_CHAINS, name);
}

function emptyTable(name: TableName): Table {
  return new Map(BUILTIN_CHAINS[name].map((c) => [c, { name: c, builtin: true, policy: 'ACCEPT', rules: [] }]));
}

/** Rules are immutable, so a shallow copy of each chain is enough to stage a table until COMMIT. */
function cloneTable(table: Table): Table {
  return new Map([...table].map(([name, c]) => [name, { ...c, rules: [...c.rules] }]));
}

/** A table being filled between `*name` and `COMMIT`; applied only at COMMIT, as iptables-restore does. */
interface OpenTable {
  readonly name: TableName;
  readonly chains: Table;
  readonly header: SourceLine;
}

export class IptablesModel {
  private readonly tables = new Map<TableName, Table>();
  /** Problems only visible while loading (a chain declared twice in one text), reported by check(). */
  private readonly loadProblems: string[] = [];

  static parse(text: string): IptablesModel {
    const model = new IptablesModel();
    model.load(text);
    return model;
  }

  /** Applies more restore text on top of what is loaded (iptables-restore --noflush). */
  load(text: string): void {
    let open: OpenTable | undefined;
    const declared = new Set<string>();
    const problems: string[] = [];
    for (const line of meaningfulLines(text)) {
      const trimmed = line.text.trim();
      if (trimmed.startsWith('*')) {
        if (open) throw lineError(line, `table ${open.name} was not COMMITted before this one`);
        const name = trimmed.slice(1);
        if (!isTableName(name)) throw lineError(line, `unsupported table ${JSON.stringify(name)}`);
        open = { name, chains: cloneTable(this.table(name)), header: line };
      } else if (trimmed === 'COMMIT') {
        if (!open) throw lineError(line, 'COMMIT without a table');
        this.tables.set(open.name, open.chains);
        open = undefined;
      } else if (!open) {
        throw lineError(line, 'line outside a *table section');
      } else if (trimmed.startsWith(':')) {
        const name = declareChain(open, line);
        const key = `${open.name}/${name}`;
        if (declared.has(key)) problems.push(`chain declared twice in one text: ${key} (line ${line.no})`);
        declared.add(key);
      } else {
        runCommand(open, line);
      }
    }
    if (open) throw lineError(open.header, `table ${open.name} was never COMMITted`);
    this.loadProblems.push(...problems);
  }

  /** Chain names of a table: builtins first, then user chains in declaration order. */
  chains(table: string = 'filter'): string[] {
    return [...this.table(table).keys()];
  }

  rules(chain: string, table: string = 'filter'): readonly string[] {
    return this.chain(this.table(table), chain, table).rules.map((r) => r.text);
  }

  trace(hook: Hook, packet: Packet, sets: IpsetModel, table: string = 'filter'): TraceResult {
    const chains = this.table(table);
    const base = chains.get(hook);
    if (!base?.builtin) throw new Error(`${hook} is not a builtin chain of table ${table}`);
    assertLoadable(chains, table, sets);
    return new Walker(chains, table, makeEnv(packet, sets)).run(base);
  }

  check(sets?: IpsetModel): string[] {
    const problems = [...this.loadProblems];
    for (const [name, chains] of this.tables) {
      problems.push(...checkTable(name, chains, sets));
    }
    for (const set of sets?.names() ?? []) {
      if (set.length > MAX_SET_NAME) problems.push(`set name too long (${set.length} > ${MAX_SET_NAME}): ${set}`);
    }
    return [...new Set(problems)];
  }

  private table(name: string): Table {
    if (!isTableName(name)) throw new Error(`unknown table ${JSON.stringify(name)}`);
    return this.tables.get(name) ?? emptyTable(name);
  }

  private chain(table: Table, name: string, tableName: string): Chain {
    const chain = table.get(name);
    if (!chain) throw new Error(`chain ${tableName}/${name} does not exist`);
    return chain;
  }
}

/** `:NAME POLICY [packets:bytes]`. Re-declaring a user chain flushes it; a builtin only gets its policy set. */
function declareChain(open: OpenTable, line: SourceLine): string {
  const [first, policy, counters, ...extra] = tokenize(line).map((t) => t.value);
  const name = first!.slice(1);
  if (name === '' || policy === undefined || extra.length > 0) throw lineError(line, 'expected :CHAIN POLICY [packets:bytes]');
  if (counters !== undefined && !/^\[[0-9]+:[0-9]+\]$/.test(counters)) throw lineError(line, 'bad counters');
  const existing = open.chains.get(name);
  if (existing?.builtin) {
    if (policy !== 'ACCEPT' && policy !== 'DROP') throw lineError(line, `builtin chain policy must be ACCEPT or DROP`);
    if (open.name === 'nat' && policy === 'DROP') throw lineError(line, 'nat chains cannot have a DROP policy');
    existing.policy = policy;
  } else {
    if (policy !== '-') throw lineError(line, `user chain ${name} cannot have a policy (use "-")`);
    if (existing) existing.rules = [];
    else open.chains.set(name, { name, builtin: false, policy: 'ACCEPT', rules: [] });
  }
  return name;
}

/** `-A`, `-I`, `-N`, `-F`, `-X`, `-P` lines, optionally prefixed by iptables-save -c counters. */
function runCommand(open: OpenTable, line: SourceLine): void {
  let tokens = tokenize(line);
  if (/^\[[0-9]+:[0-9]+\]$/.test(tokens[0]!.value)) tokens = tokens.slice(1);
  const [cmd, chainTok, ...rest] = tokens;
  const chainName = chainTok?.value;
  const chain = chainName === undefined ? undefined : open.chains.get(chainName);
  const needChain = (): Chain => {
    if (!chain) throw lineError(line, chainName === undefined ? `${cmd!.value} needs a chain` : `chain ${chainName} does not exist`);
    return chain;
  };
  switch (cmd?.value) {
    case '-A': case '--append': {
      const c = needChain();
      c.rules.push(buildRule(open.name, c, rest, line));
      return;
    }
    case '-I': case '--insert': {
      const c = needChain();
      const hasPos = rest[0] !== undefined && /^[0-9]+$/.test(rest[0].value);
      const pos = hasPos ? Number(rest[0]!.value) : 1;
      if (pos < 1 || pos > c.rules.length + 1) throw lineError(line, `insert position ${pos} out of range`);
      c.rules.splice(pos - 1, 0, buildRule(open.name, c, hasPos ? rest.slice(1) : rest, line));
      return;
    }
    case '-N': case '--new-chain':
      if (chainName === undefined || rest.length > 0) throw lineError(line, '-N needs exactly one chain name');
      if (chain) throw lineError(line, `chain ${chainName} already exists`);
      open.chains.set(chainName, { name: chainName, builtin: false, policy: 'ACCEPT', rules: [] });
      return;
    case '-F': case '--flush':
      if (rest.length > 0) throw lineError(line, '-F takes at most one chain');
      for (const c of chainName === undefined ? open.chains.values() : [needChain()]) c.rules = [];
      return;
    case '-X': case '--delete-chain':
      return deleteChain(open, needChain(), rest.length, line);
    case '-P': case '--policy': {
      const c = needChain();
      const policy = rest[0]?.value;
      if (!c.builtin || (policy !== 'ACCEPT' && policy !== 'DROP') || rest.length !== 1) {
        throw lineError(line, '-P needs a builtin chain and ACCEPT or DROP');
      }
      c.policy = policy;
      return;
    }
    default:
      throw lineError(line, `unsupported command ${JSON.stringify(cmd?.value)}`);
  }
}

/** The kernel only deletes an empty, unreferenced user chain. */
function deleteChain(open: OpenTable, chain: Chain, extra: number, line: SourceLine): void {
  if (extra > 0 || chain.builtin) throw lineError(line, '-X needs exactly one user chain');
  if (chain.rules.length > 0) throw lineError(line, `chain ${chain.name} is not empty`);
  for (const c of open.chains.values()) {
    if (c.rules.some((r) => targetChain(r) === chain.name)) throw lineError(line, `chain ${chain.name} is still referenced from ${c.name}`);
  }
  open.chains.delete(chain.name);
}

function buildRule(table: TableName, chain: Chain, spec: readonly { value: string; start: number }[], line: SourceLine): Rule {
  // Keep the text as written (quotes included) but always in `-A CHAIN` form, whatever command added it.
  const text = spec.length === 0 ? `-A ${chain.name}` : `-A ${chain.name} ${line.text.slice(spec[0]!.start).trim()}`;
  return { text, ...parseRule(spec.map((t) => t.value), line, table, chain) };
}

function targetChain(rule: Rule): string | undefined {
  return rule.target?.kind === 'jump' || rule.target?.kind === 'goto' ? rule.target.chain : undefined;
}

function ruleWhere(table: string, chain: Chain, index: number): string {
  return `${table}/${chain.name} rule ${index + 1}`;
}

// ---------------------------------------------------------------------------------------------------------
// Walking a packet through a table.
// ---------------------------------------------------------------------------------------------------------

function makeEnv(packet: Packet, sets: IpsetModel): Env {
  const known = ['tcp', 'udp', 'sctp', 'icmp'];
  if (!known.includes(packet.protocol)) throw new Error(`packet protocol must be one of ${known.join('|')}`);
  for (const port of [packet.sport, packet.dport]) {
    if (port !== undefined && (!Number.isInteger(port) || port < 0 || port > 65535)) throw new Error(`packet port out of range: ${port}`);
  }
  const mark = packet.mark ?? 0;
  if (!Number.isInteger(mark) || mark < 0 || mark > 0xffffffff) throw new Error(`packet mark out of range: ${mark}`);
  const local = new Set(
    (packet.localAddresses ?? []).map((a) => {
      const n = parseIPv4(a);
      if (n === undefined) throw new Error(`packet localAddresses entry is not IPv4: ${JSON.stringify(a)}`);
      return n;
    }),
  );
  const ctstate = packet.ctstate ?? 'NEW';
  if (!['NEW', 'ESTABLISHED', 'RELATED', 'INVALID'].includes(ctstate)) throw new Error(`bad packet ctstate ${ctstate}`);
  return { packet, src: packetAddress(packet, 'src'), dst: packetAddress(packet, 'dst'), ctstate, local, sets, mark, overLimit: packet.overLimit === true };
}

/**
 * The kernel refuses a whole table whose rules name a missing chain or set, so a trace does too, before
 * walking anything: otherwise a broken rule that this packet happens not to reach would go unnoticed.
 */
function assertLoadable(chains: Table, table: string, sets: IpsetModel): void {
  for (const chain of chains.values()) {
    chain.rules.forEach((rule, i) => {
      const target = targetChain(rule);
      if (target !== undefined && !chains.has(target)) {
        throw new Error(`${ruleWhere(table, chain, i)} jumps to undefined chain ${target}: ${rule.text}`);
      }
      for (const ref of rule.setRefs) {
        if (!sets.has(ref.name)) throw new Error(`${ruleWhere(table, chain, i)} uses undefined set ${ref.name}: ${rule.text}`);
        if (sets.dimension(ref.name) !== ref.dims.length) {
          throw new Error(`${ruleWhere(table, chain, i)} uses ${ref.dims.length} direction flag(s) on ${sets.typeOf(ref.name)} set ${ref.name}: ${rule.text}`);
        }
      }
    });
  }
}

/** A return address pushed by -j (never by -g): the chain and the index of the rule after the jump. */
interface Frame {
  readonly chain: Chain;
  readonly next: number;
}

class Walker {
  private mark: number;
  private walked = 0;
  private readonly steps: TraceStep[] = [];
  private readonly stack: Frame[] = [];
  private readonly logged: TraceResult['logged'] = [];

  constructor(
    private readonly chains: Table,
    private readonly table: string,
    private readonly env: Env,
  ) {
    this.mark = env.mark;
  }

  run(base: Chain): TraceResult {
    let chain = base;
    let pos = 0;
    for (;;) {
      const rule = chain.rules[pos];
      // Falling off the end of a chain behaves exactly like a matched RETURN.
      let target: Target | undefined = { kind: 'RETURN' };
      if (rule !== undefined) {
        target = this.evaluate(chain, pos, rule) ? rule.target : undefined;
        pos++;
      }
      switch (target?.kind) {
        case undefined:
          break; // counter-only
        case 'LOG':
          this.logged.push({ via: target.via, prefix: target.prefix, group: target.group });
          break; // non-terminating
        case 'MARK':
          this.mark = (((this.mark & ~target.mask) >>> 0) ^ target.value) >>> 0;
          break;
        case 'ACCEPT': case 'DROP':
          return this.result(target.kind, ruleWhere(this.table, chain, pos - 1));
        case 'RETURN': {
          // Back to the last -j caller; -g pushed no frame, so a goto chain returns past its caller.
          const frame = this.stack.pop();
          if (!frame) return this.result(base.policy, `policy of ${this.table}/${base.name}`);
          ({ chain, next: pos } = frame);
          break;
        }
        case 'jump': case 'goto':
          if (target.kind === 'jump') this.stack.push({ chain, next: pos });
          chain = this.chains.get(target.chain)!; // existence checked by assertLoadable
          pos = 0;
          break;
      }
    }
  }

  private evaluate(chain: Chain, pos: number, rule: Rule): boolean {
    this.walked++;
    if (this.walked > MAX_RULES_WALKED) throw new Error(`more than ${MAX_RULES_WALKED} rules walked: jump loop? last rule ${rule.text}`);
    const env = { ...this.env, mark: this.mark };
    let matched: boolean;
    try {
      matched = rule.matches.every((m) => m(env));
    } catch (err) {
      throw new Error(`${ruleWhere(this.table, chain, pos)}: ${(err as Error).message}: ${rule.text}`, { cause: err });
    }
    this.steps.push({ table: this.table, chain: chain.name, index: pos + 1, text: rule.text, matched });
    return matched;
  }

  private result(verdict: 'ACCEPT' | 'DROP', reason: string): TraceResult {
    const { steps, walked: rulesWalked, mark, logged } = this;
    return {
      verdict, rulesWalked, mark, steps, reason, logged,
      describe: () =>
        [
          `${verdict} by ${reason}; ${rulesWalked} rule(s) walked; mark 0x${mark.toString(16)}`,
          ...steps.map((s) => `  ${s.matched ? 'match' : '     '} ${s.table}/${s.chain}#${s.index}: ${s.text}`),
        ].join('\n'),
    };
  }
}

// ---------------------------------------------------------------------------------------------------------
// Structural checks.
// ---------------------------------------------------------------------------------------------------------

function checkTable(table: TableName, chains: Table, sets: IpsetModel | undefined): string[] {
  const problems: string[] = [];
  for (const chain of chains.values()) {
    if (!chain.builtin && chain.name.length > MAX_CHAIN_NAME) {
      problems.push(`chain name too long (${chain.name.length} > ${MAX_CHAIN_NAME}): ${table}/${chain.name}`);
    }
    chain.rules.forEach((rule, i) => {
      const target = targetChain(rule);
      if (target !== undefined && !chains.has(target)) {
        problems.push(`${ruleWhere(table, chain, i)}: jump to undeclared chain ${target}`);
      }
      for (const ref of rule.setRefs) problems.push(...checkSetRef(ref, sets, ruleWhere(table, chain, i)));
    });
  }
  problems.push(...findLoops(chains));
  const suffix = table === 'filter' ? '' : ` (table ${table})`;
  for (const name of unreachable(chains)) problems.push(`unreachable: ${name}${suffix}`);
  return problems;
}

function checkSetRef(ref: SetRef, sets: IpsetModel | undefined, where: string): string[] {
  if (ref.name.length > MAX_SET_NAME) return [`set name too long (${ref.name.length} > ${MAX_SET_NAME}): ${ref.name}`];
  if (!sets) return [];
  if (!sets.has(ref.name)) return [`missing set: ${ref.name} (${where})`];
  const dimension = sets.dimension(ref.name);
  if (dimension !== ref.dims.length) {
    return [`${where}: set ${ref.name} is ${sets.typeOf(ref.name)} but --match-set gives ${ref.dims.length} direction flag(s)`];
  }
  return [];
}

function edges(chain: Chain): string[] {
  return chain.rules.map(targetChain).filter((c): c is string => c !== undefined);
}

/** Depth-first search over the jump/goto graph; each cycle is reported once, starting at its smallest name. */
function findLoops(chains: Table): string[] {
  const state = new Map<string, 'active' | 'done'>();
  const path: string[] = [];
  const cycles = new Set<string>();
  const visit = (name: string): void => {
    state.set(name, 'active');
    path.push(name);
    for (const next of edges(chains.get(name)!)) {
      if (!chains.has(next)) continue; // reported as undeclared elsewhere
      if (state.get(next) === 'active') {
        const cycle = path.slice(path.indexOf(next));
        const start = cycle.indexOf([...cycle].sort()[0]!);
        const rotated = [...cycle.slice(start), ...cycle.slice(0, start)];
        cycles.add(`jump loop: ${[...rotated, rotated[0]].join(' -> ')}`);
      } else if (!state.has(next)) {
        visit(next);
      }
    }
    path.pop();
    state.set(name, 'done');
  };
  for (const name of chains.keys()) if (!state.has(name)) visit(name);
  return [...cycles];
}

function unreachable(chains: Table): string[] {
  const seen = new Set<string>();
  const queue = [...chains.values()].filter((c) => c.builtin).map((c) => c.name);
  while (queue.length > 0) {
    const name = queue.pop()!;
    if (seen.has(name) || !chains.has(name)) continue;
    seen.add(name);
    queue.push(...edges(chains.get(name)!));
  }
  return [...chains.keys()].filter((name) => !seen.has(name));
}
