/**
 * Test-suite model of `ipset restore` text, plus the packet type and the small text/address helpers the
 * iptables model shares with it.
 *
 * It is written independently of the compiler on purpose: it is a referee. Anything it does not
 * understand throws an Error naming the offending line rather than being skipped, so a rendering bug can
 * never hide behind a lenient parser.
 */

export type Protocol = 'tcp' | 'udp' | 'sctp' | 'icmp';
export type CtState = 'NEW' | 'ESTABLISHED' | 'RELATED' | 'INVALID';

export interface Packet {
  src: string;
  dst: string;
  protocol: Protocol;
  dport?: number;
  sport?: number;
  inIface?: string;
  outIface?: string;
  /** Default NEW. */
  ctstate?: CtState;
  /** Default 0. */
  mark?: number;
  /** Addresses of the node itself, for `-m addrtype --dst-type LOCAL`. */
  localAddresses?: readonly string[];
  /** Whether `limit`/`hashlimit` token buckets are empty as this packet arrives (default: they are not). */
  overLimit?: boolean;
}

// ---------------------------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------------------------

/** A line of input, kept so every error can quote where it came from. */
export interface SourceLine {
  readonly no: number;
  readonly text: string;
}

export function lineError(line: SourceLine, message: string): Error {
  return new Error(`${message} (line ${line.no}: ${line.text.trim()})`);
}

export interface Token {
  readonly value: string;
  /** Offset of the token's first character in the line, so rule text can be quoted exactly as written. */
  readonly start: number;
}

/**
 * Splits a line the way iptables-restore does: whitespace separates, double quotes group (and may be
 * glued to other characters, as in a shell), and a backslash makes the next character literal.
 */
export function tokenize(line: SourceLine): Token[] {
  const text = line.text;
  const tokens: Token[] = [];
  let i = 0;
  for (;;) {
    while (i < text.length && isSpace(text[i]!)) i++;
    if (i >= text.length) return tokens;
    const start = i;
    let value = '';
    let quoted = false;
    while (i < text.length && (quoted || !isSpace(text[i]!))) {
      const ch = text[i]!;
      if (ch === '\\') {
        if (i + 1 >= text.length) throw lineError(line, 'trailing backslash');
        value += text[i + 1]!;
        i += 2;
      } else if (ch === '"') {
        quoted = !quoted;
        i++;
      } else {
        value += ch;
        i++;
      }
    }
    if (quoted) throw lineError(line, 'unterminated double quote');
    tokens.push({ value, start });
  }
}

function isSpace(ch: string): boolean {
  return ch === ' ' || ch === '\t' || ch === '\r' || ch === '\n';
}

/** Splits text into numbered lines, dropping blanks and `#` comments (both formats allow them). */
export function meaningfulLines(text: string): SourceLine[] {
  const out: SourceLine[] = [];
  text.split('\n').forEach((raw, idx) => {
    const trimmed = raw.trim();
    if (trimmed !== '' && !trimmed.startsWith('#')) out.push({ no: idx + 1, text: raw.replace(/\r$/, '') });
  });
  return out;
}

/** Strict dotted quad: four decimal octets, no leading zeros (which some parsers read as octal). */
export function parseIPv4(s: string): number | undefined {
  const parts = s.split('.');
  if (parts.length !== 4) return undefined;
  let n = 0;
  for (const p of parts) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p)) return undefined;
    const octet = Number(p);
    if (octet > 255) return undefined;
    n = n * 256 + octet;
  }
  return n;
}

export function formatIPv4(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

export function prefixMask(len: number): number {
  return len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
}

/** `A.B.C.D[/N]`; no /N means a single host. Host bits are cleared, as the kernel does. */
export function parseCidr(s: string): { addr: number; prefix: number } | undefined {
  const slash = s.indexOf('/');
  const addr = parseIPv4(slash < 0 ? s : s.slice(0, slash));
  if (addr === undefined) return undefined;
  let prefix = 32;
  if (slash >= 0) {
    const p = s.slice(slash + 1);
    if (!/^(0|[1-9][0-9]?)$/.test(p) || Number(p) > 32) return undefined;
    prefix = Number(p);
  }
  return { addr: (addr & prefixMask(prefix)) >>> 0, prefix };
}

/** Address of a packet field, failing loudly: a malformed test packet is a test bug, not a non-match. */
export function packetAddress(packet: Packet, field: 'src' | 'dst'): number {
  const n = parseIPv4(packet[field]);
  if (n === undefined) throw new Error(`packet ${field} is not an IPv4 address: ${JSON.stringify(packet[field])}`);
  return n;
}

export function packetPort(packet: Packet, field: 'src' | 'dst'): number {
  const port = field === 'src' ? packet.sport : packet.dport;
  if (port === undefined) {
    throw new Error(`a rule or set needs the packet's ${field === 'src' ? 'sport' : 'dport'}, but the packet has none`);
  }
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`packet port out of range: ${port}`);
  return port;
}

