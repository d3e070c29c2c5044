/** Automatic rotation thresholds (SPIRE's), shared by X.509 authorities and JWT signing keys. */

export interface AutoThresholds {
  /** prepare the next root when this much of the active's life is left (ms) */
  prepareAt: number;
  /** activate it when this much is left (ms) */
  activateAt: number;
}

/** SPIRE's thresholds: prepare at min(½ life, 30 d) left, activate at min(⅙ life, 7 d) left. */
export function autoThresholds(notBefore: number, notAfter: number): AutoThresholds {
  const life = notAfter - notBefore;
  const day = 86_400_000;
  return { prepareAt: Math.min(life / 2, 30 * day), activateAt: Math.min(life / 6, 7 * day) };
}
