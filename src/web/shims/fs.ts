/**
 * `node:fs` in the playground's browser bundle: the engine's text entry
 * points (collectPolicyText, parseRequestText, runSuite with inline
 * policies) never touch the disk; anything that would is an error here.
 */
function unavailable(): never {
  throw new Error('no file system in the browser: paste the file into the playground instead');
}
export const readFileSync = unavailable;
export const readdirSync = unavailable;
export const realpathSync = unavailable;
export const statSync = unavailable;
export const watch = unavailable;
export default { readFileSync, readdirSync, realpathSync, statSync, watch };
