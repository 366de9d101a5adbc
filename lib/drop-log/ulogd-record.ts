/**
 * One line of ulogd's JSON output (the NFLOG, BASE, IP2STR, JSON stack that ulogd-config.ts writes)
 * read into an NflogPacket. Pure: no I/O, no logging; a line that cannot be used comes back as a
 * problem of a named kind, so the reader can log each kind once and count the rest.
 *
 * The JSON plugin names fields after their keys, except those with a CIM name: the addresses are
 * `src_ip` and `dest_ip` (IP2STR's `ip.saddr.str`), the TCP, UDP and SCTP ports `src_port` and
 * `dest_port`. The kernel's timestamp is `oob.time.sec` and `oob.time.usec` (ulogd puts its own
 * clock there when the kernel sent none), the sequence number `oob.seq.local`.
 */
import type { NflogPacket } from './nflog-packet.js';

export type UlogdLineProblem =
  | 'not-json'
  | 'not-an-object'
  | 'not-ipv4'
  | 'no-addresses'
  | 'no-protocol'
  | 'bad-field';

export type UlogdLine =
  | { readonly ok: true; readonly packet: NflogPacket; readonly seq: number | null }
  | { readonly ok: false; readonly problem: UlogdLineProblem; readonly detail: string };

const PORT_PROTOCOLS: ReadonlySet<number> = new Set([6, 17, 132]);
const ICMP = 1;
const AF_INET = 2;
const IPV4 = /^(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/;

class FieldError extends Error {}

function integer(record: Record<string, unknown>, name: string, max: number): number | null {
  const value = record[name];
  if (value === undefined || value === null) return null;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > max) {
    throw new FieldError(`${name} is ${JSON.stringify(value)}, not an integer in 0..${max}`);
  }
  return value;
}

function address(record: Record<string, unknown>, ...names: string[]): string | null {
  for (const name of names) {
    const value = record[name];
    if (value === undefined) continue;
    if (typeof value !== 'string' || !IPV4.test(value)) throw new FieldError(`${name} is ${JSON.stringify(value)}, not a dotted IPv4 address`);
    return value;
  }
  return null;
}

function port(record: Record<string, unknown>, protocol: number, cimName: string, field: 'sport' | 'dport'): number | null {
  if (!PORT_PROTOCOLS.has(protocol)) return null;
  const own = protocol === 6 ? 'tcp' : protocol === 17 ? 'udp' : 'sctp';
  return integer(record, cimName, 65535) ?? integer(record, `${own}.${field}`, 65535);
}

/** When the line says the kernel logged the packet, else `readAt`. */
function timeOf(record: Record<string, unknown>, readAt: Date): Date {
  const sec = integer(record, 'oob.time.sec', 2 ** 32 - 1);
  const usec = integer(record, 'oob.time.usec', 999_999);
  if (sec === null || sec === 0) return readAt;
  return new Date(sec * 1000 + Math.floor((usec ?? 0) / 1000));
}

export function parseUlogdLine(line: string, readAt: Date): UlogdLine {
  let parsed: unknown;
  try {
    parsed = JSON.parse(line);
  } catch (error) {
    return { ok: false, problem: 'not-json', detail: error instanceof Error ? error.message : String(error) };
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return { ok: false, problem: 'not-an-object', detail: `a JSON ${Array.isArray(parsed) ? 'array' : typeof parsed}` };
  const record = parsed as Record<string, unknown>;
  try {
    const family = integer(record, 'oob.family', 255);
    if (family !== null && family !== AF_INET) return { ok: false, problem: 'not-ipv4', detail: `address family ${family}` };
    const source = address(record, 'src_ip', 'ip.saddr.str');
    const destination = address(record, 'dest_ip', 'ip.daddr.str');
    if (source === null || destination === null) return { ok: false, problem: 'no-addresses', detail: 'no src_ip or dest_ip' };
    const protocol = integer(record, 'ip.protocol', 255);
    if (protocol === null) return { ok: false, problem: 'no-protocol', detail: 'no ip.protocol' };
    const prefix = record['oob.prefix'] ?? '';
    if (typeof prefix !== 'string') throw new FieldError(`oob.prefix is ${JSON.stringify(prefix)}, not a string`);
    const packet: NflogPacket = {
      prefix,
      time: timeOf(record, readAt),
      source,
      destination,
      protocol,
      sourcePort: port(record, protocol, 'src_port', 'sport'),
      destinationPort: port(record, protocol, 'dest_port', 'dport'),
      icmpType: protocol === ICMP ? integer(record, 'icmp.type', 255) : null,
    };
    return { ok: true, packet, seq: integer(record, 'oob.seq.local', 2 ** 32 - 1) };
  } catch (error) {
    if (error instanceof FieldError) return { ok: false, problem: 'bad-field', detail: error.message };
    throw error;
  }
}