// ---------------------------------------------------------------------------------------------------------
// ipset model
// ---------------------------------------------------------------------------------------------------------

export type SetType = 'hash:ip' | 'hash:net' | 'hash:ip,port';
export type SetDim = 'src' | 'dst';

const DIMENSIONS: Record<SetType, number> = { 'hash:ip': 1, 'hash:net': 1, 'hash:ip,port': 2 };
const PORT_PROTOCOLS = new Set(['tcp', 'udp', 'sctp']);

interface SetEntry {
  /** Canonical member text, as `ipset save` would print it (without flags). */
  readonly text: string;
  readonly nomatch: boolean;
}

interface IpSet {
  type: SetType;
  /** Keyed by canonical member text; a Map keeps insertion order for members(). */
  entries: Map<string, SetEntry>;
}

/** Create options that do not change what a set matches; family and netmask are handled separately. */
const CREATE_OPTIONS_WITH_VALUE = new Set(['hashsize', 'maxelem', 'timeout', 'bucketsize', 'initval']);
const CREATE_FLAGS = new Set(['comment', 'counters', 'skbinfo', 'forceadd']);
/** Per-entry extensions on `add` that do not change matching. */
const ADD_OPTIONS_WITH_VALUE = new Set(['timeout', 'comment', 'packets', 'bytes']);

export class IpsetModel {
  private readonly sets = new Map<string, IpSet>();

  static parse(text: string): IpsetModel {
    const model = new IpsetModel();
    for (const line of meaningfulLines(text)) model.apply(line);
    return model;
  }

  /** Applies more restore text on top of what is loaded, as another `ipset restore` would. */
  load(text: string): void {
    for (const line of meaningfulLines(text)) this.apply(line);
  }

  has(name: string): boolean {
    return this.sets.has(name);
  }

  names(): string[] {
    return [...this.sets.keys()];
  }

  typeOf(name: string): SetType {
    return this.get(name).type;
  }

  dimension(name: string): number {
    return DIMENSIONS[this.get(name).type];
  }

  /** Members in insertion order, canonical form, hash:net entries flagged with a trailing ` nomatch`. */
  members(name: string): string[] {
    return [...this.get(name).entries.values()].map((e) => (e.nomatch ? `${e.text} nomatch` : e.text));
  }

  /** What `-m set --match-set NAME dims` sees for this packet. */
  test(name: string, dims: readonly SetDim[], packet: Packet): boolean {
    const set = this.get(name);
    if (dims.length !== DIMENSIONS[set.type]) {
      throw new Error(`set ${name} (${set.type}) needs ${DIMENSIONS[set.type]} direction flag(s), got "${dims.join(',')}"`);
    }
    const addr = packetAddress(packet, dims[0]!);
    switch (set.type) {
      case 'hash:ip':
        return set.entries.has(formatIPv4(addr));
      case 'hash:net':
        return matchMostSpecificNet(set, addr);
      case 'hash:ip,port': {
        // ICMP packets carry no port; our sets only hold tcp/udp/sctp entries, so they cannot match.
        if (!PORT_PROTOCOLS.has(packet.protocol)) return false;
        const port = packetPort(packet, dims[1]!);
        return set.entries.has(`${formatIPv4(addr)},${packet.protocol}:${port}`);
      }
    }
  }

  private get(name: string): IpSet {
    const set = this.sets.get(name);
    if (!set) throw new Error(`ipset ${JSON.stringify(name)} is not defined`);
    return set;
  }

