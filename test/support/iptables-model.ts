/**
 * The iptables rule grammar for the test-suite tracer: one `-A CHAIN ...` line becomes a list of match
 * functions and a target.
 *
 * Written from the iptables documentation and kernel behaviour, not from the compiler, so that it can
 * referee the compiler's output. It is deliberately strict: an option, match or target it does not
 * understand throws an Error quoting the line, because silently skipping it could turn a broken rule into
 * a passing test.
 */
import type { CtState, IpsetModel, Packet, SetDim, SourceLine } from './ipset-model.js';
import { lineError, packetPort, parseCidr, prefixMask } from './ipset-model.js';

export type TableName = 'filter' | 'raw' | 'mangle' | 'nat';
export type Hook = 'FORWARD' | 'INPUT' | 'OUTPUT' | 'PREROUTING' | 'POSTROUTING';

export const BUILTIN_CHAINS: Record<TableName, readonly Hook[]> = {
  filter: ['INPUT', 'FORWARD', 'OUTPUT'],
  raw: ['PREROUTING', 'OUTPUT'],
  mangle: ['PREROUTING', 'INPUT', 'FORWARD', 'OUTPUT', 'POSTROUTING'],
  nat: ['PREROUTING', 'INPUT', 'OUTPUT', 'POSTROUTING'],
};

// ---------------------------------------------------------------------------------------------------------
// Rule grammar: one `-A CHAIN ...` line becomes a list of match functions and a target.
// ---------------------------------------------------------------------------------------------------------

/** What a match sees while a packet is being walked (the mark changes as MARK rules fire). */
export interface Env {
  readonly packet: Packet;
  readonly src: number;
  readonly dst: number;
  readonly ctstate: CtState;
  readonly local: ReadonlySet<number>;
  readonly sets: IpsetModel;
  readonly mark: number;
  /** Whether `limit` and `hashlimit` matches have run out of tokens (default: they have not). */
  readonly overLimit?: boolean;
}

export type MatchFn = (env: Env) => boolean;

export type Target =
  | { readonly kind: 'ACCEPT' | 'RETURN' }
  | { readonly kind: 'DROP'; readonly via: 'DROP' | 'REJECT' }
  | { readonly kind: 'LOG'; readonly via: 'LOG' | 'NFLOG'; readonly prefix: string; readonly group: number | null }
  /** Every MARK variant reduces to the kernel's xmark: mark = (mark & ~mask) ^ value. */
  | { readonly kind: 'MARK'; readonly value: number; readonly mask: number }
  | { readonly kind: 'jump' | 'goto'; readonly chain: string };

export interface SetRef {
  readonly name: string;
  readonly dims: readonly SetDim[];
}

export interface Rule {
  readonly text: string;
  readonly line: SourceLine;
  /** IP-header matches first, then `-m` matches in the order written: the kernel's evaluation order. */
  readonly matches: readonly MatchFn[];
  readonly target: Target | undefined;
  readonly setRefs: readonly SetRef[];
  readonly comments: readonly string[];
}

type ProtoName = 'tcp' | 'udp' | 'sctp' | 'icmp' | 'all';
const PROTOCOLS: Record<string, ProtoName> = {
  tcp: 'tcp', '6': 'tcp', udp: 'udp', '17': 'udp', sctp: 'sctp', '132': 'sctp', icmp: 'icmp', '1': 'icmp', all: 'all', '0': 'all',
};
const PORT_PROTOCOLS: readonly ProtoName[] = ['tcp', 'udp', 'sctp'];

/** Sequential access to a rule's tokens; every failure quotes the line. */
class Args {
  private i = 0;
  constructor(
    private readonly tokens: readonly string[],
    readonly line: SourceLine,
  ) {}
  get done(): boolean {
    return this.i >= this.tokens.length;
  }
  next(): string {
    return this.tokens[this.i++]!;
  }
  value(option: string): string {
    const v = this.tokens[this.i];
    if (v === undefined) throw this.fail(`${option} needs a value`);
    this.i++;
    return v;
  }
  fail(message: string): Error {
    return lineError(this.line, message);
  }
}

