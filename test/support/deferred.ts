/** A promise with its resolve and reject exposed, to hold work in flight without sleeping. */
export interface Deferred<T = void> {
  readonly promise: Promise<T>;
  resolve(value: T): void;
  reject(error: unknown): void;
}

export function deferred<T = void>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** Resolves once `count()` reaches `target`, checking whenever `poke()` is called. */
export function countdown(target: number): { readonly reached: Promise<void>; tick(): void; readonly count: number } {
  let count = 0;
  const done = deferred();
  if (target <= 0) done.resolve();
  return {
    reached: done.promise,
    tick() {
      count++;
      if (count >= target) done.resolve();
    },
    get count() {
      return count;
    },
  };
}
