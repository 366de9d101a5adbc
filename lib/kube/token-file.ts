import { readFile } from 'node:fs/promises';
import { CredentialsError } from '../errors.js';
import { cachedToken } from './token-source.js';
import type { TokenSource } from './token-source.js';

/** Read again after this long, as client-go does for the in-cluster token file. */
export const TOKEN_FILE_TTL_MS = 60_000;

/**
 * A token kept in a file that something else replaces: kubelet's projected service-account token, or a
 * kubeconfig's `tokenFile`. kubelet rewrites the projected token at 80% of its life (about every 48
 * minutes for the default hour) by swapping the volume's `..data` symlink, so a read sees the old file
 * or the new one, never a mix; the old token stays valid until it expires. Reading once a minute picks
 * the new one up long before then, and a refusal makes the next request read it at once. Each read
 * opens the path anew, so the swapped symlink is followed.
 */
export function tokenFile(file: string, now: () => number = Date.now): TokenSource {
  return cachedToken(`the token file ${file}`, async () => {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (error) {
      throw new CredentialsError(`cannot read the token file ${file}: ${error instanceof Error ? error.message : String(error)}`, error);
    }
    const token = text.trim();
    // An empty read is a writer caught half way (kubelet never does that; other writers may): sending
    // "Bearer " would only earn a 401 that says less than this.
    if (token === '') throw new CredentialsError(`the token file ${file} is empty`);
    return { token, refreshAt: now() + TOKEN_FILE_TTL_MS };
  }, now);
}