/** Facts about the whole rule that a match or target may only validate once every token is read. */
interface RuleContext {
  readonly args: Args;
  readonly table: TableName;
  readonly proto: { readonly name: ProtoName; readonly negated: boolean } | undefined;
  readonly setRefs: SetRef[];
  readonly comments: string[];
}

interface MatchModule {
  accepts(option: string): boolean;
  option(option: string, negated: boolean, args: Args): void;
  build(ctx: RuleContext): MatchFn;
}

interface TargetBuilder {
  accepts(option: string): boolean;
  option(option: string, args: Args): void;
  build(ctx: RuleContext): Target;
}

export function parseRule(
  tokens: readonly string[],
  line: SourceLine,
  table: TableName,
  chain: { readonly name: string; readonly builtin: boolean },
): Omit<Rule, 'text'> {
  const args = new Args(tokens, line);
  const header: MatchFn[] = [];
  const seenHeader = new Set<string>();
  const modules: MatchModule[] = [];
  let proto: RuleContext['proto'];
  let target: TargetBuilder | undefined;
  let negate = false;

  const once = (key: string): void => {
    if (seenHeader.has(key)) throw args.fail(`${key} given twice`);
    seenHeader.add(key);
  };

  while (!args.done) {
    const tok = args.next();
    if (tok === '!') {
      if (negate) throw args.fail('"!" given twice');
      negate = true;
      continue;
    }
    const negated = negate;
    negate = false;
    const noNegation = (): void => {
      if (negated) throw args.fail(`${tok} cannot be negated`);
    };
    switch (tok) {
      case '-i': case '--in-interface': case '-o': case '--out-interface': {
        const dir = tok === '-i' || tok === '--in-interface' ? 'in' : 'out';
        once(`-${dir[0]}`);
        header.push(interfaceMatch(dir, args.value(tok), negated, args, chain));
        break;
      }
      case '-s': case '--source': case '-d': case '--destination': {
        const field = tok === '-s' || tok === '--source' ? 'src' : 'dst';
        once(field === 'src' ? '-s' : '-d');
        header.push(addressMatch(field, args.value(tok), negated, args));
        break;
      }
      case '-p': case '--protocol': {
        once('-p');
        const name = PROTOCOLS[args.value(tok)];
        if (!name) throw args.fail(`unsupported protocol for ${tok}`);
        proto = { name, negated };
        header.push(({ packet }) => (name === 'all' || packet.protocol === name) !== negated);
        break;
      }
      case '-m': case '--match':
        noNegation();
        modules.push(loadModule(args.value(tok), args));
        break;
      case '-j': case '--jump': case '-g': case '--goto':
        noNegation();
        if (target) throw args.fail('only one -j/-g per rule');
        target = loadTarget(args.value(tok), tok === '-g' || tok === '--goto' ? 'goto' : 'jump', args, table);
        break;
      default: {
        if (!tok.startsWith('-')) throw args.fail(`unexpected token ${JSON.stringify(tok)}`);
        if (target?.accepts(tok)) {
          noNegation();
          target.option(tok, args);
          break;
        }
        const owner = ownerOf(tok, modules, proto, args);
        owner.option(tok, negated, args);
      }
    }
  }
  if (negate) throw args.fail('dangling "!" at the end of the rule');

  const ctx: RuleContext = { args, table, proto, setRefs: [], comments: [] };
  const matches = [...header, ...modules.map((m) => m.build(ctx))];
  return { line, matches, target: target?.build(ctx), setRefs: ctx.setRefs, comments: ctx.comments };
}

/**
 * An option belongs to the most recently loaded match that knows it. Like iptables, `--dport` right
 * after `-p tcp` implicitly loads the tcp match.
 */
function ownerOf(option: string, modules: MatchModule[], proto: RuleContext['proto'], args: Args): MatchModule {
  for (let i = modules.length - 1; i >= 0; i--) {
    if (modules[i]!.accepts(option)) return modules[i]!;
  }
  if (proto && !proto.negated && PORT_PROTOCOLS.includes(proto.name)) {
    const implicit = portModule(proto.name);
    if (implicit.accepts(option)) {
      modules.push(implicit);
      return implicit;
    }
  }
  throw args.fail(`unknown option ${JSON.stringify(option)}`);
}

