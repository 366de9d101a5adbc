import { mkdir, mkdtemp, readlink, rename, rm, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';

/**
 * A service-account token volume written the way kubelet writes a projected volume (its AtomicWriter):
 * each version of the contents goes into a fresh hidden folder `..<timestamp>`, the `..data` symlink is
 * swapped to it in one rename, and `token` is a symlink to `..data/token` made once. A reader that opens
 * `token` sees the old token or the new one, never a mix and never an empty file.
 *
 *   dir/token -> ..data/token
 *   dir/..data -> ..2025_01_01_10_00_00.123456
 *   dir/..2025_01_01_10_00_00.123456/token
 */
export class ProjectedTokenVolume {
  readonly dir: string;

  constructor(dir: string) {
    this.dir = dir;
  }

  /** The path a client reads, as a pod sees /var/run/secrets/kubernetes.io/serviceaccount/token. */
  get tokenPath(): string {
    return path.join(this.dir, 'token');
  }

  async write(token: string): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    const stamp = new Date().toISOString().replace(/[-:T]/g, '_').replace(/\..*$/, '');
    const version = await mkdtemp(path.join(this.dir, `..${stamp}.`));
    await writeFile(path.join(version, 'token'), token, { mode: 0o600 });
    const data = path.join(this.dir, '..data');
    const previous = await readlink(data).catch(() => null);
    const staged = path.join(this.dir, '..data_tmp');
    await rm(staged, { force: true });
    await symlink(path.basename(version), staged);
    await rename(staged, data);
    if (previous === null) await symlink(path.join('..data', 'token'), this.tokenPath);
    else await rm(path.join(this.dir, previous), { recursive: true, force: true });
  }
}
