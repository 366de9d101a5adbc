import { createHash } from 'node:crypto';
import type { Rule } from './dataplane.js';

/**
 * Every rendered rule carries a short hash in its comment, as Felix's rules do. iptables-save
 * normalises what it prints (it adds `-m tcp`, reorders some options), so live rules cannot be compared
 * with rendered ones as text; their hashes can. Each hash covers the chain name, the rule and the hash
 * of the rule before it, so an inserted, deleted, edited or moved rule changes the chain's hash list.
 */

export const RULE_HASH_TAG = 'pal:';
const HASH_LENGTH = 16;

/** What a rule does, as argv without its comment: the comment is not part of a rule's meaning. */
function ruleIdentity(rule: Rule): string {
  return [...rule.match, '--', ...rule.target].join('\u0000');
}

export function ruleHashes(chain: string, rules: readonly Rule[]): string[] {
  const hashes: string[] = [];
  let previous = '';
  for (const rule of rules) {
    previous = createHash('sha256').update(`${chain}\u0000${previous}\u0000${ruleIdentity(rule)}\u0000${rule.comment}`).digest('base64url').slice(0, HASH_LENGTH);
    hashes.push(previous);
  }
  return hashes;
}

/** Reads the hash back out of a live rule's comment text, or null for a rule palisade did not write. */
export function hashFromComment(comment: string): string | null {
  if (!comment.startsWith(RULE_HASH_TAG)) return null;
  const hash = comment.slice(RULE_HASH_TAG.length, RULE_HASH_TAG.length + HASH_LENGTH);
  return /^[A-Za-z0-9_-]{16}$/.test(hash) ? hash : null;
}

/**
 * iptables keeps at most 255 bytes of a comment: legacy silently cuts longer ones (so what is read back
 * differs from what was written), and older releases refuse the whole transaction. So the tagged
 * comment is cut here, after the hash, which comes first and is all that read-back compares.
 */
export const MAX_COMMENT_BYTES = 255;

export function taggedComment(hash: string, comment: string): string {
  const tagged = comment === '' ? `${RULE_HASH_TAG}${hash}` : `${RULE_HASH_TAG}${hash} ${comment}`;
  return Buffer.byteLength(tagged) <= MAX_COMMENT_BYTES ? tagged : cutToBytes(tagged, MAX_COMMENT_BYTES);
}

/** The longest prefix within `max` UTF-8 bytes that does not split a character. */
function cutToBytes(text: string, max: number): string {
  let bytes = 0;
  let end = 0;
  for (const ch of text) {
    const size = Buffer.byteLength(ch);
    if (bytes + size > max) break;
    bytes += size;
    end += ch.length;
  }
  return text.slice(0, end);
}