function interfaceMatch(
  dir: 'in' | 'out',
  pattern: string,
  negated: boolean,
  args: Args,
  chain: { readonly name: string; readonly builtin: boolean },
): MatchFn {
  // IFNAMSIZ is 16 bytes with the NUL, and the wildcard '+' counts towards it.
  if (!/^[^\s/+]*\+?$/.test(pattern) || pattern === '' || pattern.length > 15) throw args.fail(`bad interface name ${JSON.stringify(pattern)}`);
  // iptables refuses an interface that cannot exist at that hook (checked for builtin chains only).
  const impossible = dir === 'in' ? ['OUTPUT', 'POSTROUTING'] : ['INPUT', 'PREROUTING'];
  if (chain.builtin && impossible.includes(chain.name)) throw args.fail(`cannot use -${dir[0]} in ${chain.name}`);
  const prefix = pattern.endsWith('+') ? pattern.slice(0, -1) : undefined;
  return ({ packet }) => {
    const name = dir === 'in' ? packet.inIface : packet.outIface;
    const hit = name !== undefined && (prefix === undefined ? name === pattern : name.startsWith(prefix));
    return hit !== negated;
  };
}

function addressMatch(field: 'src' | 'dst', value: string, negated: boolean, args: Args): MatchFn {
  const cidr = parseCidr(value);
  if (!cidr) throw args.fail(`bad address ${JSON.stringify(value)}`);
  const mask = prefixMask(cidr.prefix);
  return (env) => (((env[field] & mask) >>> 0) === cidr.addr) !== negated;
}

function loadModule(name: string, args: Args): MatchModule {
  switch (name) {
    case 'tcp': case 'udp': case 'sctp': return portModule(name);
    case 'multiport': return multiportModule();
    case 'set': return setModule();
    case 'mark': return markModule();
    case 'conntrack': return stateModule('--ctstate');
    case 'state': return stateModule('--state');
    case 'addrtype': return addrtypeModule();
    case 'comment': return commentModule();
    case 'limit': return limitModule();
    case 'hashlimit': return hashlimitModule();
    default: throw args.fail(`unsupported match module ${JSON.stringify(name)}`);
  }
}

/** The kernel refuses tcp/udp/sctp-only matches unless the rule says `-p <that protocol>` (not negated). */
function requireProtocol(ctx: RuleContext, module: string, allowed: readonly ProtoName[]): void {
  if (!ctx.proto || ctx.proto.negated || !allowed.includes(ctx.proto.name)) {
    throw ctx.args.fail(`-m ${module} needs -p ${allowed.join('|')}`);
  }
}

interface PortRange {
  readonly lo: number;
  readonly hi: number;
}

function parsePort(s: string, args: Args): number {
  if (!/^(0|[1-9][0-9]*)$/.test(s) || Number(s) > 65535) throw args.fail(`bad port ${JSON.stringify(s)}`);
  return Number(s);
}

/** `N`, `N:M`, `:M` (from 0) or `N:` (to 65535), as iptables accepts. */
function parsePortRange(s: string, args: Args): PortRange {
  const colon = s.indexOf(':');
  if (colon < 0) {
    const p = parsePort(s, args);
    return { lo: p, hi: p };
  }
  const lo = colon === 0 ? 0 : parsePort(s.slice(0, colon), args);
  const hi = colon === s.length - 1 ? 65535 : parsePort(s.slice(colon + 1), args);
  if (lo > hi) throw args.fail(`invalid port range ${s} (min > max)`);
  return { lo, hi };
}

const inRange = (port: number, r: PortRange): boolean => port >= r.lo && port <= r.hi;

