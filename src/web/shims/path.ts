/**
 * The few `node:path` (POSIX) functions the engine's text entry points call,
 * for the playground's browser bundle: file names there are labels such as
 * "policies.yaml", never paths on a disk.
 */
export function extname(p: string): string {
  const base = p.slice(p.lastIndexOf('/') + 1);
  const i = base.lastIndexOf('.');
  return i <= 0 ? '' : base.slice(i);
}
export function dirname(p: string): string {
  const i = p.replace(/\/+$/, '').lastIndexOf('/');
  return i < 0 ? '.' : i === 0 ? '/' : p.slice(0, i);
}
export function isAbsolute(p: string): boolean {
  return p.startsWith('/');
}
export function join(...parts: string[]): string {
  return parts.filter((x) => x !== '').join('/').replace(/\/{2,}/g, '/') || '.';
}
export function resolve(...parts: string[]): string {
  return join(...parts);
}
export default { extname, dirname, isAbsolute, join, resolve };
