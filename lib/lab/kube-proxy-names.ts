/**
 * Chain names as kube-proxy makes them, so the lab's rules read like a real node's and a rule dump
 * from one can be compared with the other:
 *
 *   iptables  KUBE-SVC-<16 base32 chars of sha256("ns/svc:port" + "tcp")>
 *             KUBE-SEP-<16 base32 chars of sha256("ns/svc:port" + "tcp" + "10.1.1.10:80")>
 *   nftables  service-<8 chars>-ns/svc/tcp/port
 *             endpoint-<8 chars>-ns/svc/tcp/port__10.1.1.10/80
 */
import { createHash } from 'node:crypto';
import type { Endpoint, ServicePortEndpoints } from './services.js';

const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
/** nft's name limit (256) less kube-proxy's longest chain prefix. */
const NFT_NAME_BASE_MAX = 256 - 16;

/** RFC 4648 base32 with the standard alphabet; node:buffer has no base32 encoding. */
export function base32(bytes: Uint8Array): string {
  let out = '';
  let bits = 0;
  let value = 0;
  for (const byte of bytes) {
    value = ((value << 8) | byte) & 0xffff;
    bits += 8;
    while (bits >= 5) {
      out += BASE32[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += BASE32[(value << (5 - bits)) & 31];
  return out;
}

function hashed(text: string): string {
  return base32(createHash('sha256').update(text).digest());
}

/** "ns/svc:port", or "ns/svc" for an unnamed port: how kube-proxy names a service port everywhere. */
export function servicePortName(p: ServicePortEndpoints): string {
  return `${p.namespace}/${p.name}${p.portName === '' ? '' : `:${p.portName}`}`;
}

export function endpointText(e: Endpoint): string {
  return `${e.ip}:${e.port}`;
}

export function iptablesServiceChain(p: ServicePortEndpoints): string {
  return `KUBE-SVC-${hashed(servicePortName(p) + p.protocol.toLowerCase()).slice(0, 16)}`;
}

export function iptablesEndpointChain(p: ServicePortEndpoints, e: Endpoint): string {
  return `KUBE-SEP-${hashed(servicePortName(p) + p.protocol.toLowerCase() + endpointText(e)).slice(0, 16)}`;
}

/** A hash first, so names that differ only at the end still look different; cut where nft would refuse. */
function hashAndTruncate(name: string): string {
  const full = `${hashed(name).slice(0, 8)}-${name}`;
  return full.length > NFT_NAME_BASE_MAX ? `${full.slice(0, NFT_NAME_BASE_MAX - 3)}...` : full;
}

function nftBase(p: ServicePortEndpoints): string {
  return `${p.namespace}/${p.name}/${p.protocol.toLowerCase()}/${p.portName}`;
}

export function nftServiceChain(p: ServicePortEndpoints): string {
  return `service-${hashAndTruncate(nftBase(p))}`;
}

export function nftEndpointChain(p: ServicePortEndpoints, e: Endpoint): string {
  return `endpoint-${hashAndTruncate(`${nftBase(p)}__${e.ip}/${e.port}`)}`;
}

/** Service and endpoint chains carry a "/" in nftables mode; kube-proxy's fixed chains never do. */
export function isNftServiceChain(name: string): boolean {
  return name.includes('/');
}

const IPTABLES_SERVICE_PREFIXES = ['KUBE-SVC-', 'KUBE-SVL-', 'KUBE-EXT-', 'KUBE-FW-', 'KUBE-SEP-'];

export function isIptablesServiceChain(name: string): boolean {
  return IPTABLES_SERVICE_PREFIXES.some((p) => name.startsWith(p));
}
