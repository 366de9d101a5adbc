import type { Cidr } from './model.js';

/**
 * IPv4 parsing by hand: node:net can tell an address's family but not give its numeric value or
 * canonicalise a CIDR, and rules/ must stay free of I/O modules anyway.
 */

const OCTET = /^(0|[1-9][0-9]{0,2})$/;

/** Parses dotted-quad IPv4 text to an unsigned 32-bit integer, or null when it is not one. */
export function parseIPv4(text: string): number | null {
  const parts = text.split('.');
  if (parts.length !== 4) return null;
  let value = 0;
  for (const part of parts) {
    if (!OCTET.test(part)) return null;
    const octet = Number(part);
    if (octet > 255) return null;
    value = value * 256 + octet;
  }
  return value;
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

export type CidrParse = { readonly ok: true; readonly cidr: Cidr } | { readonly ok: false; readonly reason: string };

/**
 * Parses "a.b.c.d/n". Host bits set below the prefix are an error, as the API server's validation of
 * ipBlock has it ("10.0.0.1/8" is rejected there, so accepting it here would hide a typo).
 */
export function parseCidr(text: string): CidrParse {
  const slash = text.indexOf('/');
  if (slash < 0) return { ok: false, reason: `"${text}" is not a CIDR (expected a.b.c.d/n)` };
  const address = parseIPv4(text.slice(0, slash));
  const prefixText = text.slice(slash + 1);
  if (address === null) return { ok: false, reason: `"${text}" is not an IPv4 CIDR` };
  if (!/^(0|[1-9][0-9]?)$/.test(prefixText) || Number(prefixText) > 32) {
    return { ok: false, reason: `"${text}" has an invalid prefix length` };
  }
  const prefix = Number(prefixText);
  const base = (address & maskOf(prefix)) >>> 0;
  if (base !== address) {
    return { ok: false, reason: `"${text}" has host bits set (did you mean ${formatIPv4(base)}/${prefix}?)` };
  }
  return { ok: true, cidr: { base, prefix, text: `${formatIPv4(base)}/${prefix}` } };
}

export function cidrContains(cidr: Cidr, address: number): boolean {
  return ((address & maskOf(cidr.prefix)) >>> 0) === cidr.base;
}

/** True when `inner` lies inside `outer` and is strictly smaller. */
export function cidrStrictlyInside(inner: Cidr, outer: Cidr): boolean {
  return inner.prefix > outer.prefix && cidrContains(outer, inner.base);
}