  private apply(line: SourceLine): void {
    const all = tokenize(line).map((t) => t.value);
    // -exist (alias -!) may appear anywhere and only relaxes "already exists"/"does not exist" errors.
    const exist = all.some((t) => t === '-exist' || t === '-!');
    const words = all.filter((t) => t !== '-exist' && t !== '-!');
    const [command, ...args] = words;
    switch (command) {
      case 'create':
      case '-N':
        return this.create(line, args, exist);
      case 'add':
      case '-A':
        return this.add(line, args, exist);
      case 'del':
      case '-D':
        return this.del(line, args, exist);
      case 'flush':
      case '-F':
        return this.eachNamed(line, args, (set) => set.entries.clear());
      case 'destroy':
      case '-X':
        return this.destroy(line, args);
      case 'swap':
      case '-W':
        return this.swap(line, args);
      case 'rename':
      case '-E':
        return this.rename(line, args);
      default:
        throw lineError(line, `unsupported ipset command ${JSON.stringify(command)}`);
    }
  }

  private create(line: SourceLine, args: string[], exist: boolean): void {
    const [name, type, ...options] = args;
    if (name === undefined || type === undefined) throw lineError(line, 'create needs a name and a type');
    if (!(type in DIMENSIONS)) throw lineError(line, `unsupported set type ${JSON.stringify(type)}`);
    parseCreateOptions(line, options);
    const existing = this.sets.get(name);
    if (existing) {
      // The kernel tolerates a re-create with -exist only when it is the same set.
      if (!exist) throw lineError(line, `set ${name} already exists`);
      if (existing.type !== type) throw lineError(line, `set ${name} already exists with type ${existing.type}`);
      return;
    }
    this.sets.set(name, { type: type as SetType, entries: new Map() });
  }

  private add(line: SourceLine, args: string[], exist: boolean): void {
    const [name, member, ...options] = args;
    if (name === undefined || member === undefined) throw lineError(line, 'add needs a set name and a member');
    const set = this.sets.get(name);
    if (!set) throw lineError(line, `set ${name} does not exist`);
    const nomatch = parseAddOptions(line, options);
    if (nomatch && set.type !== 'hash:net') throw lineError(line, `nomatch is not supported by ${set.type}`);
    const text = canonicalMember(line, set.type, member);
    // Re-adding with -exist overwrites the entry's flags, as the kernel does.
    if (set.entries.has(text) && !exist) throw lineError(line, `${text} is already in set ${name}`);
    set.entries.set(text, { text, nomatch });
  }

  private del(line: SourceLine, args: string[], exist: boolean): void {
    const [name, member, ...rest] = args;
    if (name === undefined || member === undefined || rest.length > 0) throw lineError(line, 'del needs a set name and a member');
    const set = this.sets.get(name);
    if (!set) throw lineError(line, `set ${name} does not exist`);
    const text = canonicalMember(line, set.type, member);
    if (!set.entries.delete(text) && !exist) throw lineError(line, `${text} is not in set ${name}`);
  }

  private destroy(line: SourceLine, args: string[]): void {
    if (args.length === 0) return this.sets.clear();
    this.eachNamed(line, args, () => undefined);
    this.sets.delete(args[0]!);
  }

  /** Runs `fn` on the one named set, or on every set when no name is given (flush without a name). */
  private eachNamed(line: SourceLine, args: string[], fn: (set: IpSet) => void): void {
    if (args.length > 1) throw lineError(line, 'too many arguments');
    if (args.length === 0) return this.sets.forEach(fn);
    const set = this.sets.get(args[0]!);
    if (!set) throw lineError(line, `set ${args[0]} does not exist`);
    fn(set);
  }

  private swap(line: SourceLine, args: string[]): void {
    const [a, b, ...rest] = args;
    const setA = a === undefined ? undefined : this.sets.get(a);
    const setB = b === undefined ? undefined : this.sets.get(b);
    if (!setA || !setB || rest.length > 0) throw lineError(line, 'swap needs two existing sets');
    // The kernel refuses to swap sets of different types (the referencing rules would change meaning).
    if (setA.type !== setB.type) throw lineError(line, `cannot swap ${setA.type} with ${setB.type}`);
    this.sets.set(a!, setB);
    this.sets.set(b!, setA);
  }

