/** Where a command writes; injected so tests can run commands in-process and read what they printed. */
export interface CommandIO {
  stdout(text: string): void;
  stderrLine(line: string): void;
}

export const processIO: CommandIO = {
  stdout: (text) => void process.stdout.write(text),
  stderrLine: (line) => void process.stderr.write(`${line}\n`),
};
