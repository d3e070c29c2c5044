/**
 * The one entry point to @peculiar/x509 in Castellan. The library (v2)
 * needs the reflect-metadata polyfill loaded before it, and a WebCrypto
 * provider; importing from here guarantees both, whatever the import order.
 */
import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

export { x509 };