  private rename(line: SourceLine, args: string[]): void {
    const [from, to, ...rest] = args;
    const set = from === undefined ? undefined : this.sets.get(from);
    if (!set || to === undefined || rest.length > 0) throw lineError(line, 'rename needs an existing set and a new name');
    if (this.sets.has(to)) throw lineError(line, `set ${to} already exists`);
    this.sets.delete(from!);
    this.sets.set(to, set);
  }
}

/**
 * Kernel hash:net lookup: the most specific prefix containing the address decides, and a nomatch entry
 * there means "not in the set" even if a broader entry also contains the address.
 */
function matchMostSpecificNet(set: IpSet, addr: number): boolean {
  for (let prefix = 32; prefix >= 1; prefix--) {
    const entry = set.entries.get(`${formatIPv4((addr & prefixMask(prefix)) >>> 0)}/${prefix}`);
    if (entry) return !entry.nomatch;
  }
  return false;
}

function parseCreateOptions(line: SourceLine, options: string[]): void {
  for (let i = 0; i < options.length; i++) {
    const opt = options[i]!;
    if (CREATE_FLAGS.has(opt)) continue;
    const value = options[i + 1];
    if (value === undefined) throw lineError(line, `create option ${opt} needs a value or is unknown`);
    i++;
    if (opt === 'family') {
      if (value !== 'inet') throw lineError(line, `only family inet is modelled, got ${value}`);
    } else if (opt === 'netmask') {
      // netmask changes which addresses match; not modelled, so refuse rather than mis-answer.
      throw lineError(line, 'create option netmask is not modelled');
    } else if (!CREATE_OPTIONS_WITH_VALUE.has(opt)) {
      throw lineError(line, `unknown create option ${JSON.stringify(opt)}`);
    } else if (!/^[0-9]+$|^0x[0-9a-fA-F]+$/.test(value)) {
      throw lineError(line, `create option ${opt} needs a number, got ${JSON.stringify(value)}`);
    }
  }
}

/** Returns whether the entry is flagged nomatch; refuses anything else that is not a harmless extension. */
function parseAddOptions(line: SourceLine, options: string[]): boolean {
  let nomatch = false;
  for (let i = 0; i < options.length; i++) {
    const opt = options[i]!;
    if (opt === 'nomatch') {
      nomatch = true;
    } else if (ADD_OPTIONS_WITH_VALUE.has(opt) && i + 1 < options.length) {
      i++;
    } else {
      throw lineError(line, `unknown add option ${JSON.stringify(opt)}`);
    }
  }
  return nomatch;
}

function canonicalMember(line: SourceLine, type: SetType, member: string): string {
  switch (type) {
    case 'hash:ip': {
      // A bare address only: ranges and CIDR blocks expand to many entries, which we do not model.
      const addr = parseIPv4(member.endsWith('/32') ? member.slice(0, -3) : member);
      if (addr === undefined) throw lineError(line, `hash:ip member must be an IPv4 address, got ${JSON.stringify(member)}`);
      return formatIPv4(addr);
    }
    case 'hash:net': {
      const cidr = parseCidr(member);
      if (!cidr) throw lineError(line, `hash:net member must be A.B.C.D[/N], got ${JSON.stringify(member)}`);
      if (cidr.prefix === 0) throw lineError(line, 'hash:net does not accept a /0 prefix');
      return `${formatIPv4(cidr.addr)}/${cidr.prefix}`;
    }
    case 'hash:ip,port':
      return canonicalIpPort(line, member);
  }
}

/** `10.0.0.1,tcp:80`; a bare port means tcp, as in ipset. */
function canonicalIpPort(line: SourceLine, member: string): string {
  const m = /^([^,]+),(?:([a-z]+):)?([0-9]+)$/.exec(member);
  const addr = m ? parseIPv4(m[1]!) : undefined;
  if (!m || addr === undefined) {
    throw lineError(line, `hash:ip,port member must be IP,proto:port, got ${JSON.stringify(member)}`);
  }
  const proto = m[2] ?? 'tcp';
  if (!PORT_PROTOCOLS.has(proto)) throw lineError(line, `unsupported protocol ${JSON.stringify(proto)} in set member`);
  const port = Number(m[3]);
  if (port > 65535 || (m[3]!.length > 1 && m[3]!.startsWith('0'))) throw lineError(line, `bad port in ${member}`);
  return `${formatIPv4(addr)},${proto}:${port}`;
}