function portModule(name: ProtoName): MatchModule {
  const tests = new Map<'src' | 'dst', { range: PortRange; negated: boolean }>();
  const fieldOf = (o: string): 'src' | 'dst' | undefined =>
    o === '--dport' || o === '--destination-port' ? 'dst' : o === '--sport' || o === '--source-port' ? 'src' : undefined;
  return {
    accepts: (o) => fieldOf(o) !== undefined,
    option(o, negated, args) {
      const field = fieldOf(o)!;
      if (tests.has(field)) throw args.fail(`${o} given twice`);
      tests.set(field, { range: parsePortRange(args.value(o), args), negated });
    },
    build(ctx) {
      requireProtocol(ctx, name, [name]);
      return ({ packet }) => [...tests].every(([field, t]) => inRange(packetPort(packet, field), t.range) !== t.negated);
    },
  };
}

function multiportModule(): MatchModule {
  const OPTIONS: Record<string, 'src' | 'dst' | 'either'> = {
    '--dports': 'dst', '--destination-ports': 'dst', '--sports': 'src', '--source-ports': 'src', '--ports': 'either',
  };
  let spec: { field: 'src' | 'dst' | 'either'; ranges: PortRange[]; negated: boolean } | undefined;
  return {
    accepts: (o) => o in OPTIONS,
    option(o, negated, args) {
      if (spec) throw args.fail('multiport takes a single port list');
      const ranges = args.value(o).split(',').map((p) => parsePortRange(p, args));
      // The kernel's limit: 15 slots, where a range takes two.
      const slots = ranges.reduce((n, r) => n + (r.lo === r.hi ? 1 : 2), 0);
      if (slots > 15) throw args.fail(`multiport list too long (${slots} slots > 15)`);
      spec = { field: OPTIONS[o]!, ranges, negated };
    },
    build(ctx) {
      if (!spec) throw ctx.args.fail('-m multiport needs --dports/--sports/--ports');
      requireProtocol(ctx, 'multiport', PORT_PROTOCOLS);
      const { field, ranges, negated } = spec;
      const fields: Array<'src' | 'dst'> = field === 'either' ? ['src', 'dst'] : [field];
      return ({ packet }) =>
        fields.some((f) => {
          const port = packetPort(packet, f);
          return ranges.some((r) => inRange(port, r));
        }) !== negated;
    },
  };
}

function setModule(): MatchModule {
  let ref: (SetRef & { negated: boolean }) | undefined;
  return {
    accepts: (o) => o === '--match-set',
    option(o, negated, args) {
      if (ref) throw args.fail('--match-set given twice in one -m set');
      const name = args.value(o);
      const dims = args.value(o).split(',');
      if (dims.length > 6 || !dims.every((d): d is SetDim => d === 'src' || d === 'dst')) {
        throw args.fail(`bad --match-set direction flags ${JSON.stringify(dims.join(','))}`);
      }
      ref = { name, dims, negated };
    },
    build(ctx) {
      if (!ref) throw ctx.args.fail('-m set needs --match-set');
      const { name, dims, negated } = ref;
      ctx.setRefs.push({ name, dims });
      return (env) => env.sets.test(name, dims, env.packet) !== negated;
    },
  };
}

/** Hex (0x...) or decimal, within 32 bits. */
function parseU32(s: string, args: Args): number {
  if (!/^(0x[0-9a-fA-F]+|[0-9]+)$/.test(s) || Number(s) > 0xffffffff) throw args.fail(`bad 32-bit value ${JSON.stringify(s)}`);
  return Number(s);
}

/** `V[/M]`; the mask defaults to all ones. */
function parseValueMask(s: string, args: Args): { value: number; mask: number } {
  const [v, m, ...extra] = s.split('/');
  if (extra.length > 0) throw args.fail(`bad value/mask ${JSON.stringify(s)}`);
  return { value: parseU32(v!, args), mask: m === undefined ? 0xffffffff : parseU32(m, args) };
}

function markModule(): MatchModule {
  let spec: { value: number; mask: number; negated: boolean } | undefined;
  return {
    accepts: (o) => o === '--mark',
    option(o, negated, args) {
      if (spec) throw args.fail('--mark given twice');
      spec = { ...parseValueMask(args.value(o), args), negated };
    },
    build(ctx) {
      if (!spec) throw ctx.args.fail('-m mark needs --mark');
      const { value, mask, negated } = spec;
      return ({ mark }) => (((mark & mask) >>> 0) === value) !== negated;
    },
  };
}

