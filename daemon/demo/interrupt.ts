import type { CommandIO } from '../command-io.js';

/** Thrown at the next checkpoint once SIGINT or SIGTERM has arrived. */
export class Interrupted extends Error {
  constructor() {
    super('interrupted');
    this.name = 'Interrupted';
  }
}

/** The demo's stop switch: thrown at the next checkpoint, and cutting short any sleep, once a signal arrives. */
export class Interruption {
  private readonly abort = new AbortController();
  private received: NodeJS.Signals | null = null;

  /** The first signal received, if any. */
  get signal(): NodeJS.Signals | null {
    return this.received;
  }

  get aborted(): boolean {
    return this.abort.signal.aborted;
  }

  /** The exit status of a run cut short by the signal received. */
  exitCode(): number {
    return this.received === 'SIGTERM' ? 143 : 130;
  }

  interrupt(signal: NodeJS.Signals): void {
    this.received ??= signal;
    this.abort.abort();
  }

  checkpoint(): void {
    if (this.abort.signal.aborted) throw new Interrupted();
  }

  async sleep(ms: number): Promise<void> {
    this.checkpoint();
    await new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.abort.signal.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.abort.signal.addEventListener('abort', done, { once: true });
    });
    this.checkpoint();
  }
}

/** Runs `body` with SIGINT and SIGTERM interrupting it (the first one; later ones only say to wait). */
export async function withSignalHandling<T>(io: CommandIO, interruption: Interruption, body: () => Promise<T>): Promise<T> {
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals): void => {
    signals++;
    if (signals === 1) {
      io.stdout(`\n⚠ ${signal} received: stopping the demo and cleaning up (deleting its network namespaces)...\n`);
      interruption.interrupt(signal);
    } else {
      io.stdout(`⚠ ${signal} again: still cleaning up, please wait (leaving namespaces behind is worse)\n`);
    }
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    return await body();
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
