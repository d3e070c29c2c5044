/**
 * The README and the docs it links must document every flag of every command
 * (keeps them true as flags change), and the README stays a short entry point.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { SERVER_FLAGS } from '../src/server/config.ts';
import { AGENT_FLAGS } from '../src/agent/config.ts';
import { DEV_FLAGS } from '../src/cli/dev.ts';
import { CA_FLAGS } from '../src/cli/ca.ts';
import { CHECK_FLAGS, SERVE_FLAGS, TEST_FLAGS, VALIDATE_FLAGS } from '../src/cli/authz.ts';

const read = (path: string): string => readFileSync(new URL(`../${path}`, import.meta.url), 'utf8');
const readme = read('README.md');
const rotation = read('docs/rotation.md');
const authz = read('docs/authz.md');

describe('README', () => {
  it.each(SERVER_FLAGS.map((f) => f.name))('documents castellan server --%s', (name) => {
    expect(readme).toContain(`--${name}`);
  });
  it.each(AGENT_FLAGS.map((f) => f.name))('documents castellan agent --%s', (name) => {
    expect(readme).toContain(`--${name}`);
  });
  it.each(DEV_FLAGS.map((f) => f.name))('documents castellan dev --%s', (name) => {
    expect(readme).toContain(`--${name}`);
  });
  it.each(CA_FLAGS.map((f) => f.name))('docs/rotation.md documents castellan ca --%s', (name) => {
    expect(rotation).toContain(`--${name}`);
  });
  it.each([...new Set([...CHECK_FLAGS, ...TEST_FLAGS, ...VALIDATE_FLAGS, ...SERVE_FLAGS].map((f) => f.name))])('docs/authz.md documents castellan authz --%s', (name) => {
    expect(authz).toContain(`--${name}`);
  });
  it('shows the quick start and the test command', () => {
    expect(readme).toContain('npm install && npm start');
    expect(readme).toContain('npm test');
  });
  it('stays under 400 lines, and every document it links exists', () => {
    expect(readme.split('\n').length).toBeLessThanOrEqual(400);
    const links = [...readme.matchAll(/\]\(((?:docs|test|deploy)\/[^)#\s]+)/g)].map((m) => m[1]!);
    expect(links).toContain('docs/rotation.md');
    for (const l of links) expect(existsSync(new URL(`../${l}`, import.meta.url)), l).toBe(true);
  });
  it('names every folder of src/ in its folder table', () => {
    const table = readme.slice(readme.indexOf('| folder | owns |'));
    const dirs = readdirSync(new URL('../src/', import.meta.url), { withFileTypes: true }).filter((d) => d.isDirectory());
    expect(dirs.length).toBeGreaterThan(5);
    for (const d of dirs) expect(table, `src/${d.name}/`).toContain(`src/${d.name}/`);
  });
});