function stateModule(optionName: '--ctstate' | '--state'): MatchModule {
  const KNOWN = new Set(['NEW', 'ESTABLISHED', 'RELATED', 'INVALID', 'UNTRACKED']);
  let spec: { states: ReadonlySet<string>; negated: boolean } | undefined;
  return {
    accepts: (o) => o === optionName,
    option(o, negated, args) {
      if (spec) throw args.fail(`${o} given twice`);
      const states = args.value(o).split(',');
      const bad = states.find((s) => !KNOWN.has(s));
      if (bad !== undefined) throw args.fail(`unsupported conntrack state ${JSON.stringify(bad)}`);
      spec = { states: new Set(states), negated };
    },
    build(ctx) {
      if (!spec) throw ctx.args.fail(`${optionName} is required`);
      const { states, negated } = spec;
      return ({ ctstate }) => states.has(ctstate) !== negated;
    },
  };
}

function addrtypeModule(): MatchModule {
  const tests = new Map<'src' | 'dst', boolean>();
  return {
    accepts: (o) => o === '--src-type' || o === '--dst-type',
    option(o, negated, args) {
      const field = o === '--src-type' ? 'src' : 'dst';
      if (tests.has(field)) throw args.fail(`${o} given twice`);
      // Only LOCAL is modelled: other types (UNICAST, BROADCAST, ...) need routing knowledge we lack.
      if (args.value(o) !== 'LOCAL') throw args.fail(`only ${o} LOCAL is supported`);
      tests.set(field, negated);
    },
    build(ctx) {
      if (tests.size === 0) throw ctx.args.fail('-m addrtype needs --src-type or --dst-type');
      return (env) => [...tests].every(([field, negated]) => env.local.has(env[field]) !== negated);
    },
  };
}

/** `5/sec`, `100/second`, `3/min`...: xt_limit and xt_hashlimit refuse more than 10,000 a second. */
function parseRate(s: string, args: Args): number {
  const match = /^([1-9][0-9]*)\/(s|sec|second|m|min|minute|h|hour|d|day)$/.exec(s);
  if (match === null) throw args.fail(`bad rate ${JSON.stringify(s)}`);
  const perSecond = Number(match[1]) / { s: 1, sec: 1, second: 1, m: 60, min: 60, minute: 60, h: 3600, hour: 3600, d: 86400, day: 86400 }[match[2] as 's'];
  if (perSecond > 10_000) throw args.fail(`rate ${s} too fast`);
  return perSecond;
}

function parseBurst(s: string, args: Args): number {
  if (!/^[1-9][0-9]*$/.test(s) || Number(s) > 10_000) throw args.fail(`bad burst ${JSON.stringify(s)}`);
  return Number(s);
}

/**
 * Token buckets are not modelled as time: a trace is one packet, which the limits let through unless
 * the walk says they have run out (Env.overLimit).
 */
function limitModule(): MatchModule {
  const seen = new Set<string>();
  return {
    accepts: (o) => o === '--limit' || o === '--limit-burst',
    option(o, negated, args) {
      if (negated) throw args.fail(`${o} cannot be negated`);
      if (seen.has(o)) throw args.fail(`${o} given twice`);
      seen.add(o);
      if (o === '--limit') parseRate(args.value(o), args);
      else parseBurst(args.value(o), args);
    },
    build: () => (env) => env.overLimit !== true,
  };
}

