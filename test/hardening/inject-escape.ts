/**
 * Preloaded (node --import) into a real `castellan` process by
 * faults.test.ts (D4): once the process has installed its handlers for
 * escaped errors (it has started), an unhandled promise rejection and an
 * uncaught exception escape on purpose, as a handler bug would make them.
 * The process must log them and keep serving. If no handler is ever
 * installed, the injection still happens after 10 s, and kills the process:
 * the test then fails, as it should.
 */
const started = Date.now();
const poll = setInterval(() => {
  if (process.listenerCount('uncaughtException') === 0 && Date.now() - started < 10_000) return;
  clearInterval(poll);
  setTimeout(() => {
    void Promise.reject(new Error('injected by test/hardening/inject-escape.ts: an unhandled rejection'));
  }, 300);
  setTimeout(() => {
    throw new Error('injected by test/hardening/inject-escape.ts: an uncaught exception');
  }, 500);
}, 100);
poll.unref();
