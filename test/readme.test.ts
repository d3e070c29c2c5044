/** The README must document every flag of every command (keeps it true as flags change). */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { SERVER_FLAGS } from '../src/server/config.ts';
import { AGENT_FLAGS } from '../src/agent/config.ts';
import { DEV_FLAGS } from '../src/cli/dev.ts';
import { CA_FLAGS } from '../src/cli/ca.ts';

const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');

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
  it.each(CA_FLAGS.map((f) => f.name))('documents castellan ca --%s', (name) => {
    expect(readme).toContain(`--${name}`);
  });
  it('shows the quick start and the test command', () => {
    expect(readme).toContain('npm install && npm start');
    expect(readme).toContain('npm test');
  });
});