function hashlimitModule(): MatchModule {
  const MODES = new Set(['srcip', 'srcport', 'dstip', 'dstport']);
  const options = new Map<string, string>();
  return {
    accepts: (o) => ['--hashlimit-upto', '--hashlimit-above', '--hashlimit-burst', '--hashlimit-name', '--hashlimit-mode'].includes(o),
    option(o, negated, args) {
      if (negated) throw args.fail(`${o} cannot be negated`);
      if (options.has(o)) throw args.fail(`${o} given twice`);
      const value = args.value(o);
      options.set(o, value);
      if (o === '--hashlimit-upto' || o === '--hashlimit-above') parseRate(value, args);
      else if (o === '--hashlimit-burst') parseBurst(value, args);
      else if (o === '--hashlimit-name' && !/^[A-Za-z0-9_.-]{1,15}$/.test(value)) throw args.fail(`bad --hashlimit-name ${JSON.stringify(value)} (at most 15 characters)`);
      else if (o === '--hashlimit-mode' && !value.split(',').every((m) => MODES.has(m))) throw args.fail(`bad --hashlimit-mode ${value}`);
    },
    build(ctx) {
      if (!options.has('--hashlimit-name')) throw ctx.args.fail('-m hashlimit needs --hashlimit-name');
      if (options.has('--hashlimit-upto') === options.has('--hashlimit-above')) throw ctx.args.fail('-m hashlimit needs one of --hashlimit-upto and --hashlimit-above');
      const above = options.has('--hashlimit-above');
      return (env) => (env.overLimit === true) === above;
    },
  };
}

function commentModule(): MatchModule {
  let text: string | undefined;
  return {
    accepts: (o) => o === '--comment',
    option(o, negated, args) {
      if (negated) throw args.fail('--comment cannot be negated');
      if (text !== undefined) throw args.fail('--comment given twice in one -m comment');
      text = args.value(o);
      if (text.length > 255) throw args.fail('comment longer than 255 characters');
    },
    build(ctx) {
      if (text === undefined) throw ctx.args.fail('-m comment needs --comment');
      ctx.comments.push(text);
      return () => true;
    },
  };
}

/** Targets that exist in iptables but are not modelled: refusing them beats treating them as chain names. */
const UNMODELLED_TARGETS = new Set([
  'AUDIT', 'CHECKSUM', 'CLASSIFY', 'CLUSTERIP', 'CONNMARK', 'CONNSECMARK', 'CT', 'DNAT', 'DSCP', 'ECN', 'HL', 'HMARK',
  'IDLETIMER', 'LED', 'MASQUERADE', 'NETMAP', 'NFQUEUE', 'NOTRACK', 'QUEUE', 'RATEEST', 'REDIRECT', 'SECMARK',
  'SET', 'SNAT', 'SYNPROXY', 'TCPMSS', 'TCPOPTSTRIP', 'TEE', 'TOS', 'TPROXY', 'TRACE', 'TTL', 'ULOG',
]);

const noOptions = (target: Target): TargetBuilder => ({ accepts: () => false, option: () => undefined, build: () => target });

function loadTarget(name: string, how: 'jump' | 'goto', args: Args, table: TableName): TargetBuilder {
  const builtinTarget = ['ACCEPT', 'DROP', 'RETURN', 'REJECT', 'LOG', 'NFLOG', 'MARK'].includes(name);
  if (how === 'goto' && builtinTarget) throw args.fail(`-g needs a user chain, not ${name}`);
  if (UNMODELLED_TARGETS.has(name)) throw args.fail(`unsupported target ${name}`);
  // The kernel never lets a rule jump into a builtin chain.
  if ((BUILTIN_CHAINS[table] as readonly string[]).includes(name)) throw args.fail(`cannot jump to builtin chain ${name}`);
  switch (name) {
    case 'ACCEPT': case 'RETURN': return noOptions({ kind: name });
    case 'DROP': return noOptions({ kind: 'DROP', via: 'DROP' });
    case 'REJECT': return rejectTarget(args, table);
    case 'LOG': return logTarget();
    case 'NFLOG': return nflogTarget();
    case 'MARK': return markTarget();
    default:
      if (name === '' || name.startsWith('-')) throw args.fail(`bad target ${JSON.stringify(name)}`);
      // Anything else is a user chain; whether it is declared is for check() and trace() to say.
      return noOptions({ kind: how, chain: name });
  }
}

