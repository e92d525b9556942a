/** An error of the store that says nothing about the request itself (no quorum, no answer). */
export class StoreUnavailable extends Error {
  constructor(message: string, override readonly cause?: unknown) {
    super(message);
  }
}
