// Placeholder until the command lands; see the open issue for its scope.
export async function run(_argv: string[]): Promise<number> {
  process.stderr.write('castellan server: not available yet\n');
  return 2;
}
