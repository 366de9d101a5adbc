import type { Cidr } from './model.js';

/**
 * IPv4 parsing by hand: node:net can tell an address's family but not give its numeric value or
 * canonicalise a CIDR, and rules/ must stay free of I/O modules anyway.
 */

const OCTET = /^(0|[1-9][0-9]{0,2})$/;
/** Go's pre-1.17 parser, which the API server keeps for legacy fields: decimal digits, leading zeros allowed. */
const SLOPPY_OCTET = /^[0-9]+$/;

function parseOctets(text: string, octet: RegExp): number | null {
  const parts = text.split('.');
  if (parts.length !== 4) return null;
  let value = 0;
  for (const part of parts) {
    if (!octet.test(part)) return null;
    const n = Number(part);
    if (n > 255) return null;
    value = value * 256 + n;
  }
  return value;
}

/** Parses dotted-quad IPv4 text to an unsigned 32-bit integer, or null when it is not one. */
export function parseIPv4(text: string): number | null {
  return parseOctets(text, OCTET);
}

/**
 * Parses an address as the API server's legacy validation (`IsValidIPForLegacyField`, Go's old
 * `ParseIP`) accepts it: "010.001.002.003" is 10.1.2.3, leading zeros being decimal, not octal.
 */
export function parseIPv4Sloppy(text: string): number | null {
  return parseOctets(text, SLOPPY_OCTET);
}

export function formatIPv4(value: number): string {
  return [value >>> 24, (value >>> 16) & 255, (value >>> 8) & 255, value & 255].join('.');
}

export function looksLikeIPv6(text: string): boolean {
  return text.includes(':');
}

function maskOf(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

export type CidrParse =
  | { readonly ok: true; readonly cidr: Cidr; readonly notes: readonly string[] }
  | { readonly ok: false; readonly reason: string };

/**
 * Parses "a.b.c.d/n" exactly as the API server accepts it in ipBlock (`IsValidCIDRForLegacyField`,
 * Go's `ParseCIDRSloppy`): leading zeros are decimal, and host bits below the prefix are masked off,
 * as Go's `net.ParseCIDR`, Calico and the policy assistant read them ("10.0.0.1/4" means 0.0.0.0/4).
 * What was read differently from how it was written comes back as notes, for a warning.
 */
export function parseCidr(text: string): CidrParse {
  const slash = text.indexOf('/');
  if (slash < 0) return { ok: false, reason: `"${text}" is not a CIDR (expected a.b.c.d/n)` };
  const addressText = text.slice(0, slash);
  const prefixText = text.slice(slash + 1);
  const address = parseIPv4Sloppy(addressText);
  if (address === null) return { ok: false, reason: `"${text}" is not an IPv4 CIDR` };
  if (!/^[0-9]+$/.test(prefixText) || Number(prefixText) > 32) return { ok: false, reason: `"${text}" has an invalid prefix length` };
  const prefix = Number(prefixText);
  const base = (address & maskOf(prefix)) >>> 0;
  const canonical = `${formatIPv4(base)}/${prefix}`;
  const notes: string[] = [];
  if (base !== address) notes.push(`"${text}" has host bits set; it is read as ${canonical}, as the API server and other enforcers read it`);
  else if (canonical !== text) notes.push(`"${text}" is read as ${canonical} (leading zeros are decimal)`);
  return { ok: true, cidr: { base, prefix, text: canonical }, notes };
}

export function cidrContains(cidr: Cidr, address: number): boolean {
  return ((address & maskOf(cidr.prefix)) >>> 0) === cidr.base;
}

/** True when `inner` lies inside `outer` and is strictly smaller. */
export function cidrStrictlyInside(inner: Cidr, outer: Cidr): boolean {
  return inner.prefix > outer.prefix && cidrContains(outer, inner.base);
}

/**
 * Ranges no pod can be given an address in: "this network" (0/8), loopback, link-local (the VPC CNI's
 * gateway and node-local DNS live there), multicast and the reserved block with broadcast. An address
 * in them is never put in a set: a tenant writing `0.0.0.0` into an annotation must not be able to make
 * a set unloadable, nor to stand for the node's own services.
 */
const NOT_POD_ADDRESSES: readonly { readonly base: number; readonly prefix: number; readonly what: string }[] = [
  { base: 0x00000000, prefix: 8, what: '"this network" (0.0.0.0/8)' },
  { base: 0x7f000000, prefix: 8, what: 'loopback (127.0.0.0/8)' },
  { base: 0xa9fe0000, prefix: 16, what: 'link-local (169.254.0.0/16)' },
  { base: 0xe0000000, prefix: 4, what: 'multicast (224.0.0.0/4)' },
  { base: 0xf0000000, prefix: 4, what: 'reserved or broadcast (240.0.0.0/4)' },
];

/** Why an address can never be a pod's, or null when it can be. */
export function notAPodAddress(address: number): string | null {
  for (const range of NOT_POD_ADDRESSES) {
    if (((address & maskOf(range.prefix)) >>> 0) === range.base) return range.what;
  }
  return null;
}
