/**
 * Splitting restore/save lines into tokens the way iptables-restore does: whitespace separates, double
 * quotes group, backslash escapes a quote or a backslash inside them. Written by hand because the
 * rules are iptables' own and small; a shell-words library would accept syntax iptables does not.
 */
export function splitRuleLine(line: string): string[] {
  const tokens: string[] = [];
  let current = '';
  let inQuotes = false;
  let hasToken = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (inQuotes) {
      if (c === '\\' && (line[i + 1] === '"' || line[i + 1] === '\\')) current += line[++i];
      else if (c === '"') inQuotes = false;
      else current += c;
    } else if (c === '"') {
      inQuotes = true;
      hasToken = true;
    } else if (c === ' ' || c === '\t') {
      if (hasToken) tokens.push(current);
      current = '';
      hasToken = false;
    } else {
      current += c;
      hasToken = true;
    }
  }
  if (hasToken) tokens.push(current);
  return tokens;
}