function rejectTarget(args: Args, table: TableName): TargetBuilder {
  if (table !== 'filter') throw args.fail('REJECT is only valid in the filter table');
  const TYPES = new Set([
    'icmp-net-unreachable', 'icmp-host-unreachable', 'icmp-port-unreachable', 'icmp-proto-unreachable',
    'icmp-net-prohibited', 'icmp-host-prohibited', 'icmp-admin-prohibited', 'tcp-reset',
  ]);
  let withType: string | undefined;
  return {
    accepts: (o) => o === '--reject-with',
    option(o, a) {
      if (withType !== undefined) throw a.fail('--reject-with given twice');
      withType = a.value(o);
      if (!TYPES.has(withType)) throw a.fail(`unsupported --reject-with ${JSON.stringify(withType)}`);
    },
    build(ctx) {
      if (withType === 'tcp-reset') requireProtocol(ctx, 'REJECT --reject-with tcp-reset', ['tcp']);
      return { kind: 'DROP', via: 'REJECT' };
    },
  };
}

function logTarget(): TargetBuilder {
  const FLAGS = new Set(['--log-tcp-sequence', '--log-tcp-options', '--log-ip-options', '--log-uid', '--log-macdecode']);
  let prefix = '';
  return {
    accepts: (o) => o === '--log-prefix' || o === '--log-level' || FLAGS.has(o),
    option(o, args) {
      if (o === '--log-prefix') {
        prefix = args.value(o);
        if (prefix.length > 29) throw args.fail('--log-prefix longer than 29 characters');
      } else if (o === '--log-level') {
        const level = args.value(o);
        if (!/^[0-7]$|^(emerg|alert|crit|error|warning|notice|info|debug)$/.test(level)) throw args.fail(`bad --log-level ${level}`);
      }
    },
    build: () => ({ kind: 'LOG', via: 'LOG', prefix, group: null }),
  };
}

function nflogTarget(): TargetBuilder {
  const options = new Map<string, string>();
  return {
    accepts: (o) => ['--nflog-prefix', '--nflog-group', '--nflog-size', '--nflog-range', '--nflog-threshold'].includes(o),
    option(o, args) {
      if (options.has(o)) throw args.fail(`${o} given twice`);
      const value = args.value(o);
      options.set(o, value);
      if (o === '--nflog-prefix') {
        // The kernel keeps 64 bytes with the NUL.
        if (Buffer.byteLength(value) > 63) throw args.fail('--nflog-prefix longer than 63 bytes');
      } else if (!/^(0|[1-9][0-9]*)$/.test(value) || (o === '--nflog-group' && Number(value) > 65535)) {
        throw args.fail(`bad ${o} ${JSON.stringify(value)}`);
      }
    },
    build: () => ({ kind: 'LOG', via: 'NFLOG', prefix: options.get('--nflog-prefix') ?? '', group: Number(options.get('--nflog-group') ?? '0') }),
  };
}

function markTarget(): TargetBuilder {
  let spec: { value: number; mask: number } | undefined;
  return {
    accepts: (o) => ['--set-xmark', '--set-mark', '--and-mark', '--or-mark', '--xor-mark'].includes(o),
    option(o, args) {
      if (spec) throw args.fail('MARK takes a single operation');
      const raw = args.value(o);
      if (o === '--set-xmark') {
        spec = parseValueMask(raw, args);
        return;
      }
      if (o === '--set-mark') {
        // libxt_MARK: --set-mark V/M is xmark V/(M|V), so bits of V outside M are still set.
        const { value, mask } = parseValueMask(raw, args);
        spec = { value, mask: (mask | value) >>> 0 };
        return;
      }
      const v = parseU32(raw, args);
      if (o === '--and-mark') spec = { value: 0, mask: ~v >>> 0 };
      else if (o === '--or-mark') spec = { value: v, mask: v };
      else spec = { value: v, mask: 0 };
    },
    build(ctx) {
      if (!spec) throw ctx.args.fail('MARK needs --set-xmark, --set-mark, --and-mark, --or-mark or --xor-mark');
      return { kind: 'MARK', ...spec };
    },
  };
}
